environment                   = "prod"
region                        = "eu-west-1"
vpc_cidr                      = "10.30.0.0/16"
availability_zones            = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
single_nat_gateway            = false
cluster_version               = "1.32"
cluster_endpoint_public_cidrs = []
node_instance_types           = ["c6i.xlarge", "c6a.xlarge"]
node_count                    = { min = 3, desired = 6, max = 12 }
db_instance_class             = "db.r6g.xlarge"
db_allocated_storage_gib      = 200
db_multi_az                   = true
db_backup_retention_days      = 35
redis_node_type               = "cache.r6g.large"
redis_replicas                = 2
deletion_protection           = true
log_retention_days            = 365
