"""The mock survey's truth tables: one truth-<pixel>.parquet beside each coadd (polars)."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def read_truth_columns(root: str | Path | None, columns: list[str] | None = None) -> pl.DataFrame | None:
    """Every truth-*.parquet row under an archive root, with those of `columns` each file has; None if none."""
    if not root or not Path(root).is_dir():
        return None
    files = sorted(Path(root).rglob("truth-*.parquet"))
    if not files:
        return None
    frames = [pl.read_parquet(f) for f in files]
    if columns is not None:
        frames = [f.select([c for c in columns if c in f.columns]) for f in frames]
    return pl.concat(frames, how="diagonal_relaxed")
