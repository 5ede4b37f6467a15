-- Before rolling back to a release older than ADR 0024 (the append-only outbox): stamp the rows
-- the watermarks say are published and confirmed, as that release's relay expects. Without it,
-- the old relay sees every row of the last hour as unpublished and sends it all again (harmless
-- to consumers, whose inboxes drop duplicates, but a burst). Run once per service schema, with
-- the old image's relays not yet started, e.g.
--   PGOPTIONS=--search_path=orders psql "$DATABASE_URL" -f tools/rollback/stamp-outbox-rows.sql
-- (docs/runbooks/rollback.md). Rows stamped here carry no Redis entry id, so the old relay
-- never confirms the unconfirmed ones among them: they are kept a day instead of an hour, and
-- sent again if the broker loses data. Both are safe.
UPDATE outbox o
   SET published_at = coalesce(o.published_at, now()),
       confirmed_at = coalesce(o.confirmed_at,
                               CASE WHEN o.position <= s.confirmed_position THEN now() END)
  FROM outbox_streams s
 WHERE s.stream = o.stream
   AND o.position <= s.published_position
   AND (o.published_at IS NULL
        OR (o.confirmed_at IS NULL AND o.position <= s.confirmed_position));
