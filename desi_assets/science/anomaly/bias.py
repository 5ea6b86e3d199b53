"""Statistics of the nine anomaly-detector bias controls; each returns a :class:`ControlResult`.

Correlation rule (used by wavelength, sky, fiber and date controls): a Spearman correlation
fails only when it is both material (|ρ| ≥ the bound) and significant (p ≤ 0.01). A tiny but
significant ρ on a large sample passes (negligible effect); a large ρ on a small, noisy sample
that is not significant passes too, and its description says so ("not significant").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.stats import ks_2samp, spearmanr

from desi_assets.science.anomaly.scoring import DOMINANT_FRAC, score_spectra

P_SIGNIFICANT = 0.01


@dataclass
class ControlResult:
    """One bias control: name, statistics (floats), threshold(s), pass flag, and what was tested."""

    name: str
    statistic: dict[str, float]
    threshold: dict[str, float] | float
    passed: bool
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly)."""
        return asdict(self)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    n = int(m.sum())
    if n < 3 or np.ptp(x[m]) == 0 or np.ptp(y[m]) == 0:
        return 0.0, 1.0, n
    r = spearmanr(x[m], y[m])
    return float(r.statistic), float(r.pvalue), n


def within_strata_ranks(x: np.ndarray, strata: np.ndarray | None) -> np.ndarray:
    """Percentile rank (0-1, centred on 0) of x within each stratum; NaN stays NaN.

    Pooling these ranks over strata and taking a Spearman ρ gives the within-stratum rank
    correlation: a trend that exists only because the mix of strata (program, class, S/N)
    changes with the covariate is removed, a trend inside the strata is kept.
    """
    x = np.asarray(x, dtype=np.float64)
    if strata is None:
        return x
    out = np.full(x.shape, np.nan)
    st = np.asarray(strata).astype(str)
    for key in np.unique(st):
        m = (st == key) & np.isfinite(x)
        n = int(m.sum())
        if n >= 2:
            from scipy.stats import rankdata

            out[m] = rankdata(x[m]) / (n + 1) - 0.5
    return out


def _corr_ok(rho: float, p: float, bound: float) -> bool:
    return bool(abs(rho) < bound or p > P_SIGNIFICANT)


def class_balance(spectype: np.ndarray, classes=("GALAXY", "QSO", "STAR"), tol: float = 0.02) -> ControlResult:
    """Training-set class fractions each within ±tol of 1/len(classes) (fractions)."""
    st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))
    n = max(st.size, 1)
    fr = {c: float(np.sum(st == c) / n) for c in classes}
    target = 1.0 / len(classes)
    dev = max(abs(v - target) for v in fr.values())
    stat = {f"frac_{c.lower()}": v for c, v in fr.items()} | {"max_abs_deviation": float(dev), "n": float(st.size)}
    return ControlResult(
        "class_balance", stat, {"target": target, "tol": tol}, bool(dev <= tol),
        f"Each class fraction of the training set within ±{tol} of 1/{len(classes)}.",
    )


def wavelength_invariance(
    score: np.ndarray, z: np.ndarray, rho_max: float = 0.1, max_quintile_ratio: float = 1.5,
) -> ControlResult:
    """Spearman ρ(score, z) for normal spectra plus an effect size: median score ratio of top vs bottom z quintile."""
    rho, p, n = _spearman(score, z)
    s = np.asarray(score, float)
    zz = np.asarray(z, float)
    m = np.isfinite(s) & np.isfinite(zz)
    if m.sum() >= 10:
        q20, q80 = np.quantile(zz[m], [0.2, 0.8])
        lo_med = float(np.median(s[m][zz[m] <= q20]))
        hi_med = float(np.median(s[m][zz[m] >= q80]))
        ratio = hi_med / lo_med if lo_med > 0 else float("inf")
    else:
        ratio = 1.0
    ratio_ok = (1.0 / max_quintile_ratio) <= ratio <= max_quintile_ratio
    passed = _corr_ok(rho, p, rho_max) and ratio_ok
    return ControlResult(
        "wavelength_invariance",
        {"rho": rho, "p_value": p, "n": float(n), "quintile_median_ratio": float(ratio)},
        {"rho_max": rho_max, "p_significant": P_SIGNIFICANT, "max_quintile_ratio": max_quintile_ratio},
        passed,
        "Score of normal spectra vs redshift: fail if |ρ| ≥ 0.1 and p ≤ 0.01, or if the median score "
        f"of the highest-z quintile differs from the lowest-z quintile by more than ×{max_quintile_ratio}"
        + ("" if p <= P_SIGNIFICANT or abs(rho) < rho_max else " (ρ not significant: small sample)") + ".",
    )


