"""Benchmarks (run with ``python -m bench.<name>``); each writes its figures to bench/results/."""
