"""Calibration metrics of posterior summaries against truth: interval coverage, bias and scatter (pure numpy).

Used by the stellar-population validation, the fast path's calibration and the tests. Every function
ignores rows where any input is NaN (a failed fit carries NaN percentiles).
"""

from __future__ import annotations

import itertools

import numpy as np

#: Scatter estimator: 1.4826 × median absolute deviation (robust σ of a Gaussian).
MAD_TO_SIGMA = 1.4826


def _finite(*arrays: np.ndarray) -> np.ndarray:
    ok = np.ones(np.shape(arrays[0]), bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, dtype=np.float64))
    return ok


def coverage(truth: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction (0–1) of finite rows with lo ≤ truth ≤ hi; NaN when no row is finite."""
    t, a, b = (np.asarray(x, dtype=np.float64) for x in (truth, lo, hi))
    ok = _finite(t, a, b)
    if not ok.any():
        return float("nan")
    return float(np.mean((t[ok] >= a[ok]) & (t[ok] <= b[ok])))


def coverage_error(n: int, p: float = 0.68) -> float:
    """Binomial 1σ of a coverage fraction p measured on n independent rows."""
    return float(np.sqrt(p * (1 - p) / max(n, 1)))


def robust_scatter(x: np.ndarray) -> float:
    """1.4826 × MAD of the finite values (same units as x); NaN when empty."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def bias_scatter(truth: np.ndarray, p50: np.ndarray, snr: np.ndarray | None = None,
                 bins: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Median bias and robust scatter of p50 − truth (units of the inputs, e.g. dex), per S/N bin.

    bins are S/N edges (len m+1); without them one bin holds every row. Returns arrays of length m:
    lo, hi (edges), n, bias (median of p50 − truth), scatter (1.4826 MAD), rms, outlier_frac (|Δ| > 3·scatter).
    """
    t, p = np.asarray(truth, dtype=np.float64), np.asarray(p50, dtype=np.float64)
    s = np.zeros_like(t) if snr is None else np.asarray(snr, dtype=np.float64)
    edges = np.array([-np.inf, np.inf]) if bins is None else np.asarray(bins, dtype=np.float64)
    ok = _finite(t, p, s)
    d = p - t
    cols: dict[str, list] = {k: [] for k in ("lo", "hi", "n", "bias", "scatter", "rms", "outlier_frac")}
    for lo, hi in itertools.pairwise(edges):
        m = ok & (s >= lo) & (s < hi)
        dm = d[m]
        sc = robust_scatter(dm)
        cols["lo"].append(lo), cols["hi"].append(hi), cols["n"].append(int(m.sum()))
        cols["bias"].append(float(np.median(dm)) if dm.size else np.nan)
        cols["scatter"].append(sc)
        cols["rms"].append(float(np.sqrt(np.mean(dm**2))) if dm.size else np.nan)
        cols["outlier_frac"].append(float(np.mean(np.abs(dm - np.median(dm)) > 3 * sc)) if dm.size and sc > 0
                                    else np.nan)
    return {k: np.asarray(v) for k, v in cols.items()}


def dex_scatter(a: np.ndarray, b: np.ndarray, take_log10: bool = False) -> dict[str, float]:
    """Agreement of two methods on the same objects in dex: n, median offset (a − b), robust scatter.

    a and b are logarithmic already (logmass) or, with take_log10, positive linear values (SFR, age in Gyr).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if take_log10:
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = np.log10(np.where(a > 0, a, np.nan)), np.log10(np.where(b > 0, b, np.nan))
    ok = _finite(a, b)
    d = a[ok] - b[ok]
    return {"n": int(ok.sum()), "offset": float(np.median(d)) if d.size else float("nan"),
            "scatter": robust_scatter(d)}


def coverage_table(truth: dict[str, np.ndarray], summaries: dict[str, np.ndarray],
                   params: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per parameter: n, coverage of [p16, p84] and of [p2.5, p97.5] (summaries keyed "{p}_p16" etc.)."""
    out = {}
    for p in params:
        t = np.asarray(truth[p], dtype=np.float64)
        ok = _finite(t, summaries[f"{p}_p16"], summaries[f"{p}_p84"])
        out[p] = {"n": int(ok.sum()),
                  "cov68": coverage(t, summaries[f"{p}_p16"], summaries[f"{p}_p84"]),
                  "cov95": coverage(t, summaries[f"{p}_p2_5"], summaries[f"{p}_p97_5"])}
    return out
