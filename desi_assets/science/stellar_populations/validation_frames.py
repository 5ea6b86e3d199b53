"""Mock-truth frames for the stellar-population validation: read truth, compare posteriors per method (polars+numpy).

The metrics themselves (coverage, bias and scatter) are `coverage.py`'s; this module joins frames, picks the
space each parameter is compared in (dex for SFR, age and Z; log M☉ and mag as stored) and summarises.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from desi_assets.science.stellar_populations import coverage as cov
from desi_assets.science.truth import float_column, read_truth_columns

#: Table parameter -> mock truth column (sources.mock: logmass surviving total, SFR over 100 Myr, mass-weighted
#: age in Gyr, A_V in mag, Z/Z☉).
TRUTH_COLUMNS = {"logmass": "logmass", "sfr": "sfr", "age_mw": "age_gyr", "dust_av": "av", "zmet": "zmet_zsun"}
#: Parameters compared in dex (log10 of the stored linear value).
LOG_PARAMS = ("sfr", "age_mw", "zmet")
#: Smallest SFR (M☉/yr) taken into log10: a truncated history's SFR is 0, its log is pinned here.
SFR_FLOOR = 1e-3
#: Posterior percentile suffixes and the percentiles they stand for.
PERCENTILES = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}
#: Intervals between successive percentiles (and the tails) and the fraction of truths a calibrated posterior
#: puts in each.
PIT_EDGES = ["<2.5", "2.5–16", "16–50", "50–84", "84–97.5", ">97.5"]
PIT_EXPECTED = np.diff([0.0, 0.025, 0.16, 0.5, 0.84, 0.975, 1.0])
#: Truth SFH kinds the fit's delayed-τ prior cannot represent (the tension flag's targets).
MISFIT_KINDS = ("frosted", "quenched")


def read_truth(root: str | None) -> pl.DataFrame | None:
    """Galaxy truth rows (targetid, {param}_true, sfh_kind, dn4000/hdelta_a true) under an archive root, or None."""
    t = read_truth_columns(root, ["targetid", "spectype", "sfh_kind", "dn4000", "hdelta_a", *TRUTH_COLUMNS.values()])
    if t is None or "logmass" not in t.columns:
        return None
    if "spectype" in t.columns:
        t = t.filter(pl.col("spectype") == "GALAXY")
    if "sfh_kind" not in t.columns:
        t = t.with_columns(pl.lit("delayed_tau").alias("sfh_kind"))
    return t.rename({v: f"{k}_true" for k, v in TRUTH_COLUMNS.items() if v in t.columns}
                    | {c: f"{c}_true" for c in ("dn4000", "hdelta_a") if c in t.columns}).drop("spectype",
                                                                                               strict=False)


def compared(param: str, x: np.ndarray) -> np.ndarray:
    """Values in the space the validation compares them in: log10 (SFR floored at SFR_FLOOR) or as stored."""
    x = np.asarray(x, dtype=np.float64)
    if param not in LOG_PARAMS:
        return x
    floor = SFR_FLOOR if param == "sfr" else 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(x), np.log10(np.maximum(x, floor)), np.nan)


def points(df: pl.DataFrame, param: str) -> dict[str, np.ndarray]:
    """truth and every percentile of one parameter (compared space) for rows joined to the truth."""
    out = {"truth": compared(param, float_column(df, f"{param}_true"))}
    out |= {q: compared(param, float_column(df, f"{param}_{q}")) for q in PERCENTILES}
    return out


def pit_fractions(p: dict[str, np.ndarray]) -> np.ndarray:
    """Fraction of truths in each interval of PIT_EDGES (rows with a truth and all percentiles)."""
    qs = np.column_stack([p[q] for q in PERCENTILES])
    ok = np.isfinite(p["truth"]) & np.isfinite(qs).all(axis=1)
    if not ok.any():
        return np.full(len(PIT_EXPECTED), np.nan)
    idx = (p["truth"][ok, None] > qs[ok]).sum(axis=1)
    return np.bincount(idx, minlength=len(PIT_EXPECTED)) / ok.sum()


def _one(truth: np.ndarray, p50: np.ndarray) -> tuple[float, float, int]:
    """(median bias, robust scatter, n) of p50 − truth over all finite rows."""
    r = cov.bias_scatter(truth, p50)
    return float(r["bias"][0]), float(r["scatter"][0]), int(r["n"][0])


def method_summary(df: pl.DataFrame, snr_min: float, snr_edges: list[float]) -> tuple[dict, dict]:
    """Per parameter of one method's truth-joined ok rows: bias/scatter above snr_min, coverage, bias vs S/N.

    Returns (numbers, curves): numbers[param] = {n, n_snr, bias, scatter, coverage_68, coverage_95,
    coverage_68_all, coverage_95_all}: bias, scatter and coverage_68/95 over the rows above snr_min (the issue's
    targets are quoted at S/N > 10), the _all coverages over every S/N (at S/N ≲ 2 the posterior is mostly the
    prior, so those measure how well the prior describes the population); curves[param] = coverage.bias_scatter's
    per-bin arrays over snr_edges (compared space: dex for SFR/age/Z, log M☉, mag).
    """
    snr = float_column(df, "snr")
    numbers, curves = {}, {}
    for param in TRUTH_COLUMNS:
        p = points(df, param)
        hi = snr > snr_min
        b, s, n = _one(p["truth"][hi], p["p50"][hi])
        numbers[param] = {"n": int(np.isfinite(p["truth"] + p["p50"]).sum()), "n_snr": n, "bias": b, "scatter": s,
                          "coverage_68": cov.coverage(p["truth"][hi], p["p16"][hi], p["p84"][hi]),
                          "coverage_95": cov.coverage(p["truth"][hi], p["p2_5"][hi], p["p97_5"][hi]),
                          "coverage_68_all": cov.coverage(p["truth"], p["p16"], p["p84"]),
                          "coverage_95_all": cov.coverage(p["truth"], p["p2_5"], p["p97_5"])}
        curves[param] = {k: v.tolist() for k, v in cov.bias_scatter(p["truth"], p["p50"], snr, snr_edges).items()}
    return numbers, curves


def agreement(fast: pl.DataFrame, bagpipes: pl.DataFrame) -> dict[str, dict]:
    """Fast path against Bagpipes on the shared rows, per parameter: n, median offset and scatter of p50
    (fast − Bagpipes, compared space)."""
    both = fast.join(bagpipes, on=["coadd_key", "targetid"], how="inner", suffix="_bp")
    return {param: cov.dex_scatter(compared(param, float_column(both, f"{param}_p50")),
                                   compared(param, float_column(both, f"{param}_p50_bp"))) for param in TRUTH_COLUMNS}


def tension_scores(flag: np.ndarray, sfh_kind: np.ndarray, kinds: tuple[str, ...] = MISFIT_KINDS) -> dict:
    """Completeness and purity of the tension flag for the truth SFH kinds the prior cannot represent."""
    f = np.asarray([bool(x) if x is not None else False for x in flag])
    target = np.isin(np.asarray(sfh_kind, dtype=object).astype(str), kinds)
    tp = int((f & target).sum())
    return {"flagged": int(f.sum()), "targets": int(target.sum()), "true_positives": tp,
            "completeness": tp / target.sum() if target.any() else float("nan"),
            "purity": tp / f.sum() if f.any() else float("nan")}


def log_ssfr(logmass: np.ndarray, sfr: np.ndarray) -> np.ndarray:
    """log10(SFR / M*) in yr⁻¹ (SFR floored at SFR_FLOOR M☉/yr)."""
    return compared("sfr", sfr) - np.asarray(logmass, dtype=np.float64)


def check_outcomes(numbers: dict, max_logmass_scatter: float, max_logmass_bias: float, max_age_scatter: float,
                   coverage_target: float, coverage_tol: float, min_galaxies: int) -> dict[str, tuple[bool, dict]]:
    """Each check's verdict and figures from the fast path's numbers (method_summary); too few galaxies fail."""
    m, a = numbers["logmass"], numbers["age_mw"]
    enough = m["n_snr"] >= min_galaxies
    cov68 = {p: v["coverage_68"] for p, v in numbers.items()}
    bad = [p for p, c in cov68.items() if not (np.isfinite(c) and abs(c - coverage_target) <= coverage_tol)]
    worst = max(cov68.values(), key=lambda c: abs(c - coverage_target) if np.isfinite(c) else np.inf)
    return {
        "stellar_pop_logmass_scatter": (bool(enough and m["scatter"] <= max_logmass_scatter),
                                        {"logmass_scatter_dex": m["scatter"], "n_galaxies": m["n_snr"]}),
        "stellar_pop_logmass_bias": (bool(enough and abs(m["bias"]) <= max_logmass_bias),
                                     {"logmass_bias_dex": m["bias"], "n_galaxies": m["n_snr"]}),
        "stellar_pop_age_scatter": (bool(a["n_snr"] >= min_galaxies and a["scatter"] <= max_age_scatter),
                                    {"age_scatter_dex": a["scatter"], "n_galaxies": a["n_snr"]}),
        "stellar_pop_fast_coverage": (bool(not bad and enough),
                                      {"calibration_worst_coverage_68": worst,
                                       **{f"coverage_68_{p}": c for p, c in cov68.items()}, "outside": bad,
                                       "n_galaxies": m["n_snr"],
                                       "coverage_68_binomial_sigma": cov.coverage_error(m["n_snr"], coverage_target),
                                       **{f"coverage_68_all_snr_{p}": v["coverage_68_all"] for p, v in numbers.items()},
                                       "n_galaxies_all_snr": m["n"]}),
    }
