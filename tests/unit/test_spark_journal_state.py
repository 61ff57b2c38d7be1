"""The journal state layout: same book as the reference, few state calls per batch, and a
worker cache that is never trusted when it does not match the committed state."""

from __future__ import annotations

import random

import pytest

from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book, render_levels
from marketstream.spark import journal_state
from marketstream.spark.book_state import InputRecord, Progress, apply_batch
from marketstream.spark.journal_state import DictJournalBackend, JournalStore, Meta


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setattr(journal_state, "_CACHES", {})
    monkeypatch.setattr(journal_state, "COMPACT_EVERY", 4)
    monkeypatch.setattr(journal_state, "CHUNK_ENTRIES", 50)


def _values(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(f'{{"order_id":{i},"symbol":"{rng.choice("AB")}","order_side":"{rng.choice(["BUY", "SELL"])}",'
                   f'"size":{rng.randint(1, 5)},"price":{rng.randint(1, 9)},"status":"OPEN"}}'.encode())
        if rng.random() < 0.4:
            out.append(f'{{"order_id":{rng.randrange(i + 5)},"status":"CLOSED"}}'.encode())  # some before open
        if rng.random() < 0.1:
            out.append(out[rng.randrange(len(out))])  # duplicates
    return out


def _reference(values):
    book = OrderBook()
    for v in values:
        book.apply(parse_event(v))
    return levels_to_json(render_book(book, 0)), book.open_count


class Job:
    """Drives batches like the processor does: meta and levels as committed state."""

    def __init__(self, backend, ttl_ms=10**12):
        self.ttl_ms = ttl_ms
        self.backend, self.meta_row, self.levels, self.progress = backend, None, {}, Progress()
        self.offset = 0

    def batch(self, values, now_ms, fail=False):
        meta = Meta.from_row(self.meta_row)
        levels = {k: dict(v) for k, v in self.levels.items()}
        progress = Progress.from_row(self.progress.to_row())
        store = JournalStore(meta, self.backend, now_ms)
        records = [InputRecord(0, self.offset + i, v) for i, v in enumerate(values)]
        apply_batch(store, levels, progress, records)
        store.commit(ttl_ms=self.ttl_ms)
        if fail:  # the batch dies after the processor ran: Spark rolls its state back
            self.backend.rollback()
            return
        self.backend.commit()
        self.meta_row, self.levels, self.progress = meta.to_row(), levels, progress
        self.offset += len(values)

    def book(self):
        return levels_to_json(render_levels(self.levels, 0)), self.progress.open_count


def test_batches_with_compaction_equal_reference_and_cost_few_calls():
    values = _values(1, 3000)
    job = Job(DictJournalBackend())
    backend = job.backend
    for n, start in enumerate(range(0, len(values), 100)):
        before = backend.calls
        job.batch(values[start:start + 100], now_ms=1_000_000 + n * 1000)
        assert backend.calls - before <= 3 or n % 4 == 3  # one journal write (+ compaction every 4th)
    assert job.book() == _reference(values)
    assert len(backend.journal) < 4 and backend.chunk_map  # compacted into snapshot chunks


def test_a_failed_batch_leaves_no_trace_in_the_cache():
    values = _values(2, 600)
    job = Job(DictJournalBackend())
    job.batch(values[:200], now_ms=1_000_000)
    # A batch that opens many orders then fails: its replay must not see them.
    job.batch(values[200:400], now_ms=1_001_000, fail=True)
    job.batch(values[200:400], now_ms=1_001_000)
    job.batch(values[400:], now_ms=1_002_000)
    assert job.book() == _reference(values)


def test_another_worker_process_rebuilds_or_catches_up_from_state(monkeypatch):
    values = _values(3, 900)
    job = Job(DictJournalBackend())
    job.batch(values[:300], now_ms=1_000_000)
    caches = journal_state._CACHES
    monkeypatch.setattr(journal_state, "_CACHES", {})  # a fresh worker: rebuild from state
    job.batch(values[300:600], now_ms=1_001_000)
    monkeypatch.setattr(journal_state, "_CACHES", caches)  # back to the first worker: stale by one batch
    job.batch(values[600:], now_ms=1_002_000)
    assert job.book() == _reference(values)


def test_closed_ids_are_forgotten_after_the_ttl_at_compaction():
    job = Job(DictJournalBackend(), ttl_ms=10_000)
    job.batch([b'{"order_id":1,"status":"CLOSED"}'], now_ms=1_000_000)
    for n in range(1, 5):  # compaction at the 4th batch with changes, 30 s later: TTL (10 s) passed
        job.batch([f'{{"order_id":{100 + n},"status":"CLOSED"}}'.encode()], now_ms=1_000_000 + n * 10_000)
    job.batch([b'{"order_id":1,"symbol":"A","order_side":"BUY","size":1,"price":1,"status":"OPEN"}'],
              now_ms=1_060_000)
    assert job.progress.open_count == 1  # the late open is accepted once its close is forgotten
    assert 101 not in journal_state._CACHES[Meta.from_row(job.meta_row).book_id].live.closed


def test_a_batch_that_dies_midway_leaves_no_trace_in_the_cache():
    values = _values(4, 300)
    job = Job(DictJournalBackend())
    job.batch(values[:100], now_ms=1_000_000)
    dying = JournalStore(Meta.from_row(job.meta_row), job.backend, 1_001_000)
    from marketstream.orderbook.book import OpenOrder
    from decimal import Decimal

    dying.put_open(10**9, OpenOrder("A", "BUY", Decimal(1), Decimal(1)))
    dying.put_closed(250)  # an order the next batch opens; then the task is killed
    job.batch(values[100:], now_ms=1_001_000)
    assert job.book() == _reference(values)
