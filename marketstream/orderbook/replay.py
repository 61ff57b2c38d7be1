"""Reading event files (the official CSV or JSON lines) and replaying them into a book."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import msgspec

from marketstream.orderbook.book import OrderBook
from marketstream.orderbook.events import InvalidEvent, OrderEvent, csv_row_to_fields, parse_event, validate_fields


def read_event_file(path: str | Path) -> Iterator[OrderEvent | InvalidEvent]:
    """Yield each event of a ``.csv`` or JSON-lines file in file order; invalid ones as
    ``InvalidEvent`` so the caller decides whether to count or stop."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(handle):
                try:
                    yield validate_fields(csv_row_to_fields(row))
                except InvalidEvent as exc:
                    yield exc
        else:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    yield parse_event(line)
                except InvalidEvent as exc:
                    yield exc


# Decimals as JSON numbers with their exact digits (a float would round long ones).
_JSON = msgspec.json.Encoder(decimal_format="number")


def csv_row_to_json(row: dict[str, str]) -> str:
    """One CSV row as the JSON message a producer would send (absent fields omitted)."""
    return _JSON.encode(csv_row_to_fields(row)).decode()


def replay_file(path: str | Path) -> tuple[OrderBook, list[InvalidEvent]]:
    book, rejected = OrderBook(), []
    for item in read_event_file(path):
        if isinstance(item, InvalidEvent):
            rejected.append(item)
        else:
            book.apply(item)
    return book, rejected
