# terraform init -backend-config=envs/staging.backend.hcl — the state of staging, in staging's account: an
# encrypted, versioned bucket made once by hand (docs/runbooks/deploy.md), locked by a lock file.
bucket       = "bourse-staging-terraform-state"
key          = "bourse/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
