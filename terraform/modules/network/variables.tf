variable "name" {
  type        = string
  description = "Name prefix of every resource."
}

variable "cidr" {
  type        = string
  description = "The VPC's address range."
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones to place one public and one private subnet in."
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for every zone instead of one per zone."
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep the VPC flow logs."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the flow logs."
}
