"""Power-trading desk: exchange and market-data emulators, trade listener and loader,
the energy database, the reference-price ETL and the desk's PnL (see README.md here)."""
