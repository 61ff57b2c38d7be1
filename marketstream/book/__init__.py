"""The book at any second (``python -m marketstream.book``; the dashboard's time travel):
a second's snapshot from the snapshot topic or, once the topic no longer holds it, the
exports; every second of a range; the open orders behind a level."""

from marketstream.book.core import (
    MAX_RANGE_SECONDS, BookError, BookRange, BookSecond, Explanation, book_at, book_range, explain, parse_side, retained,
)
from marketstream.book.times import parse_time, show

__all__ = [
    "MAX_RANGE_SECONDS", "BookError", "BookRange", "BookSecond", "Explanation", "book_at", "book_range", "explain",
    "parse_side", "parse_time", "retained", "show",
]
