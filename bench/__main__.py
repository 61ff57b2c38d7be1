"""``make bench`` / ``python -m bench [NAME ...]``: run the benchmarks one after the other.

Each is a module with its own command line (see its docstring) and writes its figures to
``bench/results/``; the reports that quote them are ``bench/REPORT*.md``. They are run as
separate processes, one at a time, so that none measures while another loads the machine.

    python -m bench                       # core, energy_pipeline, book, spark_orderbook, kafka_paths (~120 min)
    python -m bench core spark_orderbook  # a selection
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "core": "order-book core and order emulator (~2 min)",
    "energy_pipeline": "trade listener and loader against PostgreSQL (~5 min)",
    "state_copy": "the working copy in a state server or in the Python worker, 50,000 events/s (~5 min)",
    "book": "python -m marketstream.book at: one second from the topic and from a day of exports (~5 min)",
    "spark_orderbook": "the Spark job: seed load, rates, raw read, 2M backlog on 1 and 2 cores, 10M open orders, 10 kills (~75 min)",
    "kafka_paths": "the two Kafka connectors, the read tasks' decoder against librdkafka (~20 min)",
}


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"=== bench.{name}: {BENCHMARKS[name]}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
