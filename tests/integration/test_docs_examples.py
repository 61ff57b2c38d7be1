"""The notebook queries of docs/exports.md (DuckDB, pandas) run as written against a real
export, and the consumer of docs/consumers.md reads a real topic from a given second."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from marketstream.exports.exporter import export_interval
from marketstream.exports.rollup import rollup_day
from marketstream.exports.validation import validate_interval
from marketstream.orderbook.render import levels_from_json
from tests.published_stream import PublishedStream
from tests.support import ROOT

pytestmark = pytest.mark.integration

# The day, interval and second the documentation's examples name.
FIRST = int(datetime(2026, 11, 22, 8, 12, tzinfo=UTC).timestamp())
SECOND = FIRST + 3  # 08:12:03Z
INTERVAL = (datetime(2026, 11, 22, 8, 10, tzinfo=UTC), datetime(2026, 11, 22, 8, 15, tzinfo=UTC))


def code_blocks(doc: str, language: str, after: str = "") -> list[str]:
    text = (ROOT / "docs" / doc).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text[text.index(after):], flags=re.S)


@pytest.fixture
def published(kafka_settings):
    stream = PublishedStream(kafka_settings, 400, FIRST)
    # Live up to 08:15:00: the interval [08:10, 08:15) is final.
    stream.publish(range(FIRST, int(INTERVAL[1].timestamp()) + 1))
    expected = {s: stream.snapshot(s) for s in (SECOND,)}
    stream.close()
    return kafka_settings, expected


def test_the_documented_duckdb_and_pandas_queries_read_a_real_export(published, monkeypatch):
    import duckdb

    settings, expected = published
    export_interval(settings, *INTERVAL, grace_s=0)
    validate_interval(settings, *INTERVAL)
    rollup_day(settings.export_dir, INTERVAL[0].date())
    assert settings.export_dir.name == "exports"
    monkeypatch.chdir(settings.export_dir.parent)

    book_query, spread_query = code_blocks("exports.md", "sql", "## From a notebook")
    rows = duckdb.sql(book_query).fetchall()
    published_levels = levels_from_json(expected[SECOND].value)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (lv.symbol, lv.side, lv.price, lv.amount, lv.total, lv.cum_sum) for lv in published_levels]
    assert all(isinstance(r[2], Decimal) for r in rows) and not any(r[6] for r in rows)

    spreads = duckdb.sql(spread_query).fetchall()
    # One row a second from the stream's first second to the interval's end.
    assert [int(r[0].timestamp()) for r in spreads] == list(range(FIRST, int(INTERVAL[1].timestamp())))
    best = {lv.side: lv.price for lv in published_levels if lv.side in ("buy_1", "sell_1")}
    assert dict((int(r[0].timestamp()), r[2]) for r in spreads)[SECOND] == best["sell_1"] - best["buy_1"]

    (pandas_code,) = code_blocks("exports.md", "python", "## From a notebook")
    namespace: dict = {}
    exec(pandas_code, namespace)  # noqa: S102 - the documentation's own example
    book = namespace["book"]
    assert list(book["side"]) == [lv.side for lv in published_levels]
    assert list(book["amount"]) == [lv.amount for lv in published_levels]


def test_the_documented_consumer_starts_at_the_second_asked_for(published):
    settings, expected = published
    (consumer_code,) = code_blocks("consumers.md", "python")
    namespace: dict = {}
    exec(consumer_code, namespace)  # noqa: S102 - the documentation's own example
    read = namespace["snapshots_from"](settings.kafka_bootstrap_servers, settings.orderbook_topic, SECOND,
                                       idle_ms=3000)
    first_five = list(itertools.islice(read, 5))
    read.close()
    assert [item[0] for item in first_five] == list(range(SECOND, SECOND + 5))
    assert [item[1] for item in first_five] == list(range(4, 9))  # sequence 1 was 08:12:00
    assert first_five[0][3] == json.loads(expected[SECOND].value)
