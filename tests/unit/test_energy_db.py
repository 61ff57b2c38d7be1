"""The energy schema: migrations create exactly the tables db.py queries, on SQLite and
on PostgreSQL; the latest view shows the newest value per hour."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from marketstream.energy import db
from tests.energy_support import private_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'energy.db'}"
    else:
        with private_schema(request.getfixturevalue("postgres_url")) as pg_url:
            yield pg_url


def _utc(*args):
    return datetime(*args, tzinfo=UTC)


def test_migrate_is_idempotent_and_matches_tables(url):
    db.migrate(url)
    db.migrate(url)  # second run: nothing to do, no error
    assert db.current_revision(url) == "0001"
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), db.metadata)
            names = set(sa.inspect(connection).get_table_names())
            views = set(sa.inspect(connection).get_view_names())
    finally:
        engine.dispose()
    assert diff == [], f"db.py tables differ from the migrations: {diff}"
    assert {"trades", "reference_prices", "loader_offsets"} <= names
    assert "latest_reference_prices" in views


def test_latest_view_returns_newest_value_per_hour(url):
    db.migrate(url)
    engine = db.make_engine(url)
    rows = [
        (date(2026, 11, 22), "10-11", "20.5", _utc(2026, 11, 22, 8, 0)),
        (date(2026, 11, 22), "10-11", "21.25", _utc(2026, 11, 22, 8, 10)),
        (date(2026, 11, 22), "11-12", "30", _utc(2026, 11, 22, 8, 5)),
    ]
    try:
        with engine.begin() as connection:
            connection.execute(db.reference_prices.insert(), [
                {"delivery_day": d, "delivery_hour": h, "value": Decimal(v), "unit": "euro/mwh",
                     "last_update": t, "fetched_at": _utc(2026, 11, 22, 9)} for d, h, v, t in rows
            ])
        with engine.connect() as connection:
            latest = connection.execute(
                sa.select(db.latest_reference_prices).order_by(db.latest_reference_prices.c.delivery_hour)
            ).mappings().all()
    finally:
        engine.dispose()
    assert [(r["delivery_hour"], Decimal(str(r["value"])), db.as_utc(r["last_update"])) for r in latest] == [
        ("10-11", Decimal("21.25"), _utc(2026, 11, 22, 8, 10)),
        ("11-12", Decimal(30), _utc(2026, 11, 22, 8, 5)),
    ]


def test_trades_reject_unknown_direction(url):
    db.migrate(url)
    engine = db.make_engine(url)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(db.trades.insert().values(
                deal_id="x", trader_id="flex_trader_1", direction="hold", price=1, quantity=1,
                delivery_day=date(2026, 11, 22), delivery_hour="10-11",
                execution_time=_utc(2026, 11, 22, 8), loaded_at=_utc(2026, 11, 22, 8),
            ))
    finally:
        engine.dispose()
