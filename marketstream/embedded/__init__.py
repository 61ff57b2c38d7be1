"""The one-machine stack of ``make run`` and ``make demo``: Apache Kafka (one KRaft node),
``airflow standalone`` configured for the project, the banner of what runs where, and the
demo trigger. Nothing else depends on this package."""
