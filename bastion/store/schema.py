"""The store's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Amounts are exact decimal *text* (``"61800.30"``, as ``format_raw`` writes them) rather than
NUMERIC or integers: the digits carry the precision, 18-decimal raw values overflow BIGINT, and
text compares equal across both databases without driver-dependent Decimal conversions.
Timestamps are integer nanoseconds (BIGINT). Names are prefixed ``bastion_`` so the tables can
share a database with others.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

orders = sa.Table(
    "bastion_orders",
    metadata,
    sa.Column("client_order_id", sa.String, primary_key=True),
    sa.Column("strategy_id", sa.String, nullable=False),
    sa.Column("instrument_id", sa.String, nullable=False),
    sa.Column("venue", sa.String, nullable=False),
    sa.Column("side", sa.String, nullable=False),
    sa.Column("order_type", sa.String, nullable=False),
    sa.Column("tif", sa.String, nullable=False),
    sa.Column("price", sa.String, nullable=True),
    sa.Column("quantity", sa.String, nullable=False),
    sa.Column("reduce_only", sa.Boolean, nullable=False),
    sa.Column("status", sa.String, nullable=False, index=True),
    sa.Column("venue_order_id", sa.String, nullable=False),
    sa.Column("filled", sa.String, nullable=False),
    sa.Column("cancel_pending", sa.Boolean, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)

order_events = sa.Table(
    "bastion_order_events",
    metadata,
    sa.Column("id", _AutoId, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String, nullable=False, index=True),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("event_type", sa.String, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sqlite_autoincrement=True,  # ids never reused: the audit trail's order is the id order
)

fills = sa.Table(
    "bastion_fills",
    metadata,
    sa.Column("id", _AutoId, primary_key=True, autoincrement=True),
    sa.Column("venue", sa.String, nullable=False),
    sa.Column("client_order_id", sa.String, nullable=False, index=True),
    sa.Column("trade_id", sa.String, nullable=False),
    sa.Column("instrument_id", sa.String, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("side", sa.String, nullable=False),
    sa.Column("price", sa.String, nullable=False),
    sa.Column("quantity", sa.String, nullable=False),
    sa.Column("fee", sa.String, nullable=False),
    sa.Column("fee_currency", sa.String, nullable=False),
    sa.Column("liquidity", sa.String, nullable=False),
    sa.UniqueConstraint("venue", "client_order_id", "trade_id", name="uq_bastion_fills_identity"),
    sqlite_autoincrement=True,
)

reservations = sa.Table(
    "bastion_reservations",
    metadata,
    sa.Column("client_order_id", sa.String, primary_key=True),
    sa.Column("currency", sa.String, primary_key=True),
    sa.Column("amount", sa.String, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("released_ns", sa.BigInteger, nullable=True),
    sa.Index("ix_bastion_reservations_active", "released_ns"),
)

kv_state = sa.Table(
    "bastion_kv_state",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)

sequences = sa.Table(
    "bastion_sequences",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

pnl_series = sa.Table(
    "bastion_pnl_series",
    metadata,
    sa.Column("id", _AutoId, primary_key=True, autoincrement=True),
    sa.Column("strategy_id", sa.String, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("equity", sa.String, nullable=False),
    sa.Column("position", sa.String, nullable=False),
    sa.Column("realized", sa.String, nullable=False),
    sa.Column("unrealized", sa.String, nullable=False),
    sa.Column("fees", sa.String, nullable=False),
    sa.Column("currency", sa.String, nullable=False),
    sa.UniqueConstraint("strategy_id", "ts_ns", name="uq_bastion_pnl_point"),
    sqlite_autoincrement=True,
)
