"""Build the order-book job's driver class archive against a temporary Apache Kafka node.

    python -m marketstream.embedded.class_archive        # writes SPARK_CLASS_ARCHIVE

(``marketstream.spark.class_archive`` does the work; ``make install`` runs this.)
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from marketstream.embedded.apache_kafka import ApacheKafka
from marketstream.settings import get_settings
from marketstream.spark.class_archive import ArchiveNotBuilt, build

log = logging.getLogger("marketstream.spark.class_archive")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m marketstream.embedded.class_archive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to write it (default: SPARK_CLASS_ARCHIVE)")
    args = parser.parse_args(argv)
    settings = get_settings()
    out = args.out or settings.spark_class_archive
    started = time.monotonic()
    try:
        build(settings, out, ApacheKafka)
    except (ArchiveNotBuilt, OSError, subprocess.SubprocessError, TimeoutError) as exc:
        log.error("no class archive built (the job starts without one, only slower): %s", exc)
        return 1
    log.info("class archive %s (%.0f MB) built in %.0f s", out, out.stat().st_size / 1e6, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
