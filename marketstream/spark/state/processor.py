"""The stateful processor (``transformWithState``, Row API) of one state partition of the
order book: a thin adapter from Spark's rows and state to the partition's state server
(``server``), which does the work (``partition``) on its working copy.

State per grouping key (one key per state partition), layout ``STATE_LAYOUT``: one map,
``journal``, with journal entries at their sequence number (>= 0), segment snapshots at
``-1 - segment`` and the partition's bookkeeping (``meta.Meta``, JSON text) at
``META_KEY``. One state variable, not a value next to the map: Spark's Python state API
builds a variable's encoders (analysis, code generation) in every task, tens of ms each.
Every state call is a round trip to the JVM; a batch makes a handful, whatever its size.

Time mode: "None" when the input has the Python source's heartbeat (every state partition
gets it in every batch, and its tick is the batch's second, in the offset log); the JVM
connector has no heartbeat, so "ProcessingTime" with a timer that calls each partition in
every batch (``timers``). Processing-time mode costs every task two more round trips and
an expired-timer query.

Output rows (``PART_SCHEMA``), published from the driver (``publish``): ``part`` (one
published second, this partition's best levels as column arrays), ``dead`` (dead letters,
``dead_letters.COLUMNS``) and ``info`` (the batch's gap and counts).
"""

from __future__ import annotations

import json
from typing import Iterator

from pyspark.sql import Row
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import (
    ArrayType, BinaryType, BooleanType, IntegerType, LongType, StringType, StructField, StructType,
)

from marketstream.spark import dead_letters
from marketstream.spark.route.rows import HEARTBEAT, ROUTED_COLUMNS
from marketstream.spark.state.partition import INFO, PART, PartitionConfig, PartitionOutput
from marketstream.spark.state.server import Servers, StateServerClient, run_batch


PART_SCHEMA = StructType([
    StructField("kind", StringType(), False),
    StructField("state_partition", IntegerType(), False),
    # part
    StructField("second", LongType()), StructField("sequence", LongType()), StructField("recovered", BooleanType()),
    StructField("input_offsets", StringType()), StructField("open_orders", LongType()),
    StructField("symbols", ArrayType(StringType())), StructField("sides", ArrayType(IntegerType())),
    StructField("prices", ArrayType(LongType())), StructField("amounts", ArrayType(StringType())),
    # dead
    StructField("partitions", ArrayType(IntegerType())), StructField("offsets", ArrayType(LongType())),
    StructField("reasons", ArrayType(StringType())), StructField("codes", ArrayType(StringType())),
    StructField("values", ArrayType(BinaryType())),
    # info
    StructField("gap_first", LongType()), StructField("gap_last", LongType()), StructField("stats", StringType()),
])
_FIELDS = [f.name for f in PART_SCHEMA.fields]

# The state's layout: a checkpoint made with another one cannot be read (``job``
# checks before the query starts). 1: a ``meta`` value next to the ``journal`` map, time
# mode "ProcessingTime" for every connector.
STATE_LAYOUT = 2
META_KEY = -(2**63)  # below every segment's key
_META_TOKEN = "meta"

# Schemas as StructTypes, not DDL strings: the client would ask the JVM to parse a string
# in every batch.
_JOURNAL_KEY = StructType([StructField("seq", LongType())])
_JOURNAL_VALUE = StructType([StructField("token", StringType()), StructField("data", StringType())])


def time_mode(timers: bool) -> str:
    return "ProcessingTime" if timers else "None"


class _SparkState:
    """``partition.StateBackend`` over the processor's state variable."""

    def __init__(self, journal):
        self.journal = journal

    def meta_get(self):
        value = self.journal.getValue((META_KEY,))
        return value[1] if value is not None else None

    def meta_put(self, text):
        self.journal.updateValue((META_KEY,), (_META_TOKEN, text))

    def journal_get(self, seq):
        value = self.journal.getValue((seq,))
        return tuple(value) if value is not None else None

    def journal_put(self, seq, token, text):
        self.journal.updateValue((seq,), (token, text))

    def journal_remove(self, seq):
        self.journal.removeKey((seq,))

    def chunks(self):
        return ((-1 - key[0], int(value[0]), value[1]) for key, value in self.journal.iterator()
                if META_KEY < key[0] < 0)

    def chunk_put(self, segment, version, text):
        self.journal.updateValue((-1 - segment,), (str(version), text))


