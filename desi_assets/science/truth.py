"""The mock survey's truth tables (one truth-<pixel>.parquet beside each coadd) and joined-frame helpers (polars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def float_column(df: pl.DataFrame, col: str) -> np.ndarray:
    """A frame column as float64 with NaN for nulls; all NaN when the frame lacks it."""
    return df[col].cast(pl.Float64).fill_null(np.nan).to_numpy() if col in df.columns else np.full(df.height, np.nan)
