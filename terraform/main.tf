# Bourse on AWS: a VPC, a KMS key and the secrets the services read, RDS PostgreSQL,
# ElastiCache Redis and an EKS cluster whose External Secrets Operator reads those secrets by
# IRSA. What runs in the cluster is applied with kustomize (deploy/k8s), not from here.
locals {
  name = "bourse-${var.environment}"
  # The namespace the overlay deploys to (deploy/k8s/overlays/<env>), for the IRSA trust.
  namespace = "bourse-${var.environment}"
}

module "network" {
  source = "./modules/network"

  name               = local.name
  cidr               = var.vpc_cidr
  availability_zones = var.availability_zones
  single_nat_gateway = var.single_nat_gateway
  log_retention_days = var.log_retention_days
  kms_key_arn        = module.secrets.kms_key_arn
}

module "secrets" {
  source = "./modules/secrets"

  name = local.name
}

module "cluster" {
  source = "./modules/cluster"

  name                  = local.name
  kubernetes_version    = var.cluster_version
  vpc_id                = module.network.vpc_id
  private_subnet_ids    = module.network.private_subnet_ids
  endpoint_public_cidrs = var.cluster_endpoint_public_cidrs
  node_instance_types   = var.node_instance_types
  node_count            = var.node_count
  kms_key_arn           = module.secrets.kms_key_arn
  log_retention_days    = var.log_retention_days
  namespace             = local.namespace
  readable_secret_arns = concat(module.secrets.secret_arns, [
    module.database.master_secret_arn,
    module.database.endpoint_secret_arn,
    module.cache.url_secret_arn,
  ])
}

module "database" {
  source = "./modules/database"

  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.private_subnet_ids
  client_security_group_id = module.cluster.node_security_group_id
  instance_class           = var.db_instance_class
  allocated_storage_gib    = var.db_allocated_storage_gib
  multi_az                 = var.db_multi_az
  backup_retention_days    = var.db_backup_retention_days
  deletion_protection      = var.deletion_protection
  kms_key_arn              = module.secrets.kms_key_arn
}

module "cache" {
  source = "./modules/cache"

  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.private_subnet_ids
  client_security_group_id = module.cluster.node_security_group_id
  node_type                = var.redis_node_type
  replicas                 = var.redis_replicas
  kms_key_arn              = module.secrets.kms_key_arn
}
