environment                   = "dev"
region                        = "eu-west-1"
vpc_cidr                      = "10.10.0.0/16"
availability_zones            = ["eu-west-1a", "eu-west-1b"]
single_nat_gateway            = true
cluster_version               = "1.32"
cluster_endpoint_public_cidrs = ["203.0.113.0/24"]
node_instance_types           = ["t3.large"]
node_count                    = { min = 2, desired = 2, max = 4 }
db_instance_class             = "db.t4g.medium"
db_allocated_storage_gib      = 20
db_multi_az                   = false
db_backup_retention_days      = 3
redis_node_type               = "cache.t4g.small"
redis_replicas                = 0
deletion_protection           = false
log_retention_days            = 30
