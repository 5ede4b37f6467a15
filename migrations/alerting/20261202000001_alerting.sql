-- The alerting service (ALR-01..07): where alerts go (channels), which events page whom
-- (rules), the alerts themselves with their lifecycle, the delivery log the notifier works
-- from, and silences. Alerts are written by the event consumers in the same transaction as
-- their inbox rows; deliveries are rows first and HTTP/SMTP calls second, so a notification
-- survives a crash and a receiver that is down for a while.

-- Where notifications go. `target` is a URL (webhook, slack, pagerduty) or an email address;
-- a Slack webhook URL carries its token in the path, so the API never returns a target in
-- full. `secret` signs webhooks (HMAC) or is PagerDuty's routing key; it is never returned.
CREATE TABLE channels (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind       text        NOT NULL CHECK (kind IN ('webhook', 'slack', 'pagerduty', 'email')),
    target     text        NOT NULL CHECK (length(target) BETWEEN 1 AND 2048),
    secret     text,
    created_by uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT channels_name_key UNIQUE (name)
);

-- Routing (ALR-01): an event type (or `*`) → a severity → channels. The most specific rule
-- wins (an exact type over `*`; the oldest among equals). Channel names are resolved when a
-- notification is queued, so a rule may name a channel created after it.
CREATE TABLE rules (
    id                     uuid        PRIMARY KEY,
    event_type             text        NOT NULL CHECK (event_type ~ '^(\*|[A-Za-z][A-Za-z0-9]{0,63})$'),
    severity               text        NOT NULL CHECK (severity IN ('critical', 'error', 'warning', 'info')),
    channels               text[]      NOT NULL,
    -- A repeat of a firing alert within this window is counted, not notified (ALR-04).
    suppress_seconds       integer     CHECK (suppress_seconds BETWEEN 0 AND 604800),
    -- Unacknowledged this long after it fired → notify `escalate_to` too (ALR-05).
    escalate_after_seconds integer     CHECK (escalate_after_seconds BETWEEN 1 AND 604800),
    escalate_to            text[]      NOT NULL DEFAULT '{}',
    created_by             uuid        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rules_escalation CHECK ((escalate_after_seconds IS NULL) = (cardinality(escalate_to) = 0))
);

-- One alert per fingerprint (event type + scope) while it is open: a repeat increments
-- `count` and `last_seen` (ALR-04). firing → acknowledged → resolved; resolved is final, and
-- the next occurrence opens a new alert.
CREATE TABLE alerts (
    id                uuid        PRIMARY KEY,
    fingerprint       text        NOT NULL,
    event_type        text        NOT NULL,
    scope             text        NOT NULL,
    severity          text        NOT NULL,
    summary           text        NOT NULL,
    rule_id           uuid        REFERENCES rules (id) ON DELETE SET NULL,
    status            text        NOT NULL DEFAULT 'firing'
                                  CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    count             integer     NOT NULL DEFAULT 1 CHECK (count >= 1),
    -- The payload of the latest occurrence, for the notification and the operator.
    details           jsonb       NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    last_notified_at  timestamptz,
    silenced_by       uuid,
    escalated_at      timestamptz,
    acknowledged_by   uuid,
    acknowledged_at   timestamptz,
    resolved_by       uuid,
    resolved_at       timestamptz,
    CONSTRAINT alerts_acknowledged CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL),
    CONSTRAINT alerts_resolved CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);

-- The dedup guard: two replicas raising the same fingerprint at once end in one open alert.
CREATE UNIQUE INDEX alerts_open_fingerprint ON alerts (fingerprint) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON alerts (status, last_seen DESC);

-- Silences (ALR-04): every given matcher field must equal; active from creation to ends_at.
CREATE TABLE silences (
    id         uuid        PRIMARY KEY,
    event_type text,
    severity   text,
    scope      text,
    reason     text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    starts_at  timestamptz NOT NULL DEFAULT now(),
    ends_at    timestamptz NOT NULL,
    created_by uuid        NOT NULL,
    CONSTRAINT silences_matcher CHECK (num_nonnulls(event_type, severity, scope) >= 1),
    CONSTRAINT silences_window CHECK (ends_at > starts_at)
);

-- The delivery log (ALR-02): one row per notification of an alert to a channel. The notifier
-- leases due rows (so replicas never send the same one twice at once), sends, and records
-- the outcome; a failure is retried with exponential backoff and full jitter until
-- `max attempts`, then the row ends `failed`.
CREATE TABLE deliveries (
    id              uuid        PRIMARY KEY,
    alert_id        uuid        NOT NULL REFERENCES alerts (id),
    channel_id      uuid        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- What the notification says: the alert fired (or fired again), escalated, or resolved.
    action          text        NOT NULL CHECK (action IN ('firing', 'escalation', 'resolved')),
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_alert ON deliveries (alert_id);

-- Every attempt, for the operator asking "did the page go out, and what did the receiver say?"
CREATE TABLE delivery_attempts (
    delivery_id uuid        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean     NOT NULL,
    detail      text        NOT NULL,
    CONSTRAINT delivery_attempts_pkey PRIMARY KEY (delivery_id, attempt)
);
