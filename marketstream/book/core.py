"""The book at any second: ``book_at`` (one second), ``book_range`` (every second of a
range, gaps listed) and ``explain`` (the open orders behind one level).

A second comes from the snapshot topic while the topic holds it (``topic``), else from
the exports (``exported``, imported only then). ``explain`` needs the snapshot's input
offsets, which only the topic has: it replays the input below them with the validator's
reference replay and its saved state (``exports.validation.replay_book``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from marketstream.book import topic
from marketstream.book.times import show
from marketstream.kafka_io import open_topic
from marketstream.orderbook.book import EXACT, OpenOrder
from marketstream.orderbook.events import BUY, SELL
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import Level
from marketstream.settings import Settings
from marketstream.snapshots import topic_span

if TYPE_CHECKING:  # read only for seconds the topic no longer holds: not imported by a lookup that it answers
    from marketstream.book import exported

# A range is read into memory (and written as one file): a day of seconds at most.
MAX_RANGE_SECONDS = 86_400


class BookError(Exception):
    """A question the data cannot answer; the message says why, for the user."""


@dataclass(frozen=True)
class BookSecond:
    """One second's snapshot and where it was read."""

    message: SnapshotMessage
    source: str  # "topic" or "exports"
    location: str  # "orderbook[0]@1234" or the export file

    @property
    def second(self) -> int:
        return self.message.snapshot_time

    @property
    def recovered(self) -> bool:
        return self.message.recovered

    def symbols(self) -> list[str]:
        return sorted({level.symbol for level in self.message.levels()})

    def levels(self, symbol: str | None = None, depth: int = 0) -> list[Level]:
        """The levels of ``symbol`` (all symbols: ``None``), ``depth`` a side (0: all)."""
        rows = [lv for lv in self.message.levels() if symbol is None or lv.symbol == symbol]
        return [lv for lv in rows if not depth or int(lv.side.partition("_")[2]) <= depth]

    def describe(self) -> str:
        """The line every output starts with: which second, from where, recovered or not."""
        recovered = ("recovered: published late, after the job came back" if self.recovered
                     else "live: published on time")
        return (f"{show(self.second)} (sequence {self.message.sequence}) from the {self.source} "
                f"({self.location}); {recovered}")


def _from_topic(item: topic.TopicSecond, settings: Settings) -> BookSecond:
    return BookSecond(item.message, "topic", f"{settings.orderbook_topic}[{item.partition}]@{item.offset}")


def _from_exports(item: exported.ExportedSecond) -> BookSecond:
    return BookSecond(item.message, "exports", str(item.path))


def _first_per_second(items: list[topic.TopicSecond]) -> tuple[dict[int, topic.TopicSecond], list[int]]:
    """The first record of each second, and the seconds published more than once with
    different content (identical copies are one publication redelivered)."""
    first: dict[int, topic.TopicSecond] = {}
    duplicated: set[int] = set()
    for item in items:
        second = item.message.snapshot_time
        if second in first and first[second].message != item.message:
            duplicated.add(second)
        first.setdefault(second, item)
    return first, sorted(duplicated)


class _Unreachable(Exception):
    pass


def _read_topic(settings: Settings, start: int, end: int) -> tuple[dict[int, topic.TopicSecond], list[int]]:
    """The topic's seconds of ``[start, end)``: none when there is no topic (yet, or any
    more: the exports may still hold them); ``_Unreachable`` when no broker answers."""
    from kafka.errors import KafkaError

    try:
        return _first_per_second(topic.read_seconds(settings, start, end).messages)
    except LookupError:
        return {}, []
    except (KafkaError, TimeoutError) as exc:
        raise _Unreachable(f"cannot read topic {settings.orderbook_topic} from {settings.kafka_bootstrap_servers} "
                           f"({exc if str(exc).startswith(type(exc).__name__) else f'{type(exc).__name__}: {exc}'})") from None


def retained(settings: Settings) -> tuple[int, int] | None:
    """The first and last second the topic and the exports hold together (``None``:
    neither holds any). An export interval counts whole; gaps inside are not looked for."""
    firsts, lasts = [], []
    try:
        span = topic_span(settings)
        firsts += [span.first] if span.first is not None else []
        lasts += [span.last] if span.last is not None else []
    except LookupError:
        pass
    from marketstream.exports.layout import list_exports

    exports = list_exports(settings.export_dir)
    if exports:
        firsts.append(int(min(e.start for e in exports).timestamp()))
        lasts.append(int(max(e.end for e in exports).timestamp()) - 1)
    return (min(firsts), max(lasts)) if firsts and lasts else None


