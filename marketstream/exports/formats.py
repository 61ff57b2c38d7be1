"""The export formats. Each is one ``ExportFormat`` in ``FORMATS``: the exporter writes
every one, the validator checks every one against the JSON, the dashboard offers every
one for download. A new format is a render function, a ``lines`` function and an entry here.

- JSON: an array of ``{"snapshot_time", "sequence", "recovered", "book"}``, one per line,
  ``book`` being the published value verbatim (the snapshot format, exact decimals);
- CSV: one row per level with its snapshot's time, sequence and ``recovered`` flag;
- Parquet: the CSV's rows and columns, typed: a UTC timestamp, integers, a boolean and
  exact ``decimal(38, 18)`` numbers.

Rendering depends only on the snapshots, so an interval exported again is byte-identical.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterator, Sequence

from marketstream.orderbook.events import format_decimal
from marketstream.orderbook.message import SnapshotMessage, format_snapshot_time


@dataclass(frozen=True)
class ExportFormat:
    name: str  # the file suffix
    label: str  # what users see
    media_type: str
    render: Callable[[Sequence[SnapshotMessage]], bytes]
    # The file as text lines, to name the first place where two files of this format differ.
    lines: Callable[[bytes], list[str]]


LEVEL_COLUMNS = ("snapshot_time", "sequence", "recovered", "symbol", "side", "price", "amount", "total", "cum_sum")


def _flag(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------- JSON


def render_json(snapshots: Sequence[SnapshotMessage]) -> str:
    if not snapshots:
        return "[]\n"
    rows = [
        f'{{"snapshot_time":{json.dumps(format_snapshot_time(m.snapshot_time))},'
        f'"sequence":{m.sequence},"recovered":{_flag(m.recovered)},"book":{m.value}}}'
        for m in snapshots
    ]
    return "[\n" + ",\n".join(rows) + "\n]\n"


def _text_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines()


JSON = ExportFormat("json", "JSON", "application/json", lambda snapshots: render_json(snapshots).encode(), _text_lines)


# ---------------------------------------------------------------- CSV


def level_rows(snapshots: Sequence[SnapshotMessage]) -> Iterator[tuple]:
    """One tuple per level, in ``LEVEL_COLUMNS`` order, with exact ``Decimal`` numbers."""
    for message in snapshots:
        for level in message.levels():
            yield (message.snapshot_time, message.sequence, message.recovered, level.symbol, level.side,
                   level.price, level.amount, level.total, level.cum_sum)


def render_csv(snapshots: Sequence[SnapshotMessage]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LEVEL_COLUMNS)
    for when, sequence, recovered, symbol, side, *numbers in level_rows(snapshots):
        writer.writerow([format_snapshot_time(when), sequence, _flag(recovered), symbol, side,
                         *(format_decimal(n) for n in numbers)])
    return buffer.getvalue()


CSV = ExportFormat("csv", "CSV", "text/csv", lambda snapshots: render_csv(snapshots).encode(), _text_lines)


# ---------------------------------------------------------------- Parquet

# 20 integer and 18 decimal digits: exact for any price, amount and total the order book
# holds in practice; a number that does not fit is refused, never rounded.
PARQUET_DECIMAL = (38, 18)


def _parquet_schema():
    import pyarrow as pa

    number = pa.decimal128(*PARQUET_DECIMAL)
    return pa.schema([
        # Parquet has no seconds unit: milliseconds, always whole seconds here.
        ("snapshot_time", pa.timestamp("ms", tz="UTC")), ("sequence", pa.int64()), ("recovered", pa.bool_()),
        ("symbol", pa.string()), ("side", pa.string()),
        ("price", number), ("amount", number), ("total", number), ("cum_sum", number),
    ])


def _fits(value: Decimal, where: str) -> Decimal:
    precision, scale = PARQUET_DECIMAL
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent > scale or value.adjusted() >= precision - scale:
        raise ValueError(f"{where}: {value} does not fit Parquet's decimal{PARQUET_DECIMAL} exactly")
    return value


def render_parquet(snapshots: Sequence[SnapshotMessage]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    columns: list[list] = [[] for _ in LEVEL_COLUMNS]
    for row in level_rows(snapshots):
        where = f"{format_snapshot_time(row[0])} {row[3]} {row[4]}"
        row = (row[0] * 1000, *row[1:])
        for column, value in zip(columns, row):
            column.append(_fits(value, where) if isinstance(value, Decimal) else value)
    table = pa.table([pa.array(values, field.type) for values, field in zip(columns, schema)], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _parquet_lines(data: bytes) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # One thread: Arrow's reader threads can abort the process at exit
        # (apache/arrow#34314), and an export is small.
        table = pq.read_table(io.BytesIO(data), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a Parquet file: {exc}") from None
    lines = [",".join(table.column_names)]
    for row in table.to_pylist():
        lines.append(",".join(
            format_decimal(v) if isinstance(v, Decimal) else _flag(v) if isinstance(v, bool)
            else f"{v:%Y-%m-%dT%H:%M:%SZ}" if hasattr(v, "strftime") else str(v)
            for v in row.values()
        ))
    return lines


PARQUET = ExportFormat("parquet", "Parquet", "application/vnd.apache.parquet", render_parquet, _parquet_lines)


# JSON first: the validator reads it and checks the others against it.
FORMATS: tuple[ExportFormat, ...] = (JSON, CSV, PARQUET)
