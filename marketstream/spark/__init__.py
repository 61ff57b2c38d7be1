"""The Spark Structured Streaming order-book job, one room per idea:

- ``source/``: where the input topic is read (the Python data source, its record decoder,
  the JVM connector's read);
- ``route/``: parsing in the read tasks and the shuffle to the state partitions (rows,
  keys, Spark's hash);
- ``state/``: where the state lives and the book of second S is computed (the stateful
  processor, a partition's batch, the snapshot clock, the working copy and its server);
- ``publish/``: where the topics are written (the driver's transactional publisher,
  combining parts into snapshots, de-duplication, batch figures, the listener);
- ``dead_letters``: every dead letter the job makes; ``kafka_clients``: the processes'
  cached consumers;
- ``job``: the wiring; ``config``: the spark-submit command and Spark settings (cheap to
  import: no pyspark); ``supervision``: restarts; ``class_archive``: the driver's class
  archive.

Nothing here imports Airflow."""
