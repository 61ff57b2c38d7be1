"""The order-book streaming job (Spark Structured Streaming).

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit spark_apps/orderbook_job.py

Settings come from the environment (KAFKA_BOOTSTRAP_SERVERS, ORDERS_TOPIC, ORDERBOOK_TOPIC,
DEADLETTER_TOPIC, METRICS_TOPIC, BOOK_DEPTH, BOOK_MAX_SYMBOLS, ORDERBOOK_STATE_PARTITIONS,
SPARK_CHECKPOINT_DIR, SPARK_MASTER, SPARK_MAX_EVENTS_PER_BATCH, SNAPSHOT_BACKFILL_MAX_SECONDS,
CLOSED_ID_TTL_SECONDS, ...; see ``marketstream/settings.py``); ``marketstream.spark.config.submit_command`` builds the
full command with the recommended ``--conf`` pairs. A restart with the same checkpoint
directory resumes where the last committed batch ended. Exits non-zero with the query's
error when the query dies.
"""

import logging
import sys

from marketstream.settings import get_settings
from marketstream.spark.job import build_session, start_query


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # py4j logs two INFO lines for every callback (the progress listener: every second).
    logging.getLogger("py4j").setLevel(logging.WARNING)
    settings = get_settings()
    spark = build_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    query, publisher = start_query(spark, settings)
    try:
        query.awaitTermination()  # raises StreamingQueryException: spark-submit exits non-zero
    finally:
        publisher.close()  # the last batch's metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
