output "url_secret_arn" {
  description = "bourse/redis-url."
  value       = aws_secretsmanager_secret.url.arn
}
