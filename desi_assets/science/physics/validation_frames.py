"""Mock-truth frames for the physics validation: read truth parquet files, join, summarise (polars + numpy)."""

from __future__ import annotations

import numpy as np
import polars as pl

from desi_assets.science.physics.fit import LINE_NAMES
from desi_assets.science.physics.validation import bias_curve, robust_stats
from desi_assets.science.truth import float_column, read_truth_columns

TRUTH_COLUMNS = ["targetid", "vdisp", "gas_sigma_kms", "dn4000"] + [f"flux_{n}" for n in LINE_NAMES]


def read_truth(root: str | None) -> pl.DataFrame | None:
    """All truth-*.parquet rows under an archive root (the mock writes one per pixel), or None if there are none."""
    t = read_truth_columns(root, TRUTH_COLUMNS)
    return None if t is None else t.rename({"vdisp": "vdisp_true", "gas_sigma_kms": "gas_sigma_true",
                                               "dn4000": "dn4000_true"}, strict=False)


def physics_curves(fits: pl.DataFrame, idx: pl.DataFrame, floor_kms: float, min_line_snr: float = 5.0
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Bias curves vs S/N (σ* above the floor, gas σ, lines > min_line_snr σ, Dn4000) and S/N > 10 summary numbers."""
    ok = fits.filter(pl.col("status") == "ok")
    snr = float_column(ok, "snr_per_a")
    tv = float_column(ok, "vdisp_true")
    above = tv > floor_kms
    curves = {"σ*": bias_curve(float_column(ok, "vdisp")[above], tv[above], snr[above]),
              "gas σ": bias_curve(float_column(ok, "gas_sigma"), float_column(ok, "gas_sigma_true"), snr)}
    fit_l, true_l, snr_l = [], [], []
    for n in LINE_NAMES:
        if f"flux_{n}_true" not in ok.columns or n in ("oiii_4959", "nii_6548"):
            continue
        f, e, t = float_column(ok, f"flux_{n}"), float_column(ok, f"flux_{n}_err"), float_column(ok, f"flux_{n}_true")
        m = (f / e > min_line_snr) & (t > 0)
        fit_l.append(f[m]), true_l.append(t[m]), snr_l.append(snr[m])
    if fit_l:
        curves[f"line flux (> {min_line_snr:g}σ)"] = bias_curve(np.concatenate(fit_l), np.concatenate(true_l),
                                                                np.concatenate(snr_l))
    hi = snr >= 10
    vb, vs, vn = robust_stats(((float_column(ok, "vdisp") - tv) / tv)[hi & above])
    lb, ls, ln = robust_stats(np.concatenate([(f - t) / t for f, t, s in zip(fit_l, true_l, snr_l)]) if fit_l
                              else np.zeros(0))
    io = idx.filter(pl.col("status") == "ok")
    dd = float_column(io, "dn4000_corr") - float_column(io, "dn4000_true")
    summary = {"fits_ok_with_truth": ok.height, "vdisp_bias_snr_gt10": round(vb, 4), "vdisp_scatter_snr_gt10":
               round(vs, 4), "vdisp_n_snr_gt10": vn, "line_flux_bias_gt5sigma": round(lb, 4),
               "line_flux_scatter_gt5sigma": round(ls, 4), "line_n_gt5sigma": ln,
               "dn4000_corr_minus_truth_median": round(float(np.nanmedian(dd)), 4) if np.isfinite(dd).any() else None,
               "vdisp_floor_kms": floor_kms}
    return curves, {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
