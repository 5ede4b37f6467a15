variable "name" {
  type        = string
  description = "Cluster name and name prefix."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version."
}

variable "vpc_id" {
  type        = string
  description = "The VPC."
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets for the control plane's interfaces and the nodes."
}

variable "endpoint_public_cidrs" {
  type        = list(string)
  description = "Addresses allowed on the API's public endpoint; empty: private only."
}

variable "node_instance_types" {
  type        = list(string)
  description = "Instance types of the managed node group."
}

variable "node_count" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Node group size."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key that encrypts Kubernetes Secrets in etcd and the control-plane logs."
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep control-plane logs."
}

variable "namespace" {
  type        = string
  description = "Namespace Bourse runs in: the IRSA role trusts its secrets-reader service account only."
}

variable "readable_secret_arns" {
  type        = list(string)
  description = "Secrets the secrets-reader service account may read."
}
