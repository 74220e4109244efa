"""Benchmarks of lit_transfer: speed, memory and paper-style quality tables (``python -m benchmarks.run``)."""
