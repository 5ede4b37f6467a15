provider "aws" {
  region = var.region

  # Every resource says what it belongs to; cost reports and IAM conditions use these.
  default_tags {
    tags = {
      Project     = "bourse"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