def scale_invariance(
    score_fn: Callable[[np.ndarray], np.ndarray], flux: np.ndarray, ks=(1e-3, 1e3), tol: float = 1e-5,
) -> ControlResult:
    """Max relative difference |s(k·f) − s(f)|/|s(f)| over k in ks (score_fn includes normalisation)."""
    flux = np.asarray(flux)
    base = np.asarray(score_fn(flux), dtype=np.float64)
    stat: dict[str, float] = {}
    worst = 0.0
    denom = np.maximum(np.abs(base), 1e-30)
    for k in ks:
        sk = np.asarray(score_fn((flux * k).astype(flux.dtype)), dtype=np.float64)
        rel = np.abs(sk - base) / denom
        v = float(np.nanmax(rel)) if rel.size else 0.0
        if not np.all(np.isfinite(sk) == np.isfinite(base)):
            v = float("inf")
        stat[f"max_rel_diff_k={k:g}"] = v
        worst = max(worst, v)
    stat["max_rel_diff"] = worst
    return ControlResult(
        "flux_scale_invariance", stat, tol, bool(worst < tol),
        f"score(k·flux) equals score(flux) to relative {tol:g} for k in {list(ks)}.",
    )


def noise_stability(
    score_fn: Callable[[np.ndarray], np.ndarray], flux: np.ndarray, ivar: np.ndarray, threshold: float,
    rng: np.random.Generator, max_increase: float = 0.01,
) -> ControlResult:
    """Increase of the anomaly rate (fraction) of normal spectra after adding N(0, 1/ivar) noise (ivar>0 bins)."""
    flux = np.asarray(flux)
    ivar = np.asarray(ivar, dtype=np.float64)
    sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
    noisy = (flux + rng.standard_normal(flux.shape) * sigma).astype(flux.dtype)
    r0 = float(np.mean(np.asarray(score_fn(flux)) > threshold))
    r1 = float(np.mean(np.asarray(score_fn(noisy)) > threshold))
    inc = r1 - r0
    return ControlResult(
        "noise_level", {"rate_clean": r0, "rate_noisy": r1, "increase": inc},
        {"max_increase": max_increase, "score_threshold": float(threshold)}, bool(inc < max_increase),
        "Adding Gaussian noise drawn from each spectrum's own ivar raises the anomaly rate of normal "
        f"spectra by < {100 * max_increase:g} percentage point(s).",
    )


def _corr_control(name: str, score: np.ndarray, covariates: dict[str, np.ndarray], rho_max: float, what: str) -> ControlResult:
    stat: dict[str, float] = {}
    ok = True
    notes = []
    for key, x in covariates.items():
        rho, p, n = _spearman(score, x)
        stat[f"rho_{key}"], stat[f"p_{key}"] = rho, p
        stat["n"] = float(n)
        ok &= _corr_ok(rho, p, rho_max)
        if abs(rho) >= rho_max and p > P_SIGNIFICANT:
            notes.append(f"|ρ_{key}| ≥ {rho_max} but not significant (small sample)")
    desc = (f"Spearman ρ of score vs {what}: fail when |ρ| ≥ {rho_max} and p ≤ {P_SIGNIFICANT}."
            + (" " + "; ".join(notes) + "." if notes else ""))
    return ControlResult(name, stat, {"rho_max": rho_max, "p_significant": P_SIGNIFICANT}, bool(ok), desc)