def _span_sentence(settings: Settings, second: int, last_second: int | None = None) -> str:
    """Why ``second`` (or the seconds up to ``last_second``) has no snapshot: before the
    first, after the newest, or a gap."""
    span = retained(settings)
    if span is None:
        return (f"no snapshot for {show(second)}: topic {settings.orderbook_topic} holds no snapshot and "
                f"{settings.export_dir} no export. Has the order-book pipeline run?")
    first, last = span
    held = f"snapshots are held from {show(first)} to {show(last)}"
    asked = show(second) if last_second is None else f"{show(second)} .. {show(last_second)}"
    if (second if last_second is None else last_second) < first:
        return f"{asked} is before the first snapshot: {held}"
    if second > last:
        return (f"{asked} is after the newest snapshot: {held} (the job publishes each second "
                "about a second after it ends)")
    return (f"no snapshot for {asked}: a gap (the job published nothing then, or its export is missing); {held}")


def book_at(settings: Settings, second: int) -> BookSecond:
    """The snapshot of ``second``: from the topic, else from the exports; ``BookError``
    when neither holds it."""
    return _book_at(settings, second)[0]


def _book_at(settings: Settings, second: int) -> tuple[BookSecond, str | None]:
    """``book_at``, and why the topic could not be read (``None``: it was)."""
    unreachable = None
    try:
        found = _read_topic(settings, second, second + 1)[0].get(second)
    except _Unreachable as exc:
        found, unreachable = None, str(exc)
    if found is not None:
        return _from_topic(found, settings), None
    from marketstream.book import exported

    try:
        from_exports = exported.read_exported(settings.export_dir, second, second + 1).get(second)
    except exported.ExportUnreadable as exc:
        raise BookError(str(exc)) from None
    if from_exports is not None:
        return _from_exports(from_exports), unreachable
    if unreachable:
        raise BookError(f"{unreachable}, and the exports in {settings.export_dir} do not hold {show(second)}")
    raise BookError(_span_sentence(settings, second))


@dataclass
class BookRange:
    """Every second of a range found, in order; the seconds that were not."""

    start: int
    end: int  # exclusive
    seconds: list[BookSecond] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)

    @property
    def recovered(self) -> list[int]:
        return [s.second for s in self.seconds if s.recovered]


def book_range(settings: Settings, start: int, end: int) -> BookRange:
    """Every second of ``[start, end)``: the topic's, and the exports' for the seconds the
    topic does not hold."""
    if end <= start:
        raise BookError(f"empty range: {show(start)} is not before {show(end)}")
    if end - start > MAX_RANGE_SECONDS:
        raise BookError(f"{end - start:,} seconds asked for; a range is at most {MAX_RANGE_SECONDS:,} (a day)")
    unreachable = None
    try:
        from_topic, duplicated = _read_topic(settings, start, end)
    except _Unreachable as exc:
        (from_topic, duplicated), unreachable = ({}, []), str(exc)
    missing = [s for s in range(start, end) if s not in from_topic]
    from marketstream.book import exported

    from_exports: dict[int, exported.ExportedSecond] = {}
    if missing:
        try:
            from_exports = exported.read_exported(settings.export_dir, missing[0], missing[-1] + 1)
        except exported.ExportUnreadable as exc:
            raise BookError(str(exc)) from None
    result = BookRange(start, end, duplicated=duplicated)
    for second in range(start, end):
        if second in from_topic:
            result.seconds.append(_from_topic(from_topic[second], settings))
        elif second in from_exports:
            result.seconds.append(_from_exports(from_exports[second]))
        else:
            result.gaps.append(second)
    if not result.seconds and unreachable:
        raise BookError(f"{unreachable}, and the exports in {settings.export_dir} hold no second of the range")
    if not result.seconds:
        raise BookError(_span_sentence(settings, start, end - 1))
    return result


# ---------------------------------------------------------------- explain


@dataclass(frozen=True)
class Explanation:
    """The open orders that make up one level of one second's book."""

    book: BookSecond
    level: Level
    orders: list[tuple[int, OpenOrder]]  # (order id, order), by id

    @property
    def total_size(self) -> Decimal:
        total = Decimal(0)
        for _, order in self.orders:
            total = EXACT.add(total, order.size)
        return total


