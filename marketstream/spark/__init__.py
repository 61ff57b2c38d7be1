"""The Spark Structured Streaming order-book job: Kafka I/O through PySpark's Python Data
Source API, the stateful processor, the progress listener and the job's Spark settings.

Nothing here imports Airflow; ``config`` is cheap to import (no pyspark at import time)."""
