"""Order-book core: plain Python, no Spark. The library the Spark job renders with and the
reference model the validator replays against."""

from marketstream.orderbook.book import OrderBook, OpenOrder
from marketstream.orderbook.events import InvalidEvent, OrderEvent, parse_event, validate_fields
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level, levels_from_json, levels_to_json, render_book, render_levels

__all__ = [
    "InvalidEvent", "Level", "OpenOrder", "OrderBook", "OrderEvent", "SnapshotMessage",
    "levels_from_json", "levels_to_json", "parse_event", "render_book", "render_levels", "validate_fields",
]
