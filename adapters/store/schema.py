"""The regional event store's tables, as SQLAlchemy Core metadata.

The migrations under ``migrations/versions`` create exactly these tables; the store builds its
queries from them. Account ids are compared with the "C" collation so that ordering is the same
byte order on every server (and in the in-memory store), whatever the database's locale.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

C_TEXT = sa.Text(collation="C")

events = sa.Table(
    "events",
    metadata,
    sa.Column("account_id", C_TEXT, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),  # the region's feed, in commit order
    sa.Column("region", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("causation_id", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("policy_version", sa.Text, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=False),  # msgpack of the typed body (codec)
    # the highest score this event could strike on under any policy (core.backtest)
    sa.Column("strike_potential", sa.Float(precision=24), nullable=False, server_default="1"),
    # the event's keyed chain link (core.chain); NULL for rows written before migration 0004
    sa.Column("chain_hash", sa.LargeBinary, nullable=True),
    sa.PrimaryKeyConstraint("account_id", "version", name="events_account_version_key"),
    sa.UniqueConstraint("event_id", name="events_event_id_key"),
    sa.UniqueConstraint("region", "position", name="events_feed_key"),
)
sa.Index("events_account_time_idx", events.c.account_id, events.c.occurred_at)
# The review queue (reviews.py): only the few events of the review types are indexed.
sa.Index("events_review_queue_idx", events.c.type, events.c.account_id, events.c.version,
         postgresql_where=events.c.type.in_(
             ["ReviewRequested", "ReviewClaimed", "OperatorActionTaken", "ApprovalGranted"]))
# The console's pending-approvals and appeals pages (ops/console/approvals.py).
sa.Index("events_approval_requests_idx", events.c.account_id, events.c.occurred_at,
         postgresql_where=events.c.type == "ApprovalRequested")
sa.Index("events_appeals_filed_idx", events.c.account_id, events.c.version,
         postgresql_where=events.c.type == "AppealFiled")

# The feed's counter: one row per region, locked by every append for the rest of its transaction.
feed_counter = sa.Table(
    "feed_counter",
    metadata,
    sa.Column("region", sa.Text, primary_key=True),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("account_id", C_TEXT, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("fold_version", sa.Integer, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),  # codec.encode_state
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.PrimaryKeyConstraint("account_id", "version", "fold_version", name="snapshots_pkey"),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("inbox_key", sa.Text, primary_key=True),
    sa.Column("account_id", C_TEXT, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", pg.BYTEA, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
)
sa.Index("outbox_pending_idx", outbox.c.id, postgresql_where=outbox.c.published_at.is_(None))

# Every operator read of the store (ops tools), append-only (migration 0005).
operator_reads = sa.Table(
    "operator_reads",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=True),  # the reader's (migration 0007)
)

# The region this database holds, one row claimed by the first store to open it (migration 0006).
region_marker = sa.Table(
    "region_marker",
    metadata,
    sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("region", sa.Text, nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.CheckConstraint("singleton", name="region_marker_one_row"),
)

# Each account's data key, wrapped under the region's data master key (migration 0008,
# ``sealing.py``); erasure deletes the row.
account_keys = sa.Table(
    "account_keys",
    metadata,
    sa.Column("account_id", C_TEXT, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
)

# Where an account's history starts once its oldest events were truncated (migration 0009,
# ``event_retention.py``): the first kept version, the chain link it continues from, and a MAC
# under the region's chain key. Forward-only; never deleted.
event_anchors = sa.Table(
    "event_anchors",
    metadata,
    sa.Column("account_id", C_TEXT, primary_key=True),
    sa.Column("retained_from", sa.BigInteger, nullable=False),
    sa.Column("previous_chain", sa.LargeBinary, nullable=False),
    sa.Column("events_removed", sa.BigInteger, nullable=False),
    sa.Column("truncated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("mac", sa.LargeBinary, nullable=False),
    sa.CheckConstraint("retained_from > 1", name="event_anchors_after_genesis"),
)
