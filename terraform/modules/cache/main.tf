# ElastiCache Redis 7: TLS in transit, encrypted at rest, an auth token, failover across zones
# when it has replicas. Bourse keeps rate limits, sessions' throttling and the event streams
# here; the streams' loss is survivable by design (the outbox republishes), their latency is not.
#
# ElastiCache's auth token has no managed-secret option: it is generated here, so it is in
# Terraform's state — which is why the state bucket is encrypted with KMS and readable only by
# the deployers (docs/runbooks/deploy.md). Rotate by tainting random_password.redis.
resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-redis"
  description = "Redis, from the cluster's nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_nodes" {
  security_group_id            = aws_security_group.this.id
  description                  = "Redis from the EKS nodes"
  referenced_security_group_id = var.client_security_group_id
  from_port                    = 6379
  to_port                      = 6379
  ip_protocol                  = "tcp"
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:Multi-AZ failover is on whenever there is a replica (staging, prod); dev runs one node
  replication_group_id = var.name
  description          = "Bourse: rate limits, throttling, event streams"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.node_type
  num_cache_clusters   = 1 + var.replicas
  port                 = 6379

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.this.id]

  automatic_failover_enabled = var.replicas > 0
  multi_az_enabled           = var.replicas > 0

  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  auth_token                 = random_password.redis.result

  snapshot_retention_limit   = 1
  auto_minor_version_upgrade = true
  apply_immediately          = false
}

resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:ElastiCache's auth token is rotated by tainting random_password.redis (deploy runbook)
  name                    = "bourse/redis-url"
  description             = "REDIS_URL: rediss:// with the auth token"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
}
