environment                   = "staging"
region                        = "eu-west-1"
vpc_cidr                      = "10.20.0.0/16"
availability_zones            = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
single_nat_gateway            = true
cluster_version               = "1.32"
cluster_endpoint_public_cidrs = ["203.0.113.0/24"]
node_instance_types           = ["m6i.large"]
node_count                    = { min = 3, desired = 3, max = 6 }
db_instance_class             = "db.m6g.large"
db_allocated_storage_gib      = 50
db_multi_az                   = true
db_backup_retention_days      = 7
redis_node_type               = "cache.m6g.large"
redis_replicas                = 1
deletion_protection           = true
log_retention_days            = 90
