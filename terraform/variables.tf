variable "environment" {
  type        = string
  description = "Environment name: dev, staging or prod. Each lives in its own AWS account."

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "region" {
  type        = string
  description = "AWS region, e.g. eu-west-1."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "The VPC's address range; /16 leaves room for three AZs of public and private /20s."

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a CIDR block of /16 or larger."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones to spread subnets, nodes and the database's standby over."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3
    error_message = "Use two or three availability zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
}

variable "cluster_version" {
  type        = string
  description = "EKS Kubernetes version; the manifests are validated against it (.ci/infra K8S_VERSION)."

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.cluster_version))
    error_message = "cluster_version must look like 1.32."
  }
}

variable "cluster_endpoint_public_cidrs" {
  type        = list(string)
  description = "Addresses allowed to reach the Kubernetes API's public endpoint (operators, CI). Empty: private endpoint only."

  validation {
    condition     = alltrue([for cidr in var.cluster_endpoint_public_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "Each entry must be a CIDR block, and not 0.0.0.0/0."
  }
}

variable "node_instance_types" {
  type        = list(string)
  description = "EC2 instance types of the managed node group."
}

variable "node_count" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Managed node group size: min <= desired <= max."

  validation {
    condition     = var.node_count.min >= 1 && var.node_count.min <= var.node_count.desired && var.node_count.desired <= var.node_count.max
    error_message = "node_count needs 1 <= min <= desired <= max."
  }
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class, e.g. db.t4g.medium."

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class must start with db."
  }
}

variable "db_allocated_storage_gib" {
  type        = number
  description = "Initial storage in GiB; storage autoscaling may grow it to four times this."

  validation {
    condition     = var.db_allocated_storage_gib >= 20 && var.db_allocated_storage_gib <= 16384
    error_message = "db_allocated_storage_gib must be between 20 and 16384."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "A synchronous standby in another zone (failover in about a minute). Required in prod."
}

variable "db_backup_retention_days" {
  type        = number
  description = "Days of automated backups and point-in-time recovery (docs/runbooks/disaster-recovery.md)."

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

variable "redis_node_type" {
  type        = string
  description = "ElastiCache node type, e.g. cache.t4g.small."

  validation {
    condition     = startswith(var.redis_node_type, "cache.")
    error_message = "redis_node_type must start with cache."
  }
}

variable "redis_replicas" {
  type        = number
  description = "Read replicas beside the primary; at least one gives automatic failover."

  validation {
    condition     = var.redis_replicas >= 0 && var.redis_replicas <= 5
    error_message = "redis_replicas must be between 0 and 5."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the database and keep a final snapshot. Off only where data is disposable."
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep VPC flow logs and the cluster's control-plane logs."

  validation {
    condition     = contains([30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value of at least 30."
  }
}
