"""The nine bias controls on arrays: strata, the merged two-score statistics and the bounds a suite checks.

Each control returns a :class:`ControlOutcome`: the :class:`bias.ControlResult` (every statistic,
thresholds, verdict, rule), the statistics a validation suite bounds, and those bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from desi_assets.science.anomaly import bias, scoring

#: The scores whose bias the correlation controls test (score_local has no per-arm split to test B-dominance on).
CONTROL_SCORES = ("score", "score_noise_aware")
STRATA_RULE = "program × SPECTYPE × S/N quintile"


@dataclass
class ControlOutcome:
    """A control's full result, the statistics a suite bounds, and their [low, high] bounds (None = open)."""

    result: bias.ControlResult
    stats: dict[str, float]
    bounds: dict[str, tuple[float | None, float | None]]


def strata_of(program: np.ndarray, spectype: np.ndarray, snr: np.ndarray | None = None,
              snr_bins: int = 0) -> np.ndarray:
    """Stratum label per row: program × SPECTYPE (× S/N quantile bin within that, when snr_bins > 0)."""
    def clean(a):
        return np.array(["?" if v is None else str(v) for v in np.asarray(a, dtype=object)])
    lab = np.char.add(np.char.add(clean(program), "|"), clean(spectype))
    if snr_bins:
        snr = np.asarray(snr, dtype=float)
        q = np.zeros(len(lab), dtype=int)
        for key in np.unique(lab):
            m = lab == key
            r = bias.within_strata_ranks(snr[m], None)
            ok = np.isfinite(r)
            if ok.sum() >= snr_bins:
                edges = np.quantile(r[ok], np.linspace(0, 1, snr_bins + 1)[1:-1])
                q[np.flatnonzero(m)[ok]] = np.searchsorted(edges, r[ok])
        lab = np.char.add(np.char.add(lab, "|snr"), q.astype(str))
    return lab


def significant_rho(res: bias.ControlResult) -> dict[str, float]:
    """|ρ| of each covariate where significant (p <= P_SIGNIFICANT), else 0: the statistic a suite bounds."""
    out = {}
    for k, v in res.statistic.items():
        if k.startswith("rho_") or k == "rho":
            p = res.statistic.get(k.replace("rho", "p", 1), res.statistic.get("p_value", 1.0))
            out[f"sig_abs_{k}"] = abs(v) if p <= bias.P_SIGNIFICANT else 0.0
    return out


def _merge(name: str, parts: dict[str, bias.ControlResult], threshold, passed: bool, rule: str) -> bias.ControlResult:
    return bias.ControlResult(name, {f"{k}_{c}": v for c, r in parts.items() for k, v in r.statistic.items()},
                              threshold, passed, rule)


def class_balance(spectype: np.ndarray, tol: float) -> ControlOutcome:
    """Class fractions of the training set, each within ±tol of 1/3 (fractions)."""
    res = bias.class_balance(spectype, tol=tol)
    stats = {k: v for k, v in res.statistic.items() if k.startswith("frac_")}
    return ControlOutcome(res, stats, {k: (1 / 3 - tol, 1 / 3 + tol) for k in stats})


def wavelength(scores: dict[str, np.ndarray], z: np.ndarray, strata: np.ndarray, rho_max: float,
               max_ratio: float) -> ControlOutcome:
    """Within-stratum trend of each normal-spectrum score (percentile ranks) with redshift."""
    zr = bias.within_strata_ranks(z, strata)
    stats, bounds, parts, ok = {}, {}, {}, True
    for col, s in scores.items():
        sr = bias.within_strata_ranks(s, strata) + 0.5  # percentile in (0, 1)
        res = bias.wavelength_invariance(sr, zr, rho_max=rho_max, max_quintile_ratio=max_ratio)
        parts[col] = res
        stats[f"sig_abs_rho_{col}"] = significant_rho(res)["sig_abs_rho"]
        stats[f"quintile_median_ratio_{col}"] = res.statistic["quintile_median_ratio"]
        bounds[f"sig_abs_rho_{col}"] = (0.0, rho_max)
        bounds[f"quintile_median_ratio_{col}"] = (1 / max_ratio, max_ratio)
        ok &= res.passed
    merged = _merge(
        "wavelength_invariance", parts,
        {"rho_max": rho_max, "p_significant": bias.P_SIGNIFICANT, "max_quintile_ratio": max_ratio}, ok,
        f"Normal spectra, both scores, within strata of {STRATA_RULE} (percentile ranks): "
        f"fail when |Spearman ρ(score, z)| ≥ {rho_max:g} with p ≤ {bias.P_SIGNIFICANT:g}, or when the median score "
        f"percentile of the top-z quintile differs from the bottom-z quintile by more than ×{max_ratio:g}.")
    return ControlOutcome(merged, stats, bounds)


