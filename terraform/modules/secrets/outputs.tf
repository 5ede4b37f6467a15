output "kms_key_arn" {
  description = "The environment's KMS key."
  value       = aws_kms_key.this.arn
}

output "secret_arns" {
  description = "ARNs of the operator-set secrets."
  value       = [for secret in aws_secretsmanager_secret.setting : secret.arn]
}

output "secret_names" {
  description = "Names of the operator-set secrets."
  value       = [for secret in aws_secretsmanager_secret.setting : secret.name]
}
