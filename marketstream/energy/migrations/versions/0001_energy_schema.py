"""Energy schema: trades, reference_prices (+ latest view), loader_offsets.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trades",
        sa.Column("deal_id", sa.Text, primary_key=True),
        sa.Column("trader_id", sa.Text, nullable=False),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("price", sa.Numeric, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("delivery_day", sa.Date, nullable=False),
        sa.Column("delivery_hour", sa.Text, nullable=False),
        sa.Column("execution_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("direction IN ('buy', 'sell')", name="ck_trades_direction"),
    )
    op.create_index("ix_trades_delivery", "trades", ["delivery_day", "delivery_hour"])
    op.create_table(
        "reference_prices",
        sa.Column("delivery_day", sa.Date, primary_key=True),
        sa.Column("delivery_hour", sa.Text, primary_key=True),
        sa.Column("value", sa.Numeric, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("last_update", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "CREATE VIEW latest_reference_prices AS "
        "SELECT r.delivery_day, r.delivery_hour, r.value, r.unit, r.last_update, r.fetched_at "
        "FROM reference_prices r "
        "WHERE r.last_update = ("
        " SELECT max(r2.last_update) FROM reference_prices r2"
        " WHERE r2.delivery_day = r.delivery_day AND r2.delivery_hour = r.delivery_hour)"
    )
    op.create_table(
        "loader_offsets",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("loader_offsets")
    op.execute("DROP VIEW latest_reference_prices")
    op.drop_table("reference_prices")
    op.drop_index("ix_trades_delivery", "trades")
    op.drop_table("trades")
