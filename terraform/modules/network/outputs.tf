output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "One private subnet per zone: nodes, database, cache."
  value       = aws_subnet.private[*].id
}
