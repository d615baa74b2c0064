"""Reproducible torch training on pinned data snapshots, with its lineage in MLflow."""
