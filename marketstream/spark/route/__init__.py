"""The shuffle between the read tasks and the state partitions: order events parsed and
routed to the state partition of their order id as they are read (``parse``), the routed
rows' schema and how they are built and read back (``rows``), and the keys that decide
where a row goes (``keys``: the state partition of an order id, and Spark's own hash of
the grouping key)."""
