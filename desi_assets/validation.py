"""Great Expectations suites over frames of rows or of computed statistics (GX imported lazily)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Between:
    """Every value of `column` lies in [min_value, max_value] (either bound may be None)."""

    column: str
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class NotNull:
    """No nulls in `column`."""

    column: str


@dataclass(frozen=True)
class Unique:
    """Values of `column` are unique."""

    column: str


@dataclass(frozen=True)
class InSet:
    """Every value of `column` is one of `values`."""

    column: str
    values: tuple


@dataclass
class SuiteResult:
    """Outcome of one suite: overall success and one line per expectation."""

    success: bool
    details: list[dict[str, Any]]

    def failures(self) -> list[dict[str, Any]]:
        """The expectations that failed."""
        return [d for d in self.details if not d["success"]]


@functools.lru_cache(maxsize=1)
def _context():
    os.environ.setdefault("TQDM_DISABLE", "1")
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in CLI/run logs
    asset = ctx.data_sources.add_pandas("desi_ard").add_dataframe_asset("frame")
    return gx, asset.add_batch_definition_whole_dataframe("whole")


def _expectation(gx, e):
    E = gx.expectations
    if isinstance(e, Between):
        return E.ExpectColumnValuesToBeBetween(column=e.column, min_value=e.min_value, max_value=e.max_value)
    if isinstance(e, NotNull):
        return E.ExpectColumnValuesToNotBeNull(column=e.column)
    if isinstance(e, Unique):
        return E.ExpectColumnValuesToBeUnique(column=e.column)
    if isinstance(e, InSet):
        return E.ExpectColumnValuesToBeInSet(column=e.column, value_set=list(e.values))
    raise TypeError(f"unknown expectation {e!r}")


def run_suite(name: str, frame: pd.DataFrame | dict[str, float], expectations: list) -> SuiteResult:
    """Validate a frame (or one row of statistics given as a dict) against expectations."""
    gx, batch_def = _context()
    df = pd.DataFrame([frame]) if isinstance(frame, dict) else frame
    suite = gx.ExpectationSuite(name=name)
    for e in expectations:
        suite.add_expectation(_expectation(gx, e))
    res = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    details = []
    for r in res.results:
        cfg = r.expectation_config
        details.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"), "success": bool(r.success),
                        "unexpected": (r.result or {}).get("partial_unexpected_list", [])[:5]})
    return SuiteResult(bool(res.success), details)
