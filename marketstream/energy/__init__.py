"""Power-trading desk: exchange and market-data emulators, trade listener and loader,
the energy database and the reference-price ETL (see SPEC.md, pipeline 2)."""
