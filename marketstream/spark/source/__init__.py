"""Where the input topic is read: the Python Kafka data source (``python_source``: offsets
in Spark's checkpoint, batch ranges and their read tasks, the retention and lost-input
checks), the record-batch decoder its read tasks use (``record_decoder``), and the read
through Spark's own JVM Kafka connector when it is on the classpath (``jvm_source``).
Both yield the routed rows of ``route``."""
