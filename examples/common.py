"""Shared bits of the science-case examples: arguments, the mock's truth tables, figure paths."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from desi_assets.science.truth import read_truth_columns


def parse_args(doc: str) -> argparse.Namespace:
    """--lakehouse (default: the `make demo` one) and --out (figures directory)."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--lakehouse", default=None, help="lakehouse root (default $DESI_ARD_LAKEHOUSE or ./lakehouse)")
    p.add_argument("--out", default="examples/figures", help="directory for the figures")
    return p.parse_args()


def mock_truth(root: str) -> pl.DataFrame | None:
    """The mock survey's truth rows (targetid, anomaly_class, ...) when the lakehouse holds its archive."""
    return read_truth_columns(Path(root) / "archive")


def need(db, columns: list[str], what: str) -> bool:
    """True when the catalog has a value in every column; otherwise print which layer columns are missing."""
    empty = [c for c in columns if c not in db.columns or db.query(f"{c} is not null", columns=[c], limit=1).height == 0]
    if empty:
        print(f"skipping {what}: no values yet in {', '.join(empty)} (their layer has not been materialized)")
        return False
    return True


def out_path(out: str, name: str) -> Path:
    """Figure path under the output directory (created)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out) / name
