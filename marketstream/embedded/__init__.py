"""The one-machine stack of ``make run`` and ``make demo``: the in-memory broker (Tansu),
``airflow standalone`` configured for the project, the banner of what runs where, and the
demo trigger. Nothing else depends on this package."""
