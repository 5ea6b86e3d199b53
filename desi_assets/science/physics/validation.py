"""Fit-vs-truth statistics for the physics layer: fractional bias and robust scatter in bins of S/N."""

from __future__ import annotations

import numpy as np

#: S/N per Å bin edges of the validation curves.
SNR_EDGES = (2.0, 5.0, 10.0, 15.0, 25.0, 1e9)


def robust_stats(frac: np.ndarray) -> tuple[float, float, int]:
    """Median, 1.4826·MAD and count of the finite values of a fractional error (dimensionless)."""
    frac = np.asarray(frac, dtype=np.float64)
    frac = frac[np.isfinite(frac)]
    if frac.size == 0:
        return float("nan"), float("nan"), 0
    med = float(np.median(frac))
    return med, float(1.4826 * np.median(np.abs(frac - med))), int(frac.size)


def bias_curve(fit: np.ndarray, true: np.ndarray, snr: np.ndarray, edges=SNR_EDGES) -> dict[str, np.ndarray]:
    """(fit − true)/true per S/N bin: x (median S/N), bias, scatter, n; bins without rows dropped."""
    fit, true, snr = (np.asarray(a, dtype=np.float64) for a in (fit, true, snr))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (fit - true) / true
    out = {k: [] for k in ("x", "bias", "scatter", "n")}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (snr >= lo) & (snr < hi) & np.isfinite(frac)
        b, s, n = robust_stats(frac[m])
        if n:
            out["x"].append(float(np.median(snr[m])))
            out["bias"].append(b)
            out["scatter"].append(s)
            out["n"].append(n)
    return {k: np.asarray(v) for k, v in out.items()}