def unit_raw(flux: np.ndarray, ivar: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw binned flux and ivar (float64, flux units) back from normalised rows and their per-row norm."""
    norm = np.asarray(norm, np.float64)[:, None]
    return np.asarray(flux, np.float64) * norm, np.asarray(ivar, np.float64) / norm**2


def flux_scale(model, raw: np.ndarray, raw_ivar: np.ndarray, tol: float,
               make_score_fn: Callable = scoring.make_score_fn) -> ControlOutcome:
    """score(k·f) vs score(f) for k in {1e-3, 1e3}; ivar scales as 1/k² for the noise-aware score."""
    res = bias.scale_invariance(make_score_fn(model, "score"), raw, tol=tol)
    stats = {"max_rel_diff_score": res.statistic["max_rel_diff"]}
    worst_na = 0.0
    base = make_score_fn(model, "score_noise_aware", raw_ivar)(raw)
    for k in (1e-3, 1e3):
        sk = make_score_fn(model, "score_noise_aware", raw_ivar / k**2)(raw * k)
        rel = np.abs(np.asarray(sk, float) - base) / np.maximum(np.abs(base), 1e-30)
        worst_na = max(worst_na, float(np.nanmax(rel)) if rel.size else 0.0)
    stats["max_rel_diff_score_noise_aware"] = worst_na
    res.statistic.update(stats)
    res.passed = bool(res.passed and worst_na < tol)
    return ControlOutcome(res, stats, {k: (0.0, tol) for k in stats})


def noise_level(model, raw: np.ndarray, raw_ivar: np.ndarray, masked_frac: np.ndarray, threshold: float,
                noise_threshold: float, max_increase: float, seed: int = 0) -> ControlOutcome:
    """Anomaly-rate increase (fraction) of normal spectra after one extra ivar noise draw, for both scores."""
    parts = {}
    for col, thr in (("score", threshold), ("score_noise_aware", noise_threshold)):
        fn = scoring.make_score_fn(model, col, raw_ivar, masked_frac)
        parts[col] = bias.noise_stability(fn, raw, raw_ivar, thr, np.random.default_rng(seed),
                                          max_increase=max_increase)
    merged = _merge(
        "noise_level", parts, {"max_increase": max_increase, "threshold": threshold,
                               "noise_aware_threshold": noise_threshold},
        parts["score_noise_aware"].passed,
        parts["score"].description + " Pass/fail on the noise-aware score at its calibrated threshold; the seed "
        "score's increase at its threshold is reported (it is noise-sensitive by construction).")
    stats = {"increase_score_noise_aware": parts["score_noise_aware"].statistic["increase"]}
    return ControlOutcome(merged, stats, {"increase_score_noise_aware": (None, max_increase)})


def stratified_corr(name: str, scores: dict[str, np.ndarray], strata: np.ndarray, rho_max: float,
                    fn: Callable[[np.ndarray], bias.ControlResult]) -> ControlOutcome:
    """A correlation control (fn of the within-stratum score ranks) run on each score and merged."""
    stats, parts = {}, {}
    for col, s in scores.items():
        res = fn(bias.within_strata_ranks(s, strata))
        parts[col] = res
        stats.update({f"{k}_{col}": v for k, v in significant_rho(res).items()})
    first = next(iter(parts.values()))
    merged = _merge(name, parts, first.threshold, all(r.passed for r in parts.values()),
                    first.description + " Normal spectra, both scores, ranks within " + STRATA_RULE.replace("S/N ", "S/N-") + " strata.")
    bounds = {k: (0.0, rho_max) for k in stats if k.startswith("sig_abs_rho")}
    if "ks_min_p_bonferroni" in first.statistic:
        min_p = first.threshold["min_bonferroni_p"]
        for col, r in parts.items():
            stats[f"ks_min_p_bonferroni_{col}"] = r.statistic["ks_min_p_bonferroni"]
            bounds[f"ks_min_p_bonferroni_{col}"] = (min_p, None)
    return ControlOutcome(merged, stats, bounds)


def sky_position(scores, strata, ra, dec, rho_max: float) -> ControlOutcome:
    """Score vs RA, Dec, Galactic b (degrees) within strata."""
    return stratified_corr("sky_position", scores, strata, rho_max,
                           lambda s: bias.sky_position(s, ra, dec, rho_max, strata=strata))


def fiber(scores, strata, fiber_number: np.ndarray, rho_max: float, min_bonferroni_p: float) -> ControlOutcome:
    """Score vs FIBER and per-petal KS within strata (rows with a negative FIBER are left out)."""
    ok = np.asarray(fiber_number) >= 0
    return stratified_corr("fiber", scores, strata, rho_max,
                           lambda s: bias.fiber_control(s[ok], np.asarray(fiber_number)[ok], rho_max,
                                                        min_bonferroni_p=min_bonferroni_p))


def observation_date(scores, strata, mjd: np.ndarray, rho_max: float) -> ControlOutcome:
    """Score vs mean MJD (days) within strata."""
    mjd_ranks = bias.within_strata_ranks(mjd, strata)
    return stratified_corr("observation_date", scores, strata, rho_max,
                           lambda s: bias.observation_date(s, mjd_ranks, rho_max))


def b_dominance(model, flux: np.ndarray, ivar: np.ndarray, masked_frac: np.ndarray, seed: int = 0,
                abs_margin: float = 0.10, n_sigma: float = 3.0) -> bias.ControlResult:
    """B-dominance control on preprocessed rows, with the catalogue's reconstruction and masked-bin handling."""
    bad = np.asarray(masked_frac) > 0
    return bias.b_band_dominance(flux, scoring.reconstruct_masked(model, flux, bad), np.where(bad, 0.0, ivar),
                                 np.random.default_rng(seed), abs_margin=abs_margin, n_sigma=n_sigma)


def b_dominance_outcome(res: bias.ControlResult) -> ControlOutcome:
    """The noise-aware |observed − expected| B-dominant fraction, bounded by its margin."""
    m = res.statistic["margin_score_noise_aware"]
    return ControlOutcome(res, {"abs_diff_noise_aware": res.statistic["abs_diff_noise_aware"]},
                          {"abs_diff_noise_aware": (0.0, m)})


def injection_recovery(reports: dict[str, dict], min_recovery: float) -> ControlOutcome:
    """Best overall recovery (fraction) at FPR ≤ max_fpr over the scores' reports, bounded below by min_recovery."""
    res = bias.injection_recovery(reports, min_recovery=min_recovery)
    return ControlOutcome(res, {"best": res.statistic["best"]}, {"best": (min_recovery, 1.0)})
