"""``python -m marketstream.book`` (console script ``marketstream.book``): the book at any
second.

    at TIME [--symbol S] [--depth N] [--format table|json|csv]
    range FROM TO [--symbol S] [--format csv|parquet|json] [--output FILE]
    explain TIME --symbol S --side buy_3 [--format table|json]

TIME is ISO-8601 with ``Z`` or an offset (``2026-12-06T14:03:27Z``) or epoch seconds.
A second comes from the snapshot topic, or from the exports once the topic no longer
holds it; the first line (or the JSON's ``source``) says which, and whether the second
was recovered (published late, after the job came back). ``range`` includes both ends.
Errors go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from marketstream.book import render
from marketstream.book.core import BookError, book_at, book_range, explain
from marketstream.book.times import parse_time, show
from marketstream.exports.formats import FORMATS


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _depth(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of levels a side (0 = all)")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m marketstream.book", description="The order book at any second.")
    commands = top.add_subparsers(dest="command", required=True)
    at = commands.add_parser("at", help="the book of one second")
    at.add_argument("time", type=_time, metavar="TIME")
    at.add_argument("--symbol")
    at.add_argument("--depth", type=_depth, default=0, help="levels a side to show (default: all published)")
    at.add_argument("--format", choices=["table", "json", "csv"], default="table")

    span = commands.add_parser("range", help="every second from FROM to TO (both included), gaps reported")
    span.add_argument("start", type=_time, metavar="FROM")
    span.add_argument("end", type=_time, metavar="TO")
    span.add_argument("--symbol")
    span.add_argument("--format", choices=[f.name for f in FORMATS], default="csv")
    span.add_argument("--output", "-o", help="file to write (default: standard output; required for parquet "
                                             "on a terminal)")

    why = commands.add_parser("explain", help="the open orders behind one level of one second")
    why.add_argument("time", type=_time, metavar="TIME")
    why.add_argument("--symbol", required=True)
    why.add_argument("--side", required=True, help="buy_N or sell_N (1 = best price)")
    why.add_argument("--format", choices=["table", "json"], default="table")
    return top


def _runs(seconds: list[int]) -> str:
    """``14:03:27Z .. 14:03:31Z, 14:05:00Z`` for a list of seconds."""
    runs: list[list[int]] = []
    for second in seconds:
        if runs and second == runs[-1][1] + 1:
            runs[-1][1] = second
        else:
            runs.append([second, second])
    shown = [show(a) if a == b else f"{show(a)} .. {show(b)} ({b - a + 1} s)" for a, b in runs[:20]]
    return ", ".join(shown) + (f" and {len(runs) - 20} more run(s)" if len(runs) > 20 else "")


def _write(data: bytes, output: str | None) -> None:
    if output:
        with open(output, "wb") as handle:
            handle.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from marketstream.settings import load_settings

    settings = load_settings()
    if args.command == "at":
        book = book_at(settings, args.time)
        if args.symbol and args.symbol not in book.symbols():
            raise BookError(f"unknown symbol {args.symbol!r} at {show(book.second)}: the book holds "
                            f"{', '.join(book.symbols()) or 'no symbol (it is empty)'}")
        out = {"table": render.table, "json": render.as_json, "csv": render.as_csv}[args.format]
        sys.stdout.write(out(book, args.symbol, args.depth))
        if args.format != "table":
            print(book.describe(), file=sys.stderr)
    elif args.command == "range":
        found = book_range(settings, args.start, args.end + 1)
        if args.symbol and all(args.symbol not in s.symbols() for s in found.seconds):
            raise BookError(f"unknown symbol {args.symbol!r}: no second of the range has it")
        if args.format == "parquet" and not args.output and sys.stdout.isatty():
            raise BookError("Parquet is binary: give --output FILE (or redirect standard output)")
        export_format = next(f for f in FORMATS if f.name == args.format)
        _write(export_format.render(render.range_messages(found.seconds, args.symbol)), args.output)
        sources = sorted({s.source for s in found.seconds})
        print(f"{len(found.seconds)} of {found.end - found.start} second(s) from the {' and the '.join(sources)}; "
              f"{len(found.recovered)} recovered{': ' + _runs(found.recovered) if found.recovered else ''}",
              file=sys.stderr)
        if found.gaps:
            print(f"gaps ({len(found.gaps)} s): {_runs(found.gaps)}", file=sys.stderr)
        if found.duplicated:
            print(f"published twice with different books (first kept): {_runs(found.duplicated)}", file=sys.stderr)
    else:
        result = explain(settings, args.time, args.symbol, args.side)
        sys.stdout.write(render.explanation(result) if args.format == "table" else render.explanation_json(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except BookError as exc:
        print(f"book: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
