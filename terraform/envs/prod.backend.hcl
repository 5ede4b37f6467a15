# terraform init -backend-config=envs/prod.backend.hcl — the state of prod, in prod's account: an
# encrypted, versioned bucket made once by hand (docs/runbooks/deploy.md), locked by a lock file.
bucket       = "bourse-prod-terraform-state"
key          = "bourse/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
