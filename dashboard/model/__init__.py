"""What the dashboard's pages show, computed from what ``dashboard/sources.py`` read: pure
functions, no I/O, so every number a user reads is tested without a browser, a broker,
a database or a disk. One module per page: ``book``, ``health``, ``exports``."""
