output "name" {
  description = "The cluster's name."
  value       = aws_eks_cluster.this.name
}

output "node_security_group_id" {
  description = "The cluster security group EKS attaches to managed nodes: the database's and cache's only clients."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "secrets_reader_role_arn" {
  description = "IRSA role of the secrets-reader service account."
  value       = aws_iam_role.secrets_reader.arn
}
