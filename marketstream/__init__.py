"""Shared logic of the market-data streaming platform."""
