variable "name" {
  type        = string
  description = "Name prefix of every resource."
}

variable "vpc_id" {
  type        = string
  description = "The VPC."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets, one per zone."
}

variable "client_security_group_id" {
  type        = string
  description = "Security group of the cluster's nodes: the only clients."
}

variable "node_type" {
  type        = string
  description = "ElastiCache node type."
}

variable "replicas" {
  type        = number
  description = "Read replicas beside the primary; one or more turns on automatic failover."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key for data at rest and the URL secret."
}
