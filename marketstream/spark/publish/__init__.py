"""Where the topics are written, from the driver, once per batch: the query's
``foreachBatch`` publisher and its Kafka transaction (``publisher``), the batch's rows
turned into records (``batch_output``), the state partitions' parts combined into one
snapshot a second (``combine``), de-duplication against the topics' tails
(``topic_tail``), what each batch published (``figures``), and the query listener and
Prometheus figures that report it (``listener``, ``job_metrics``)."""
