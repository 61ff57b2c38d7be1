"""Scheduled exports of the snapshot topic (the ``orderbook_export`` DAG's two tasks).

- ``layout``: where the files of an interval live and what they are called, atomic
  writes, the listing of exported intervals (exporter, validator and dashboard);
- ``formats``: the output formats (JSON, CSV, Parquet), each one entry of ``FORMATS``;
- ``exporter``: the ``export`` task: an interval's snapshots, once final, to every format;
- ``validation``: the ``validate`` task: the files checked and reconciled with the input.
"""
