"""A state partition's committed state as a local SQLite file: the working copy the job
looks orders up in.

Why a file and not a dict in the Python worker: Spark hands a partition's task to any of
its pooled Python workers, so a per-process cache ends up copied into every worker (and
the job's memory grows with open orders times workers). One SQLite file per state
partition and executor is shared by all of them, costs a few microseconds per lookup in
bulk, and keeps resident memory flat: its pages live in the OS page cache, not in the
process.

The truth stays in Spark's state (``partition_state``: a journal of per-batch changes and
rolling segment snapshots, checkpointed and rolled back with each batch). This file only
ever holds a *committed* version of it, named by the journal entry it ends with
(``seq``/``token``): a batch reads it, computes its changes in memory, and the changes
reach the file at the start of the next batch, read back from the committed journal. A
file that is missing, damaged or from another history is rebuilt from the state.

Amounts are exact integers of 1e-8 units (the input contract); level amounts, which can
outgrow 64 bits, are stored as decimal text.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger("marketstream.spark.index")

BUY, SELL = 1, 0  # the side column

_SCHEMA = """
create table if not exists meta(key text primary key, value text not null) without rowid;
create table if not exists orders(
    id integer primary key, seg integer not null, symbol text not null, side integer not null,
    price integer not null, size integer not null, tau integer not null);
create index if not exists orders_seg on orders(seg);
create table if not exists tombs(id integer primary key, seg integer not null, tau integer not null);
create index if not exists tombs_seg on tombs(seg);
create index if not exists tombs_tau on tombs(tau);
create table if not exists levels(
    symbol text not null, side integer not null, price integer not null, amount text not null,
    orders integer not null, primary key(symbol, side, price)) without rowid;
