"""Order-book reference CLI.

    python -m marketstream.orderbook replay FILE [--depth N] [--summary]

Replays a CSV (the official sample's columns) or JSON-lines file in file order and prints
the final book in the snapshot format (``--summary`` prints counts to stderr too).
"""

from __future__ import annotations

import argparse
import sys

from marketstream.orderbook.render import levels_to_json, render_book
from marketstream.orderbook.replay import replay_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.orderbook")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="replay an event file and print the final book")
    replay.add_argument("file")
    replay.add_argument("--depth", type=int, default=15, help="levels per side, 0 = all (default 15)")
    replay.add_argument("--summary", action="store_true", help="print counts to stderr")
    args = parser.parse_args(argv)

    if args.depth < 0:
        parser.error("--depth must be 0 (all levels) or positive")
    try:
        book, rejected = replay_file(args.file)
    except OSError as exc:
        parser.error(f"cannot read {args.file}: {exc.strerror}")
    print(levels_to_json(render_book(book, args.depth)))
    if args.summary or rejected:
        s = book.stats
        print(
            f"open orders: {book.open_count}; opened {s.opened}, closed {s.closed}, "
            f"duplicate opens {s.duplicate_opens}, duplicate closes {s.duplicate_closes}, "
            f"closes before open {s.closes_before_open}, opens after close {s.opens_after_close}, "
            f"rejected {len(rejected)}",
            file=sys.stderr,
        )
        for exc in rejected[:20]:
            print(f"rejected: {exc.reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
