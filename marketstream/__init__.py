"""Shared logic of the market-data streaming platform."""

import logging

# kafka-python 3 logs every connection and metadata refresh at INFO; what operators read
# are our own lines. Its warnings and errors still show.
logging.getLogger("kafka").setLevel(logging.WARNING)
