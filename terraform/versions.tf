# Versions are pinned: the Terraform CLI by range, providers to a minor series (the lock file,
# .terraform.lock.hcl, pins exact builds once `terraform init` has run on a machine that can
# reach the registry — commit it then).
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }

  # State per environment, in that environment's account: `terraform init
  # -backend-config=envs/<env>.backend.hcl` (bucket, key, region, lock file).
  backend "s3" {}
}
