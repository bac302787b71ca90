"""Load measurements run by hand (`python -m tests.benchmarks.ack_load`), not by pytest."""
