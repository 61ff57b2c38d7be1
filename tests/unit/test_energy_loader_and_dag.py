"""Loader transaction (rows + offsets together, replay-safe) on SQLite and PostgreSQL, and
the energy_reference_prices DAG's wiring."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from marketstream.energy import db
from marketstream.energy.loader import store_batch, stored_offsets
from tests.energy_support import private_schema
from tests.support import ROOT


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url_context = None
        url = f"sqlite:///{tmp_path / 'energy.db'}"
    else:
        url_context = private_schema(request.getfixturevalue("postgres_url"))
        url = url_context.__enter__()
    db.migrate(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()
    if url_context is not None:
        url_context.__exit__(None, None, None)


def row(deal_id: str, price: str = "20.64") -> dict:
    t = datetime(2026, 11, 22, 9, tzinfo=UTC)
    return {"deal_id": deal_id, "trader_id": "flex_trader_1", "direction": "sell", "price": Decimal(price),
                "quantity": Decimal("1.2"), "delivery_day": date(2026, 11, 23), "delivery_hour": "10-11",
                "execution_time": t, "loaded_at": t}


def test_batch_and_offsets_commit_together_and_replay_adds_nothing(engine):
    assert store_batch(engine, "deals", [row("a"), row("b")], {0: 2}) == 2
    assert stored_offsets(engine, "deals") == {0: 2}
    # A replay of the same records (crash after the commit, before anything else) ...
    assert store_batch(engine, "deals", [row("a"), row("b"), row("c")], {0: 3}) == 1
    assert stored_offsets(engine, "deals") == {0: 3}
    with engine.connect() as connection:
        rows = connection.execute(sa.select(db.trades.c.deal_id, db.trades.c.price).order_by("deal_id")).all()
    assert [(d, Decimal(str(p))) for d, p in rows] == [("a", Decimal("20.64")), ("b", Decimal("20.64")),
                                                       ("c", Decimal("20.64"))]


def test_failed_batch_leaves_neither_rows_nor_offsets(engine):
    store_batch(engine, "deals", [row("a")], {0: 1})
    bad = row("b") | {"direction": "hold"}  # violates the table's check constraint
    with pytest.raises(sa.exc.IntegrityError):
        store_batch(engine, "deals", [row("x"), bad], {0: 3})
    assert stored_offsets(engine, "deals") == {0: 1}
    with engine.connect() as connection:
        assert connection.execute(sa.select(db.trades.c.deal_id)).scalars().all() == ["a"]


def test_reference_price_dag_is_wired_without_network_at_parse_time(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call while parsing the DAG: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    bag = DagBag(dag_folder=str(ROOT / "dags" / "energy_reference_prices.py"))
    assert bag.import_errors == {}
    dag = bag.dags["energy_reference_prices"]
    assert [t.task_id for t in dag.tasks] == ["fetch_reference_prices"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert "10 minutes" in dag.doc_md
    assert dag.timetable.expression == "*/10 * * * *"
    assert dag.tasks[0].retries == 0  # the next run, 10 minutes later, is the retry
