# terraform init -backend-config=envs/dev.backend.hcl — the state of dev, in dev's account: an
# encrypted, versioned bucket made once by hand (docs/runbooks/deploy.md), locked by a lock file.
bucket       = "bourse-dev-terraform-state"
key          = "bourse/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
