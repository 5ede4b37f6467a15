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

variable "instance_class" {
  type        = string
  description = "RDS instance class."
}

variable "allocated_storage_gib" {
  type        = number
  description = "Initial storage in GiB."
}

variable "multi_az" {
  type        = bool
  description = "A synchronous standby in another zone."
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups."
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse deletion and keep a final snapshot."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key for storage, Performance Insights and the master secret."
}
