output "cluster_name" {
  description = "EKS cluster: `aws eks update-kubeconfig --name <this>`."
  value       = module.cluster.name
}

output "secrets_reader_role_arn" {
  description = "IAM role of the secrets-reader service account (overlays/<env>: eks.amazonaws.com/role-arn)."
  value       = module.cluster.secrets_reader_role_arn
}

output "database_master_secret_arn" {
  description = "The RDS-managed master secret (overlays/<env>: bourse-database-url's remoteRef)."
  value       = module.database.master_secret_arn
}

output "kms_key_arn" {
  description = "The environment's KMS key: encrypts the secrets and data at rest; `aws-kms:` references decrypt with it."
  value       = module.secrets.kms_key_arn
}

output "secrets_to_fill" {
  description = "Secrets created empty; their values are put by an operator (docs/runbooks/deploy.md), never through Terraform state."
  value       = module.secrets.secret_names
}