def parse_side(text: str) -> tuple[str, int]:
    """``buy_3`` (or ``Buy 3``, ``sell_1``) as (side, rank); ``BookError`` otherwise."""
    name, _, rank = text.strip().lower().replace(" ", "_").partition("_")
    if name not in ("buy", "sell") or not rank.isdigit() or int(rank) < 1:
        raise BookError(f"{text!r} names no level: give buy_N or sell_N (N = 1 is the best price)")
    return name, int(rank)


def find_level(book: BookSecond, symbol: str, side: str) -> Level:
    name, rank = parse_side(side)
    symbols = book.symbols()
    if symbol not in symbols:
        raise BookError(f"unknown symbol {symbol!r} at {show(book.second)}: the book holds "
                        f"{', '.join(symbols) if symbols else 'no symbol (it is empty)'}")
    wanted = f"{name}_{rank}"
    levels = book.levels(symbol)
    for level in levels:
        if level.side == wanted:
            return level
    held = sum(1 for lv in levels if lv.side.startswith(name + "_"))
    raise BookError(f"{symbol} has {held} {name} level(s) at {show(book.second)}: no {wanted}")


def _not_in_topic(settings: Settings, book: BookSecond, unreachable: str | None) -> str:
    """Why a second read from the exports cannot be explained, and which seconds can be.

    The exports keep each second's book, not the input offsets it was computed from: only
    the snapshot record carries them. Recording them in the exports would not make an old
    second explainable either: the replay reads the input topic from its first event (the
    validator's saved state is always further on), and the input topic's retention is the
    snapshot topic's by default, so the input is gone with the snapshot."""
    why = (f"{show(book.second)} was read from the exports ({book.location}), which keep the book but not the "
           f"input offsets it was computed from; explain replays {settings.orders_topic} below the offsets that "
           f"only the snapshot record on {settings.orderbook_topic} carries")
    if unreachable:
        return f"{why}, and {unreachable}"
    try:
        span = topic_span(settings)
    except LookupError:
        return f"{why}, and topic {settings.orderbook_topic} does not exist: no second can be explained"
    if span.first is None:
        return f"{why}, and that topic holds no snapshot any more: no second can be explained"
    held = f"Topic {settings.orderbook_topic} holds {show(span.first)} to {show(span.last)}"
    if span.first <= book.second <= span.last:
        return f"{why}. {held}, but not this second: explain another one"
    return f"{why}. {held} (ORDERBOOK_RETENTION_MS): explain a second of those"


def _disagreement(settings: Settings, book: BookSecond, level: Level, result: Explanation) -> str:
    """Why the replayed orders do not add up to the level: the input topic lost its first
    events to retention (the replay cannot be complete), or the book and its input disagree."""
    offsets = {p: o for p, o in sorted(book.message.input_offsets.items())}
    found = (f"the replay of {settings.orders_topic} below {offsets} has {len(result.orders)} order(s) of "
             f"{result.total_size} at {level.price}, the snapshot's {level.side} says {level.amount}")
    from kafka.errors import KafkaError

    try:
        with open_topic(settings, settings.orders_topic, **topic.COMMITTED) as reader:
            deleted = {p: o for p, o in sorted(reader.start_offsets().items()) if o > 0}
    except (LookupError, KafkaError, TimeoutError):
        deleted = {}
    if deleted:
        return (f"{found}: {settings.orders_topic} no longer holds its first events (retention deleted the offsets "
                f"below {deleted}, ORDERS_RETENTION_MS), so a replay from its start misses the orders opened before. "
                "Seconds after the validator's saved replay (VALIDATION_CACHE_DIR, kept by the export validation) "
                "continue from it and can still be explained")
    return f"{found}: the published book and its input disagree (run the export validation)"


def explain(settings: Settings, second: int, symbol: str, side: str) -> Explanation:
    """The open orders at ``side`` of ``symbol`` at ``second``, from a replay of the input
    below the snapshot's input offsets. ``BookError`` when the topic no longer holds the
    snapshot (the exports keep no offsets: the message names the seconds it holds) or the
    replay does not add up to the level."""
    from marketstream.exports.validation import replay_book

    book, unreachable = _book_at(settings, second)
    level = find_level(book, symbol, side)
    if book.source != "topic":
        raise BookError(_not_in_topic(settings, book, unreachable))
    replayed, _ = replay_book(settings, book.message.input_offsets)
    book_side = BUY if level.side.startswith("buy") else SELL
    orders = sorted((order_id, order) for order_id, order in replayed.open_orders.items()
                    if order.symbol == symbol and order.side == book_side and order.price == level.price)
    result = Explanation(book, level, orders)
    if result.total_size != level.amount:
        raise BookError(_disagreement(settings, book, level, result))
    return result
