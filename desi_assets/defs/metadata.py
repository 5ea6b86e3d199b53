"""Metadata helpers shared by every layer's assets: plots inline beside their full-size file.

In the Dagster UI (1.13) the inline plot is the metadata entry's "[Show Markdown]" link on the asset
page: it opens a dialog with the image (data: URIs pass the UI's Markdown sanitizer; Markdown over
1,000 characters is always behind that link). desi_assets_tests/e2e/test_ui.py clicks it and checks
the image; 480 px wide fits the dialog without a scroll bar.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from desi_assets.plots import png_markdown


def plot_metadata(path: Path | str | None, name: str = "plot", width_px: int = 480) -> dict[str, dg.MetadataValue]:
    """`{name: inline PNG (Markdown), name_path: full-size file}`; empty when there is no plot."""
    if not path or not Path(path).exists():
        return {}
    return {name: dg.MetadataValue.md(png_markdown(path, width_px, title=name)),
            f"{name}_path": dg.MetadataValue.path(str(path))}


def median_metadata(df: pl.DataFrame, col: str) -> float | None:
    """Median of a column's non-null values, rounded to 4 decimals; None when it has none (or no such column)."""
    v = df[col].drop_nulls() if col in df.columns else pl.Series([])
    return round(float(v.median()), 4) if v.len() else None
