"""The state partitions' parts of each second -> the one snapshot of that second.
Stateless; runs on the driver, in the publisher, once per batch.

Each state partition sends, for every second the batch publishes, its own best ``depth``
levels per (symbol, side). The book's best ``depth`` prices are among the union of those
(a price that is among the best ``depth`` of the book is among the best ``depth`` of every
partition that holds it), and a price's amount is the sum over the partitions holding it,
each of which sent it: so summing the parts by price and keeping the best ``depth`` gives
the exact book.
"""

from __future__ import annotations

from typing import Iterable

from marketstream.orderbook.events import SIDE_NAMES, from_units
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels
from marketstream.spark.state.book_of_second import BookPart


class PartsDisagree(AssertionError):
    """The state partitions did not publish the same seconds the same way: a bug, and
    publishing a book made of some of the parts would be publishing a wrong book."""


def combine(parts: Iterable[BookPart], partitions: int, depth: int) -> list[SnapshotMessage]:
    """One snapshot per second, in order, from the parts of all ``partitions``."""
    by_second: dict[int, list[BookPart]] = {}
    for part in parts:
        by_second.setdefault(part.second, []).append(part)
    messages = []
    previous: tuple[tuple, str] | None = None  # (levels key, rendered value): seconds often repeat
    for second in sorted(by_second):
        group = by_second[second]
        _check(second, group, partitions)
        amounts: dict[tuple[str, str], dict[int, int]] = {}
        for part in group:
            for symbol, side, price, amount in part.levels:
                prices = amounts.setdefault((symbol, SIDE_NAMES[side]), {})
                prices[price] = prices.get(price, 0) + amount
        key = tuple(sorted((k, tuple(sorted(v.items()))) for k, v in amounts.items()))
        if previous is not None and previous[0] == key:
            value = previous[1]
        else:
            levels = {k: {from_units(p): from_units(a) for p, a in v.items()} for k, v in amounts.items()}
            value = levels_to_json(render_levels(levels, depth))
            previous = (key, value)
        first = group[0]
        messages.append(SnapshotMessage(
            snapshot_time=second, sequence=first.sequence, input_offsets=dict(first.input_offsets),
            open_orders=sum(p.open_orders for p in group), value=value, recovered=first.recovered,
        ))
    return messages


def _check(second: int, group: list[BookPart], partitions: int) -> None:
    if len(group) != partitions:
        raise PartsDisagree(f"second {second}: {len(group)} state partition part(s), expected {partitions}")
    first = group[0]
    for part in group[1:]:
        if (part.sequence, part.input_offsets, part.recovered) != (first.sequence, first.input_offsets, first.recovered):
            raise PartsDisagree(
                f"second {second}: state partitions disagree on sequence/offsets/recovered: "
                f"{(first.sequence, first.input_offsets, first.recovered)} vs "
                f"{(part.sequence, part.input_offsets, part.recovered)}")


__all__ = ["PartsDisagree", "combine"]
