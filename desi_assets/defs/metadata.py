"""Metadata helpers shared by every layer's assets: plots inline beside their full-size file."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from desi_assets.plots import png_markdown


def plot_metadata(path: Path | str | None, name: str = "plot", width_px: int = 480) -> dict[str, dg.MetadataValue]:
    """`{name: inline PNG (Markdown), name_path: full-size file}`; empty when there is no plot."""
    if not path or not Path(path).exists():
        return {}
    return {name: dg.MetadataValue.md(png_markdown(path, width_px, title=name)),
            f"{name}_path": dg.MetadataValue.path(str(path))}
