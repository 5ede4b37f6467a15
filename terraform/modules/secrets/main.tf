# The environment's KMS key (data at rest, secrets, logs; what `aws-kms:` references decrypt
# with) and the secrets only an operator may set. They are created empty: their values are put
# with `aws secretsmanager put-secret-value` (docs/runbooks/deploy.md), so no secret value
# passes through Terraform's state.
data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

data "aws_iam_policy_document" "key" {
  # In a key policy "*" is this key, not every resource.
  #checkov:skip=CKV_AWS_356:a key policy's resource * means the key itself
  #checkov:skip=CKV_AWS_111:a key policy's resource * means the key itself
  #checkov:skip=CKV_AWS_109:the account root administers its own key (AWS's default key policy)
  # The account administers the key; IAM policies grant its use (IRSA roles, RDS, logs).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: data at rest, secrets, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

locals {
  # Secret settings of docs/configuration.md an operator sets; DATABASE_URL and REDIS_URL are
  # made by the database and cache modules.
  settings = {
    "master-keys"               = "BOURSE_MASTER_KEYS: field-encryption keys (docs/runbooks/secret-rotation.md)"
    "service-secret-orders"     = "BOURSE_SERVICE_SECRET_ORDERS: orders' client secret for service tokens"
    "service-secret-settlement" = "BOURSE_SERVICE_SECRET_SETTLEMENT: settlement's client secret for service tokens"
    "service-secret-risk"       = "BOURSE_SERVICE_SECRET_RISK: risk's client secret (settlement's balances)"
    "service-secret-gateway"    = "BOURSE_SERVICE_SECRET_GATEWAY: the gateway's client secret (API key credentials)"
  }
}

resource "aws_secretsmanager_secret" "setting" {
  for_each = local.settings

  #checkov:skip=CKV2_AWS_57:rotated by the runbooks (secret-rotation.md), which keep old and new valid while every replica moves over
  name                    = "bourse/${each.key}"
  description             = each.value
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 30
}
