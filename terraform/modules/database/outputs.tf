output "master_secret_arn" {
  description = "The RDS-managed secret holding the master user's name and password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "endpoint_secret_arn" {
  description = "bourse/database-endpoint."
  value       = aws_secretsmanager_secret.endpoint.arn
}
