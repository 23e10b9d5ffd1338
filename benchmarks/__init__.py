"""Benchmarks: run from the repository root as `python -m benchmarks.<name>` (a script path would let
benchmarks/data_pipeline.py shadow the data_pipeline package)."""