def _row(kind: str, state_partition: int, **values) -> Row:
    return Row(**{name: values.get(name) for name in _FIELDS} | {"kind": kind, "state_partition": state_partition})


def output_rows(index: int, out: PartitionOutput) -> Iterator[Row]:
    for part in out.parts:
        yield _row(PART, index, second=part.second, sequence=part.sequence, recovered=part.recovered,
                   input_offsets=json.dumps({str(p): o for p, o in sorted(part.input_offsets.items())}),
                   open_orders=part.open_orders, symbols=[lv[0] for lv in part.levels],
                   sides=[lv[1] for lv in part.levels], prices=[lv[2] for lv in part.levels],
                   amounts=[str(lv[3]) for lv in part.levels])
    if out.dead_letters:
        yield _row(dead_letters.KIND, index, **dead_letters.to_columns(out.dead_letters))
    last = out.parts[-1] if out.parts else None
    yield _row(INFO, index, gap_first=out.gap[0] if out.gap else None, gap_last=out.gap[1] if out.gap else None,
               second=last.second if last else None, open_orders=last.open_orders if last else None,
               stats=json.dumps(out.stats, separators=(",", ":")))


class OrderStateProcessor(StatefulProcessor):
    """``labels``: the grouping-key value of each state partition (index -> label);
    ``timers``: keep a timer for the next batch (the JVM connector, which sends no
    heartbeat row, would otherwise leave partitions without input uncalled; the query's
    time mode is then ``time_mode(True)``);
    ``servers``: where the partitions' state servers listen and how much memory each may take."""

    def __init__(self, config: PartitionConfig, labels: list[int], timers: bool, servers: Servers):
        self.config, self.timers = config, timers
        self.index_of = {label: index for index, label in enumerate(labels)}
        self.servers = servers

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.state = _SparkState(handle.getMapState("journal", _JOURNAL_KEY, _JOURNAL_VALUE))

    def handleInputRows(self, key, rows, timerValues) -> Iterator[Row]:
        index = self.index_of[int(key[0])]
        routed = [{name: row[name] for name in ROUTED_COLUMNS} for row in rows]
        yield from self._run(index, routed, batch_time_ms(routed, timerValues.getCurrentProcessingTimeInMs()))

    def handleExpiredTimer(self, key, timerValues, expiredTimerInfo) -> Iterator[Row]:
        # In a batch where the partition also had input, the input call published
        # already and this one finds nothing due.
        yield from self._run(self.index_of[int(key[0])], [], timerValues.getCurrentProcessingTimeInMs())

    def _run(self, index: int, routed: list[dict], now_ms: int) -> Iterator[Row]:
        client = _client(self.servers, index)
        out = run_batch(client, self.state, self.config, index, routed, now_ms)
        self._next_timer(now_ms)
        yield from output_rows(index, out)

    def _next_timer(self, now_ms: int) -> None:
        if not self.timers:
            return
        for timer in list(self.handle.listTimers()):
            self.handle.deleteTimer(timer)
        self.handle.registerTimer(now_ms + 1)

    def close(self) -> None:
        pass


def batch_time_ms(routed: list[dict], processing_time_ms: int) -> int:
    """The batch's processing time: the heartbeat's tick (the second the Python source took
    the batch's offsets, kept in the offset log: the same in every replay) when there is
    one, else Spark's (the JVM connector; -1 in time mode "None")."""
    for row in routed:
        if row["kind"] == HEARTBEAT and row["offsets"]:
            return row["offsets"][0] * 1000
    if processing_time_ms < 0:
        raise ValueError("a batch without the Python source's heartbeat in time mode \"None\": no batch time")
    return processing_time_ms


# One client per state server, per Python worker process (a worker runs many tasks).
_CLIENTS: dict[str, StateServerClient] = {}


def _client(servers: Servers, index: int) -> StateServerClient:
    key = f"{servers.directory}/{index}"
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = servers.client(index)
    return client