create table if not exists symbols(symbol text primary key, orders integer not null) without rowid;
"""

# SQLite's limit on bound parameters per statement is 32,766; lookups go in slices.
_LOOKUP_SLICE = 900


@dataclass(frozen=True, slots=True)
class StoredOrder:
    symbol: str
    side: int
    price: int
    size: int
    tau: int


@dataclass
class Changes:
    """One batch's changes, in the journal's shape (see ``to_json``)."""

    opened: dict[int, tuple[int, StoredOrder]]  # id -> (segment, order)
    closed: dict[int, tuple[int, str]]  # id -> (segment, symbol)
    tombs: dict[int, tuple[int, int]]  # id -> (segment, tau)
    expire_before: int | None  # tombstones with tau <= this go
    levels: dict[tuple[str, int, int], tuple[int, int]]  # level -> (amount, orders) after the batch; (0, 0): gone

    @classmethod
    def empty(cls) -> "Changes":
        return cls({}, {}, {}, None, {})

    def __len__(self) -> int:
        return len(self.opened) + len(self.closed) + len(self.tombs) + len(self.levels)

    def to_json(self) -> dict:
        return {
            "o": [[i, seg, o.symbol, o.side, o.price, o.size, o.tau] for i, (seg, o) in self.opened.items()],
            "c": [[i, seg, symbol] for i, (seg, symbol) in self.closed.items()],
            "t": [[i, seg, tau] for i, (seg, tau) in self.tombs.items()],
            "x": self.expire_before,
            "l": [[s, side, p, str(a), n] for (s, side, p), (a, n) in self.levels.items()],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Changes":
        return cls(
            opened={i: (seg, StoredOrder(s, side, p, size, tau)) for i, seg, s, side, p, size, tau in data["o"]},
            closed={i: (seg, s) for i, seg, s in data["c"]},
            tombs={i: (seg, tau) for i, seg, tau in data["t"]},
            expire_before=data["x"],
            levels={(s, side, p): (int(a), n) for s, side, p, a, n in data["l"]},
        )


class OrderIndex:
    """One state partition's committed orders, tombstones and published levels."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "OrderIndex":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._connect()
            self.db.execute("select count(*) from meta").fetchone()
        except sqlite3.DatabaseError as exc:
            log.warning("order index %s is unreadable (%s): starting a new one", self.path, exc)
            self.close()
            self.discard()
            self.db = self._connect()
        return self

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A copy of checkpointed state: losing the tail of it to a power cut costs a
        # rebuild, never data, so no fsync.
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=off")
        db.execute("pragma cache_size=-16384")  # 16 MiB per connection, freed at close
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def discard(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> "OrderIndex":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ version
    def version(self) -> tuple[int, str] | None:
        rows = dict(self.db.execute("select key, value from meta where key in ('seq', 'token')").fetchall())
        return (int(rows["seq"]), rows["token"]) if "seq" in rows else None

    def _set_version(self, seq: int, token: str) -> None:
        self.db.executemany("insert or replace into meta values(?, ?)", [("seq", str(seq)), ("token", token)])

    def reset(self) -> None:
        self.db.executescript(
            "begin; delete from meta; delete from orders; delete from tombs; delete from levels;"
            " delete from symbols; commit;")

    # ------------------------------------------------------------------ writes
    def apply(self, seq: int, token: str, changes: Changes) -> None:
        """Apply one committed journal entry, atomically with its version."""
        db = self.db
        db.execute("begin")
        try:
            self._write(changes, with_levels=True)
            self._set_version(seq, token)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    def _write(self, changes: Changes, with_levels: bool) -> None:
        db = self.db
        if changes.closed:
            db.executemany("delete from orders where id = ?", ((i,) for i in changes.closed))
            self._count_symbols([(s, -1) for _seg, s in changes.closed.values()])
        if changes.opened:
            db.executemany(
                "insert or replace into orders values(?, ?, ?, ?, ?, ?, ?)",
                ((i, seg, o.symbol, o.side, o.price, o.size, o.tau) for i, (seg, o) in changes.opened.items()))
            self._count_symbols([(o.symbol, 1) for _seg, o in changes.opened.values()])
        if changes.tombs:
            db.executemany("insert or replace into tombs values(?, ?, ?)",
                           ((i, seg, tau) for i, (seg, tau) in changes.tombs.items()))
        if changes.expire_before is not None:
            db.execute("delete from tombs where tau <= ?", (changes.expire_before,))
        if with_levels and changes.levels:
            gone = [key for key, (amount, _n) in changes.levels.items() if amount == 0]
            db.executemany("delete from levels where symbol = ? and side = ? and price = ?", gone)
            db.executemany("insert or replace into levels values(?, ?, ?, ?, ?)",
                           ((s, side, p, str(a), n) for (s, side, p), (a, n) in changes.levels.items() if a != 0))

    def _count_symbols(self, deltas: list[tuple[str, int]]) -> None:
        totals: dict[str, int] = {}
        for symbol, delta in deltas:
            totals[symbol] = totals.get(symbol, 0) + delta
        self.db.executemany(
            "insert into symbols values(?1, ?2) on conflict(symbol) do update set orders = orders + ?2",
            totals.items())
        self.db.execute("delete from symbols where orders <= 0")

    def load(self, segments: Iterable[tuple[int, Changes]], journal: Iterable[tuple[int, str, Changes]],
             chunk_versions: dict[int, int], pending_levels: dict[tuple[str, int, int], tuple[int, int]],
             seq: int, token: str) -> None:
        """Rebuild from the state: segment snapshots, then the journal entries each
        segment has not seen, then the published levels (all open orders minus the
        effects not published yet, ``pending_levels``)."""
        db = self.db
        self.reset()
        db.execute("begin")
        try:
            for _segment, chunk in segments:
                self._write(chunk, with_levels=False)
            for entry_seq, _token, changes in journal:
                fresh = Changes(
                    opened={i: v for i, v in changes.opened.items() if entry_seq > chunk_versions.get(v[0], -1)},
                    closed={i: v for i, v in changes.closed.items() if entry_seq > chunk_versions.get(v[0], -1)},
                    tombs={i: v for i, v in changes.tombs.items() if entry_seq > chunk_versions.get(v[0], -1)},
                    expire_before=changes.expire_before, levels={},
                )
                self._write(fresh, with_levels=False)
            levels: dict[tuple[str, int, int], list[int]] = {}
            for symbol, side, price, size in db.execute("select symbol, side, price, size from orders"):
                level = levels.setdefault((symbol, side, price), [0, 0])
                level[0] += size
                level[1] += 1
            for key, (amount, orders) in pending_levels.items():
                level = levels.setdefault(key, [0, 0])
                level[0] -= amount
                level[1] -= orders
            db.executemany("insert into levels values(?, ?, ?, ?, ?)",
                           ((s, side, p, str(a), n) for (s, side, p), (a, n) in levels.items() if a))
            self._set_version(seq, token)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise

    # ------------------------------------------------------------------ reads
    def lookup(self, ids: Iterable[int]) -> tuple[dict[int, StoredOrder], dict[int, int]]:
        """Open orders and tombstones (id -> tau) among ``ids``."""
        ids = list(ids)
        orders: dict[int, StoredOrder] = {}
        tombs: dict[int, int] = {}
        for start in range(0, len(ids), _LOOKUP_SLICE):
            chunk = ids[start:start + _LOOKUP_SLICE]
            marks = ",".join("?" * len(chunk))
            for i, symbol, side, price, size, tau in self.db.execute(
                    f"select id, symbol, side, price, size, tau from orders where id in ({marks})", chunk):
                orders[i] = StoredOrder(symbol, side, price, size, tau)
            tombs.update(self.db.execute(f"select id, tau from tombs where id in ({marks})", chunk))
        return orders, tombs

    def symbol_orders(self) -> dict[str, int]:
        return dict(self.db.execute("select symbol, orders from symbols"))

    def levels_of(self, keys: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[int, int]]:
        out = {}
        for key in keys:
            row = self.db.execute(
                "select amount, orders from levels where symbol = ? and side = ? and price = ?", key).fetchone()
            if row is not None:
                out[key] = (int(row[0]), row[1])
        return out

    def best_levels(self, symbol: str, side: int, limit: int) -> list[tuple[int, int, int]]:
        """``(price, amount, orders)`` of the ``limit`` best published levels of a side."""
        order = "desc" if side == BUY else "asc"
        return [(p, int(a), n) for p, a, n in self.db.execute(
            f"select price, amount, orders from levels where symbol = ? and side = ? order by price {order} limit ?",
            (symbol, side, limit))]

    def sides(self) -> set[tuple[str, int]]:
        return set(self.db.execute("select distinct symbol, side from levels"))

    def open_orders(self) -> int:
        return self.db.execute("select coalesce(sum(orders), 0) from levels").fetchone()[0]

    def rows(self) -> int:
        return (self.db.execute("select count(*) from orders").fetchone()[0]
                + self.db.execute("select count(*) from tombs").fetchone()[0])

    def segment(self, seg: int) -> tuple[dict[int, StoredOrder], dict[int, int]]:
        orders = {i: StoredOrder(s, side, p, size, tau) for i, s, side, p, size, tau in self.db.execute(
            "select id, symbol, side, price, size, tau from orders where seg = ?", (seg,))}
        tombs = dict(self.db.execute("select id, tau from tombs where seg = ?", (seg,)))
        return orders, tombs


def index_path(directory: Path, stream_id: str, partition: int) -> Path:
    return Path(directory) / stream_id / f"state-partition-{partition}.sqlite"


def forget_other_streams(directory: Path, stream_id: str, older_than_s: float = 86_400) -> None:
    """Remove index files of other checkpoints not touched for a day (a checkpoint that
    was deleted leaves its index behind)."""
    import shutil
    import time

    root = Path(directory)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name != stream_id and entry.is_dir():
            try:
                if time.time() - entry.stat().st_mtime > older_than_s:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass


__all__ = ["BUY", "SELL", "Changes", "OrderIndex", "StoredOrder", "forget_other_streams", "index_path"]
