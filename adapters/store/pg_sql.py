"""The PostgreSQL event store's statements: the hot ones as raw SQL for the asyncpg
connection (append, load, history, feed), the feed lock through SQLAlchemy ``text``."""

from __future__ import annotations

import sqlalchemy as sa

EVENT_COLUMNS = ("account_id", "version", "position", "region", "event_id", "type",
                 "schema_version", "occurred_at", "causation_id", "correlation_id",
                 "policy_version", "body", "strike_potential", "chain_hash")

LOCK_FEED = sa.text("SELECT last_position FROM feed_counter WHERE region = :region FOR UPDATE")
CREATE_FEED = sa.text(
    "INSERT INTO feed_counter (region, last_position) VALUES (:region, 0) "
    "ON CONFLICT (region) DO NOTHING"
)
# Each account's newest version and chain link, which inbox keys are already taken, and each
# account's data key (sealing.py).
PRECHECK = """
SELECT 0 AS kind, a.id AS key, h.version, h.chain_hash
  FROM unnest($1::text[]) AS a(id)
  LEFT JOIN LATERAL (SELECT e.version, e.chain_hash FROM events e WHERE e.account_id = a.id
                      ORDER BY e.version DESC LIMIT 1) h ON true
UNION ALL
SELECT 1, i.inbox_key, NULL, NULL FROM inbox i WHERE i.inbox_key = ANY($2::text[])
UNION ALL
SELECT 2, k.account_id, k.generation, k.wrapped FROM account_keys k
 WHERE k.account_id = ANY($1::text[])
"""
CHAIN = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body, chain_hash
  FROM events WHERE account_id = $1 ORDER BY version
"""
KNOWN_EVENT_IDS = "SELECT event_id FROM events WHERE event_id = ANY($1::text[])"
# Inbox rows, outbox rows, snapshots, new data keys and the feed counter in one statement.
FINISH = """
WITH i AS (
  INSERT INTO inbox (inbox_key, account_id) SELECT * FROM unnest($2::text[], $3::text[])
), o AS (
  INSERT INTO outbox (message_id, subject, payload)
  SELECT * FROM unnest($4::text[], $5::text[], $6::bytea[])
), s AS (
  INSERT INTO snapshots (account_id, version, fold_version, state)
  SELECT a, v, $10::int4, st FROM unnest($8::text[], $9::int8[], $11::bytea[]) AS t(a, v, st)
  ON CONFLICT DO NOTHING
), k AS (
  INSERT INTO account_keys (account_id, generation, wrapped)
  SELECT * FROM unnest($12::text[], $13::int8[], $14::bytea[])
)
UPDATE feed_counter SET last_position = $7 WHERE region = $1
"""
SNAPSHOT_BASES = """
SELECT DISTINCT ON (s.account_id) s.account_id, s.version, s.state
  FROM snapshots s JOIN unnest($1::text[], $2::int8[]) AS t(a, hi)
    ON s.account_id = t.a AND s.version <= t.hi
 WHERE s.fold_version = $3
 ORDER BY s.account_id, s.version DESC
"""
TAILS = """
SELECT e.account_id, e.version, e.region, e.event_id, e.type, e.schema_version, e.occurred_at,
       e.causation_id, e.correlation_id, e.policy_version, e.body
  FROM unnest($1::text[], $2::int8[], $3::int8[]) AS t(a, lo, hi)
  JOIN events e ON e.account_id = t.a AND e.version > t.lo AND e.version <= t.hi
 ORDER BY e.account_id, e.version
"""
INSERT_SNAPSHOTS = """
INSERT INTO snapshots (account_id, version, fold_version, state)
SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::bytea[])
ON CONFLICT DO NOTHING
"""

NO_LIMIT = 2**62
LATEST_SNAPSHOT = """
SELECT state FROM snapshots WHERE account_id = $1 AND fold_version = $2 AND version <= $3
 ORDER BY version DESC LIMIT 1
"""
TAIL = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events WHERE account_id = $1 AND version > $2 AND version <= $3 ORDER BY version
"""
MARK_PUBLISHED_MESSAGES = """
UPDATE outbox SET published_at = now()
 WHERE published_at IS NULL AND message_id = ANY($1::text[])
"""
HISTORY = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events
 WHERE account_id = $1 AND version >= $2 AND version <= $3{time}
 ORDER BY version
"""
# The newest events of some types (the console's timeline markers, an explanation's chain):
# read backwards along the (account_id, version) key, newest first.
NEWEST_OF_TYPES = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events
 WHERE account_id = $1 AND type = ANY($2::text[]) AND version > $4
 ORDER BY version DESC LIMIT $3
"""
AT_VERSIONS = """
SELECT account_id, version, region, event_id, type, schema_version, occurred_at, causation_id,
       correlation_id, policy_version, body
  FROM events WHERE account_id = $1 AND version = ANY($2::int8[]) ORDER BY version
"""
# One statement per combination of time bounds, so that each gets a plan that can use the
# (account_id, occurred_at) index when a time range narrows a long history.
HISTORY_BY_BOUNDS = {
    (False, False): HISTORY.format(time=""),
    (True, False): HISTORY.format(time=" AND occurred_at >= $4"),
    (False, True): HISTORY.format(time=" AND occurred_at <= $4"),
    (True, True): HISTORY.format(time=" AND occurred_at >= $4 AND occurred_at <= $5"),
}
FEED = """
SELECT position, account_id, version, region, event_id, type, schema_version, occurred_at,
       causation_id, correlation_id, policy_version, body
  FROM events WHERE region = $1 AND position > $2 ORDER BY position LIMIT $3
"""
ACCOUNT_RISKS = """
SELECT account_id, count(*) FILTER (WHERE $2::timestamptz IS NULL OR occurred_at >= $2),
       max(strike_potential)
  FROM events WHERE region = $1 GROUP BY account_id ORDER BY account_id
"""
# The database's region (migration 0006): the first store to open it claims it.
CLAIM_REGION = "INSERT INTO region_marker (region) VALUES ($1) ON CONFLICT DO NOTHING"
REGION_MARKER = "SELECT region FROM region_marker"
# state_at a time: the last kept version that occurred by then (0: none), and where a truncated
# history's kept events start (NULL: never truncated)
VERSION_AT = """
SELECT (SELECT coalesce(max(version), 0) FROM events WHERE account_id = $1 AND occurred_at <= $2),
       (SELECT retained_from FROM event_anchors WHERE account_id = $1)
"""
