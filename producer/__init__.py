"""Order-event emulator (run as ``python -m producer``)."""