def sky_position(score: np.ndarray, ra: np.ndarray, dec: np.ndarray, rho_max: float = 0.05,
                 strata: np.ndarray | None = None) -> ControlResult:
    """Spearman ρ of score vs RA, Dec and Galactic latitude b (deg, astropy); within strata when given."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    b = SkyCoord(ra=np.asarray(ra, float) * u.deg, dec=np.asarray(dec, float) * u.deg, frame="icrs").galactic.b.deg
    cov = {k: within_strata_ranks(v, strata) for k, v in (("ra", ra), ("dec", dec), ("gal_b", b))}
    return _corr_control("sky_position", within_strata_ranks(score, strata), cov, rho_max,
                         "RA, Dec and Galactic latitude" + (" (within strata)" if strata is not None else ""))


def fiber_control(
    score: np.ndarray, fiber: np.ndarray, rho_max: float = 0.05, min_bonferroni_p: float = 0.01,
    fibers_per_petal: int = 500,
) -> ControlResult:
    """Spearman ρ(score, FIBER) and per-petal two-sample KS (petal vs rest) with Bonferroni-corrected min p."""
    res = _corr_control("fiber", score, {"fiber": fiber}, rho_max, "FIBER")
    s = np.asarray(score, float)
    petal = np.asarray(fiber).astype(np.int64) // fibers_per_petal
    ps = {}
    for pt in np.unique(petal):
        a, b = s[petal == pt], s[petal != pt]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size >= 5 and b.size >= 5:
            ps[int(pt)] = float(ks_2samp(a, b).pvalue)
    m = max(len(ps), 1)
    min_p = min(ps.values()) if ps else 1.0
    bonf = min(1.0, min_p * m)
    res.statistic.update({"ks_min_p": float(min_p), "ks_min_p_bonferroni": float(bonf), "n_petals": float(len(ps))})
    res.threshold = dict(res.threshold) | {"min_bonferroni_p": min_bonferroni_p}
    res.passed = bool(res.passed and bonf > min_bonferroni_p)
    res.details["ks_p_by_petal"] = ps
    res.description += (f" Each petal (FIBER//{fibers_per_petal}) vs the rest: two-sample KS, fail when "
                        f"min p × n_petals ≤ {min_bonferroni_p}.")
    return res


def observation_date(score: np.ndarray, mjd: np.ndarray, rho_max: float = 0.05) -> ControlResult:
    """Spearman ρ of score vs MJD (days)."""
    return _corr_control("observation_date", score, {"mjd": mjd}, rho_max, "MJD")


def _b_dominant(frac_b: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(frac_b, float), nan=0.0) > DOMINANT_FRAC


def _top_mask(score: np.ndarray, top_frac: float) -> np.ndarray:
    s = np.nan_to_num(np.asarray(score, float), nan=-np.inf)
    k = max(1, int(np.ceil(top_frac * s.size)))
    idx = np.argsort(-s, kind="stable")[:k]
    m = np.zeros(s.size, bool)
    m[idx] = True
    return m


def _b_fractions(table) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        nfrac_b = table.chi2_b / table.score_noise_aware
    return {"score": _b_dominant(table.frac_b), "score_noise_aware": _b_dominant(nfrac_b)}


def b_band_dominance(
    flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray, rng: np.random.Generator,
    top_frac: float = 0.01, abs_margin: float = 0.10, n_sigma: float = 3.0,
) -> ControlResult:
    """B_DOMINANT fraction (frac_b > 0.6) among the top 1% by each score vs a pure-noise expectation.

    Expectation: residuals replaced by N(0, 1/ivar) noise on each spectrum's own binned ivar
    (flux_sim = recon + noise), scored with the same formulas; the expected fraction is the
    B-dominant fraction among the top 1% of the simulation by the same score. Passes when the
    noise-aware score's observed fraction is within abs_margin + n_sigma·binomial σ of it. The
    seed score's fractions are reported for information (noise alone makes it B-heavy because
    the b arm is the noisiest).
    """
    flux = np.asarray(flux, np.float32)
    recon = np.asarray(recon, np.float32)
    ivar = np.asarray(ivar, np.float32)
    real = score_spectra(flux, recon, ivar)
    sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
    sim = score_spectra((recon + rng.standard_normal(flux.shape) * sigma).astype(np.float32), recon, ivar)
    fr_real, fr_sim = _b_fractions(real), _b_fractions(sim)
    stat: dict[str, float] = {}
    margins = {}
    for key, col in (("score", "score"), ("score_noise_aware", "score_noise_aware")):
        top_r = _top_mask(getattr(real, col), top_frac)
        top_s = _top_mask(getattr(sim, col), top_frac)
        obs = float(fr_real[key][top_r].mean())
        exp = float(fr_sim[key][top_s].mean())
        ntop = int(top_r.sum())
        margin = abs_margin + n_sigma * float(np.sqrt(max(exp * (1 - exp), 1.0 / ntop) / ntop))
        stat[f"b_frac_top_{key}"] = obs
        stat[f"b_frac_expected_{key}"] = exp
        stat[f"margin_{key}"] = margin
        margins[key] = margin
    stat["n_top"] = float(max(1, int(np.ceil(top_frac * flux.shape[0]))))
    diff = abs(stat["b_frac_top_score_noise_aware"] - stat["b_frac_expected_score_noise_aware"])
    stat["abs_diff_noise_aware"] = diff
    return ControlResult(
        "b_band_dominance", stat,
        {"abs_margin": abs_margin, "n_sigma": n_sigma, "top_frac": top_frac},
        bool(diff <= margins["score_noise_aware"]),
        "Fraction of B_DOMINANT (frac_b > 0.6) among the top 1% by the seed and the noise-aware score "
        "vs the fraction expected when residuals are pure noise from each spectrum's binned ivar. Passes "
        f"when the noise-aware fraction is within {abs_margin} + {n_sigma}·binomial σ of expectation.",
    )


def injection_recovery(reports: dict[str, dict[str, dict[str, Any]]], min_recovery: float = 0.8) -> ControlResult:
    """Overall recovery (fraction) at the FPR ≤ 1% threshold for the best of the named scores' reports."""
    stat = {f"recovery_at_fpr1_{name}": float(rep["overall"]["recovery_at_fpr1"]) for name, rep in reports.items()}
    finite = [v for v in stat.values() if np.isfinite(v)]
    best = max(finite) if finite else float("nan")
    stat["best"] = best
    for name, rep in reports.items():
        for k, r in rep.items():
            if k != "overall":
                stat[f"{name}_{k}_recovery_at_fpr1"] = float(r["recovery_at_fpr1"])
    return ControlResult(
        "injection_recovery", stat, min_recovery, bool(np.isfinite(best) and best >= min_recovery),
        f"Overall injected-anomaly recovery ≥ {min_recovery} at the threshold giving FPR ≤ 1% on clean "
        f"spectra, for the best of the scores ({', '.join(reports)}).",
    )
