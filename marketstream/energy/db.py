"""The energy database: SQLAlchemy Core tables, engine creation and ``migrate(url)``.

The schema itself is owned by the Alembic migrations in ``migrations/``; the ``Table``
objects here mirror them for queries (a unit test checks the two agree). Same code on
PostgreSQL (compose, tests) and SQLite (embedded run).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant: serialises concurrent ``migrate()`` calls (loader, ETL) on PostgreSQL.
_MIGRATION_LOCK_ID = 0x656E6572  # "ener"

metadata = sa.MetaData()

trades = sa.Table(
    "trades",
    metadata,
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
    sa.Index("ix_trades_delivery", "delivery_day", "delivery_hour"),
)

reference_prices = sa.Table(
    "reference_prices",
    metadata,
    sa.Column("delivery_day", sa.Date, primary_key=True),
    sa.Column("delivery_hour", sa.Text, primary_key=True),
    sa.Column("value", sa.Numeric, nullable=False),
    sa.Column("unit", sa.Text, nullable=False),
    sa.Column("last_update", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
)

loader_offsets = sa.Table(
    "loader_offsets",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# A view (created by the migrations): one row per delivery day + hour, the newest value.
# Kept out of ``metadata`` so nothing tries to create it as a table.
view_metadata = sa.MetaData()
latest_reference_prices = sa.Table(
    "latest_reference_prices",
    view_metadata,
    *(sa.Column(c.name, c.type) for c in reference_prices.columns),
)

def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timestamptz columns; they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def insert_on_conflict(engine: sa.Engine, table: sa.Table):
    """``INSERT`` with ``ON CONFLICT`` support for the engine's dialect."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use PostgreSQL or SQLite")
    return insert(table)


def _url(url: str | SecretStr) -> str:
    # ``DATABASE_URL`` holds the password: unwrapped here, where SQLAlchemy takes it over
    # (an engine's and a URL object's repr show it as ***).
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def shown_url(url: str | SecretStr) -> str:
    """The database URL without its password, for messages."""
    try:
        return sa.engine.make_url(_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - whatever failed to parse, none of it is shown
        return "(unparseable URL)"


def make_engine(url: str | SecretStr, **kwargs) -> Engine:
    """An engine for ``url``; creates the SQLite file's directory for the embedded run."""
    parsed = sa.engine.make_url(_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Loader, listener and ETL share the file: wait for a writer instead of failing.
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _alembic_config(connection: sa.Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(url: str | SecretStr | Engine, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest). Idempotent and
    safe to call from several services at once."""
    from alembic import command

    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            command.upgrade(_alembic_config(connection), revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def current_revision(url: str | SecretStr | Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """``python -m marketstream.energy.db migrate``: create/upgrade the schema at DATABASE_URL."""
    import argparse

    from marketstream.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m marketstream.energy.db")
    parser.add_argument("command", choices=["migrate", "revision"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = get_settings().database_url
    if args.command == "migrate":
        migrate(url)
    print(current_revision(url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
