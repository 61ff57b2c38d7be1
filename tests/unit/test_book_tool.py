"""The book tool's parts that need no broker: the times a user types, the seed's book
view, the level names ``explain`` takes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketstream.book import BookError, BookSecond, parse_side, parse_time
from marketstream.book.__main__ import main
from marketstream.book.render import table
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels

SECOND = 1772443842  # 2026-03-02T09:30:42Z


@pytest.mark.parametrize("text", [
    "2026-03-02T09:30:42Z", "2026-03-02T09:30:42.999Z", "2026-03-02 10:30:42+01:00", "2026-03-02T04:30:42-05:00",
    "1772443842", "1772443842.7", " 2026-03-02T09:30:42+00:00 ",
])
def test_times_are_the_second_they_fall_in(text):
    assert parse_time(text) == SECOND


@pytest.mark.parametrize("text, message", [
    ("2026-03-02T09:30:42", "has no time zone: add Z for UTC (e.g. 2026-03-02T09:30:42Z)"),
    ("1772443842000", "looks like epoch milliseconds; give epoch seconds (1772443842 for this one)"),
    ("yesterday", "is neither an ISO-8601 time"),
    ("-5", "is neither an ISO-8601 time"),
])
def test_unreadable_times_say_what_to_type(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_time(text)


def test_the_command_line_refuses_a_bad_time_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["at", "14:03:27"])
    assert exited.value.code == 2
    assert "argument TIME: '14:03:27' is neither an ISO-8601 time" in capsys.readouterr().err


@pytest.mark.parametrize("text, side", [("buy_3", ("buy", 3)), ("Sell 1", ("sell", 1)), ("SELL_12", ("sell", 12))])
def test_level_names(text, side):
    assert parse_side(text) == side


@pytest.mark.parametrize("text", ["buy", "bid_1", "buy_0", "sell_x"])
def test_bad_level_names(text):
    with pytest.raises(BookError, match="give buy_N or sell_N"):
        parse_side(text)


def test_the_table_is_the_seed_book_view():
    levels = render_levels({("BTC-USDT", "BUY"): {Decimal("34045.24"): Decimal("6.5137"),
                                                  Decimal("34045.23"): Decimal("0.00058")},
                            ("BTC-USDT", "SELL"): {Decimal("34045.25"): Decimal("7.52013")}}, 15)
    book = BookSecond(SnapshotMessage(SECOND, 9, {0: 5}, 3, levels_to_json(levels), False), "topic", "orderbook[0]@8")
    lines = table(book, None, 0).splitlines()
    assert lines[0] == "2026-03-02T09:30:42Z (sequence 9) from the topic (orderbook[0]@8); live: published on time"
    assert lines[2] == "BTC-USDT"
    assert lines[4].split("|")[0].split() == ["Side", "Price", "(USDT)", "Amount", "(BTC)", "Total", "(USDT)",
                                              "Sum", "(USDT)"]
    # The seed's first row: Buy 1 34,045.24 6.5137 221,760.479788 beside Sell 1 34,045.25 7.52013 256,024.7058825
    assert lines[5].split() == ["Buy", "1", "34,045.24", "6.5137", "221,760.479788", "221,760.479788", "|",
                                "Sell", "1", "34,045.25", "7.52013", "256,024.7058825", "256,024.7058825"]
    assert lines[6].split() == ["Buy", "2", "34,045.23", "0.00058", "19.7462334", "221,780.2260214", "|"]
    assert [line.split() for line in table(book, None, 1).splitlines()[5:]] == [lines[5].split()]


def test_the_command_imports_no_more_than_a_lookup_in_the_topic_needs():
    """``book at`` is a command a user waits for: its start-up imports neither the
    exports' readers (Parquet, the validator) nor pandas, which only a second the topic no
    longer holds, or ``explain``, needs."""
    import subprocess
    import sys

    from tests.support import ROOT, python_env

    code = ("import sys, marketstream.book.__main__; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'pandas', 'duckdb') "
            "or m in ('marketstream.book.exported', 'marketstream.exports.validation', 'marketstream.exports.layout'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
