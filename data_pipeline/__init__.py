"""Ingest FER benchmarks into Parquet with a manifest (Ray Data), and the embedded synthetic set."""
