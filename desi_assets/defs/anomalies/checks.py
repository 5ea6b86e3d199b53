"""The nine bias controls of the anomaly layer as asset checks, each validated by a GE suite."""


import dagster as dg
import numpy as np
import polars as pl

from desi_assets.defs.anomalies.assets import (
    InjectionConfig,
    anomaly_injection,
    anomaly_scores,
    current_model,
    injection_reports,
    thresholds,
    training_set,
)
from desi_assets.science.anomaly import bias, scoring
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.validation import Between, run_suite

#: Rows sampled for the model-based controls (scale, noise, B dominance).
CONTROL_SAMPLE = 4000
#: Rows (all scores, not only normal ones) for the B-dominance control.
B_DOMINANCE_SAMPLE = 50_000


@dg.asset(group_name="anomalies", deps=[anomaly_scores], kinds={"polars"},
          description="Cross-partition view of anomaly_scores: counts per category and score distributions; "
                      "the bias controls that need many rows are its checks.")
def anomaly_summary(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Summarise the whole scored table."""
    s = lakehouse.read("anomaly_scores", columns=["score", "score_noise_aware", "is_anomaly",
                                                  "is_anomaly_noise_aware", "category", "dominance", "model_version"])
    return dg.MaterializeResult(metadata={
        "rows": s.height, "anomalies": int(s["is_anomaly"].sum()),
        "anomalies_noise_aware": int(s["is_anomaly_noise_aware"].sum()),
        "model_versions": s["model_version"].unique().to_list(),
        "categories_of_anomalies": dict(s.filter("is_anomaly").group_by("category").len().iter_rows()),
        "dominance_of_anomalies": dict(s.filter("is_anomaly").group_by("dominance").len().iter_rows()),
        "score_p50_p99": [float(s["score"].quantile(0.5)), float(s["score"].quantile(0.99))],
    })


#: Columns that define the strata of the correlation controls: the target mix (program, class)
#: changes across the sky, with date and with redshift; a detector bias must show inside a stratum.
STRATA = ("program", "spectype")
#: S/N quantile bins inside each program × SPECTYPE stratum: the controls ask for a trend at fixed depth
#: (the scores depend on S/N by construction; depth varies with tile, date and position).
SNR_BINS = 5


def scored_with_targets(lakehouse: LakehouseResource, normal_only: bool = True) -> pl.DataFrame:
    """Scored table joined with the target columns the controls test against (normal rows by default)."""
    t = lakehouse.scan("targets").select("coadd_key", "targetid", "target_ra", "target_dec", "fiber",
                                         "mean_mjd", "z", "spectype", "median_coadd_snr_r")
    s = lakehouse.scan("anomaly_scores")
    if normal_only:
        s = s.filter(~pl.col("is_anomaly") & ~pl.col("is_anomaly_noise_aware"))
    return s.join(t, on=["coadd_key", "targetid"], how="left").collect()


def strata_of(d: pl.DataFrame, snr_bins: int = 0) -> np.ndarray:
    """Stratum label per row: program × SPECTYPE (× S/N quantile bin within that, when snr_bins > 0)."""
    lab = d.select(pl.concat_str([pl.col(c).fill_null("?").cast(pl.Utf8) for c in STRATA], separator="|"))
    lab = lab.to_series().to_numpy().astype(str)
    if snr_bins:
        snr = d["median_coadd_snr_r"].fill_null(np.nan).to_numpy().astype(float)
        q = np.zeros(len(d), dtype=int)
        for key in np.unique(lab):
            m = lab == key
            r = bias.within_strata_ranks(snr[m], None)
            ok = np.isfinite(r)
            if ok.sum() >= snr_bins:
                edges = np.quantile(r[ok], np.linspace(0, 1, snr_bins + 1)[1:-1])
                q[np.flatnonzero(m)[ok]] = np.searchsorted(edges, r[ok])
        lab = np.char.add(np.char.add(lab, "|snr"), q.astype(str))
    return lab


def sampled_preprocessed(lakehouse: LakehouseResource, ids: pl.LazyFrame, n: int, seed: int = 0,
                         columns: list[str] | None = None) -> pl.DataFrame:
    """`preprocessed_spectra` rows of a random sample of up to n (coadd_key, targetid) ids.

    Only the ids are sampled in memory; the spectra are read from the files of the sampled
    partitions alone (Delta stats prune by `coadd_key`), so the cost does not grow with the table.
    """
    ids = ids.select("coadd_key", "targetid").collect()
    ids = ids.sample(min(n, ids.height), seed=seed) if ids.height else ids
    scan = lakehouse.scan("preprocessed_spectra").filter(pl.col("coadd_key").is_in(ids["coadd_key"].unique()))
    rows = scan.join(ids.lazy(), on=["coadd_key", "targetid"], how="semi")
    return (rows.select(columns) if columns else rows).collect()


def normal_sample(lakehouse: LakehouseResource, n: int = CONTROL_SAMPLE, seed: int = 0) -> pl.DataFrame:
    """Up to n scored spectra below both anomaly thresholds, with their preprocessed flux/ivar/norm."""
    ok = lakehouse.scan("anomaly_scores").filter(~pl.col("is_anomaly") & ~pl.col("is_anomaly_noise_aware"))
    return sampled_preprocessed(lakehouse, ok, n, seed)


def _result(res: bias.ControlResult, expectations: list, stats: dict[str, float]) -> dg.AssetCheckResult:
    suite = run_suite(res.name, stats, expectations)
    meta = {k: float(v) for k, v in res.statistic.items()}
    thr = res.threshold if isinstance(res.threshold, dict) else {"threshold": res.threshold}
    meta.update({"threshold": dg.MetadataValue.json(thr), "rule": res.description,
                 "gx_failures": dg.MetadataValue.json(suite.failures())})
    return dg.AssetCheckResult(passed=bool(suite.success and res.passed), metadata=meta,
                               severity=dg.AssetCheckSeverity.WARN)


def significant_rho(res: bias.ControlResult) -> dict[str, float]:
    """|ρ| of each covariate where significant (p <= 0.01), else 0: the statistic the GE suite bounds."""
    out = {}
    for k, v in res.statistic.items():
        if k.startswith("rho_") or k == "rho":
            p = res.statistic.get(k.replace("rho", "p", 1), res.statistic.get("p_value", 1.0))
            out[f"sig_abs_{k}"] = abs(v) if p <= bias.P_SIGNIFICANT else 0.0
    return out


def _rho_suite(res: bias.ControlResult, rho_max: float) -> dg.AssetCheckResult:
    stats = significant_rho(res)
    return _result(res, [Between(k, 0.0, rho_max) for k in stats], stats)


def class_balance_control(lakehouse: LakehouseResource, tol: float = 0.02) -> dg.AssetCheckResult:
    """Class fractions of the training set, each within ±tol of 1/3."""
    res = bias.class_balance(lakehouse.read("training_set", columns=["spectype"])["spectype"].to_numpy(), tol=tol)
    lo, hi = 1 / 3 - tol, 1 / 3 + tol
    stats = {k: v for k, v in res.statistic.items() if k.startswith("frac_")}
    check = _result(res, [Between(k, lo, hi) for k in stats], stats)
    return dg.AssetCheckResult(passed=check.passed, metadata=check.metadata)  # blocking: ERROR severity


@dg.asset_check(asset=training_set, blocking=True,
                description="Training class balance: each of GALAXY/QSO/STAR within ±0.02 of 1/3 of the training "
                            "set (GE: frac_galaxy, frac_qso, frac_star between 0.3133 and 0.3533). Blocking.")
def training_class_balance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Class fractions of the training set."""
    return class_balance_control(lakehouse)


def wavelength_control(lakehouse: LakehouseResource, rho_max: float = 0.1,
                       max_ratio: float = 1.5) -> dg.AssetCheckResult:
    """Within-stratum trend of the normal-spectrum score (both scores) with redshift."""
    d = scored_with_targets(lakehouse).drop_nulls("z")
    strata = strata_of(d, snr_bins=SNR_BINS)
    zr = bias.within_strata_ranks(d["z"].to_numpy(), strata)
    stats, parts, ok = {}, {}, True
    for col in ("score", "score_noise_aware"):
        sr = bias.within_strata_ranks(d[col].to_numpy(), strata) + 0.5  # percentile in (0, 1)
        res = bias.wavelength_invariance(sr, zr, rho_max=rho_max, max_quintile_ratio=max_ratio)
        parts[col] = res
        sig = significant_rho(res)["sig_abs_rho"]
        stats[f"sig_abs_rho_{col}"] = sig
        stats[f"quintile_median_ratio_{col}"] = res.statistic["quintile_median_ratio"]
        ok &= res.passed
    merged = bias.ControlResult(
        "wavelength_invariance",
        {f"{k}_{c}": v for c, r in parts.items() for k, v in r.statistic.items()},
        {"rho_max": rho_max, "p_significant": bias.P_SIGNIFICANT, "max_quintile_ratio": max_ratio}, ok,
        "Normal spectra, both scores, within strata of program × SPECTYPE × S/N quintile (percentile ranks): "
        f"fail when |Spearman ρ(score, z)| ≥ {rho_max} with p ≤ 0.01, or when the median score percentile of the "
        f"top-z quintile differs from the bottom-z quintile by more than ×{max_ratio}.")
    exps = []
    for col in ("score", "score_noise_aware"):
        exps += [Between(f"sig_abs_rho_{col}", 0.0, rho_max), Between(f"quintile_median_ratio_{col}", 1 / max_ratio,
                                                                      max_ratio)]
    return _result(merged, exps, stats)


@dg.asset_check(asset="anomaly_summary",
                description="Wavelength invariance: normal-spectrum score (seed and noise-aware) vs redshift within "
                            "program × SPECTYPE × S/N-quintile strata: significant (p ≤ 0.01) |Spearman ρ| < 0.1 "
                            "and "
                            "median score percentile of the top-z quintile within ×1.5 of the bottom-z quintile.")
def wavelength_invariance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score trend with redshift among normal spectra."""
    return wavelength_control(lakehouse)


def flux_scale_control(lakehouse: LakehouseResource, make_score_fn=None, tol: float = 1e-5,
                       n: int = 1000) -> dg.AssetCheckResult:
    """score(k·f) vs score(f) for the published model; make_score_fn(model, which, raw_ivar) builds the scorer."""
    make_score_fn = make_score_fn or scoring.make_score_fn
    rows = normal_sample(lakehouse, n)
    norm = rows["norm"].to_numpy()[:, None]
    raw = to_numpy_2d(rows["flux"]).astype(np.float64) * norm
    raw_ivar = to_numpy_2d(rows["ivar"]).astype(np.float64) / norm**2
    model, _ = current_model(lakehouse)
    res = bias.scale_invariance(make_score_fn(model, "score"), raw, tol=tol)
    # ivar scales as 1/k²: the noise-aware score is checked with ivar rescaled alongside the flux.
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
    return _result(res, [Between(k, 0.0, tol) for k in stats], stats)


@dg.asset_check(asset="anomaly_summary",
                description="Flux scale invariance: score(k·f) = score(f) (ivar scaled by 1/k² for the noise-aware "
                            "score) for k in {1e-3, 1e3}: max relative difference ≤ 1e-5 over 1000 normal spectra.")
def flux_scale_invariance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score of rescaled raw binned flux."""
    return flux_scale_control(lakehouse)


def noise_level_control(lakehouse: LakehouseResource, threshold: float | None = None,
                        noise_threshold: float | None = None, max_increase: float = 0.01) -> dg.AssetCheckResult:
    """Anomaly-rate increase of normal spectra after one extra ivar noise realisation, for both scores."""
    calibrated = thresholds(lakehouse)
    threshold = calibrated.seed if threshold is None else threshold
    noise_threshold = calibrated.noise_aware if noise_threshold is None else noise_threshold
    rows = normal_sample(lakehouse)
    norm = rows["norm"].to_numpy()[:, None]
    raw = to_numpy_2d(rows["flux"]).astype(np.float64) * norm
    raw_ivar = to_numpy_2d(rows["ivar"]).astype(np.float64) / norm**2
    model, _ = current_model(lakehouse)
    stats, parts = {}, {}
    for col, thr in (("score", threshold), ("score_noise_aware", noise_threshold)):
        fn = scoring.make_score_fn(model, col, raw_ivar, to_numpy_2d(rows["masked_frac"]))
        res = bias.noise_stability(fn, raw, raw_ivar, thr, np.random.default_rng(0), max_increase=max_increase)
        parts[col] = res
        stats[f"increase_{col}"] = res.statistic["increase"]
    merged = bias.ControlResult(
        "noise_level", {f"{k}_{c}": v for c, r in parts.items() for k, v in r.statistic.items()},
        {"max_increase": max_increase, "threshold": threshold, "noise_aware_threshold": noise_threshold},
        parts["score_noise_aware"].passed,
        parts["score"].description + " Pass/fail on the noise-aware score at its calibrated threshold; the seed "
        "score's increase at its threshold is reported (it is noise-sensitive by construction).")
    return _result(merged, [Between("increase_score_noise_aware", None, max_increase)],
                   {"increase_score_noise_aware": stats["increase_score_noise_aware"]})


@dg.asset_check(asset="anomaly_summary",
                description="Noise level: adding N(0, 1/ivar) noise from each spectrum's own ivar raises the anomaly "
                            "rate of normal spectra by < 1 percentage point (GE: increase_score_noise_aware < 0.01) "
                            "for the noise-aware score at its calibrated threshold; the seed score's increase at "
                            "threshold 5 is reported alongside.")
def noise_level(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Anomaly rate before and after one extra noise realisation."""
    return noise_level_control(lakehouse)


def _stratified_corr(lakehouse, name: str, rho_max: float, fn) -> dg.AssetCheckResult:
    d = scored_with_targets(lakehouse)
    strata = strata_of(d, snr_bins=SNR_BINS)
    stats, parts = {}, {}
    for col in ("score", "score_noise_aware"):
        res = fn(d, bias.within_strata_ranks(d[col].to_numpy(), strata), strata)
        parts[col] = res
        stats.update({f"{k}_{col}": v for k, v in significant_rho(res).items()})
    merged = bias.ControlResult(
        name, {f"{k}_{c}": v for c, r in parts.items() for k, v in r.statistic.items()},
        parts["score"].threshold, all(r.passed for r in parts.values()),
        parts["score"].description
        + " Normal spectra, both scores, ranks within program × SPECTYPE × S/N-quintile strata.")
    exps = [Between(k, 0.0, rho_max) for k in stats if k.startswith("sig_abs_rho")]
    if "ks_min_p_bonferroni" in parts["score"].statistic:
        for col in parts:
            stats[f"ks_min_p_bonferroni_{col}"] = parts[col].statistic["ks_min_p_bonferroni"]
            exps.append(Between(f"ks_min_p_bonferroni_{col}", 0.01, None))
    return _result(merged, exps, stats)


def sky_control(lakehouse: LakehouseResource, rho_max: float = 0.05) -> dg.AssetCheckResult:
    """Score vs RA, Dec, Galactic b within strata."""
    def fn(d, s, strata):
        return bias.sky_position(s, d["target_ra"].to_numpy(), d["target_dec"].to_numpy(), rho_max, strata=strata)
    return _stratified_corr(lakehouse, "sky_position", rho_max, fn)


@dg.asset_check(asset="anomaly_summary",
                description="Sky position: significant (p ≤ 0.01) |Spearman ρ| of the normal-spectrum score (seed "
                            "and noise-aware) vs RA, Dec and Galactic latitude < 0.05, ranks within program × "
                            "SPECTYPE × "
                            "S/N-quintile strata.")
def sky_position(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs position on the sky."""
    return sky_control(lakehouse)


def fiber_control(lakehouse: LakehouseResource, rho_max: float = 0.05) -> dg.AssetCheckResult:
    """Score vs FIBER and per-petal KS within strata."""
    def fn(d, s, strata):
        f = d["fiber"].fill_null(-1).to_numpy()
        ok = f >= 0
        return bias.fiber_control(s[ok], f[ok], rho_max)
    return _stratified_corr(lakehouse, "fiber", rho_max, fn)


@dg.asset_check(asset="anomaly_summary",
                description="Fiber number: significant |Spearman ρ| of the normal-spectrum score (both scores, ranks "
                            "within program × SPECTYPE × S/N quintile) vs FIBER < 0.05, and per-petal two-sample KS "
                            "(petal vs rest) "
                            "min p × n_petals > 0.01.")
def fiber_number(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs fibre and petal."""
    return fiber_control(lakehouse)


def date_control(lakehouse: LakehouseResource, rho_max: float = 0.05) -> dg.AssetCheckResult:
    """Score vs MJD within strata."""
    def fn(d, s, strata):
        return bias.observation_date(s, bias.within_strata_ranks(d["mean_mjd"].fill_null(np.nan).to_numpy(), strata),
                                     rho_max)
    return _stratified_corr(lakehouse, "observation_date", rho_max, fn)


@dg.asset_check(asset="anomaly_summary",
                description="Observation date: significant (p ≤ 0.01) |Spearman ρ| of the normal-spectrum score "
                            "(both scores, ranks within program × SPECTYPE × S/N quintile) vs mean MJD < 0.05.")
def observation_date(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs mean exposure MJD."""
    return date_control(lakehouse)


def b_dominance(model, flux: np.ndarray, ivar: np.ndarray, masked_frac: np.ndarray) -> bias.ControlResult:
    """B-dominance control on preprocessed rows, with the catalogue's reconstruction and masked-bin handling."""
    bad = np.asarray(masked_frac) > 0
    return bias.b_band_dominance(flux, scoring.reconstruct_masked(model, flux, bad), np.where(bad, 0.0, ivar),
                                 np.random.default_rng(0))


def b_dominance_control(lakehouse: LakehouseResource, n: int = B_DOMINANCE_SAMPLE) -> dg.AssetCheckResult:
    """Top-1% B-dominant fraction (both scores) against a pure-noise simulation."""
    rows = sampled_preprocessed(lakehouse, lakehouse.scan("preprocessed_spectra"), n,
                                columns=["flux", "ivar", "masked_frac"])
    model, _ = current_model(lakehouse)
    res = b_dominance(model, to_numpy_2d(rows["flux"]), to_numpy_2d(rows["ivar"]), to_numpy_2d(rows["masked_frac"]))
    m = res.statistic["margin_score_noise_aware"]
    stats = {"abs_diff_noise_aware": res.statistic["abs_diff_noise_aware"]}
    return _result(res, [Between("abs_diff_noise_aware", 0.0, m)], stats)


@dg.asset_check(asset="anomaly_summary",
                description="B-band dominance: fraction of B_DOMINANT (frac_b > 0.6) among the top 1% by the seed and "
                            "by the noise-aware score vs the fraction expected when residuals are pure per-arm noise "
                            "(N(0, 1/ivar) about the reconstruction); fails when the noise-aware fraction differs "
                            "from expectation by more than 0.10 + 3 binomial σ. Seed-score numbers are reported.")
def b_band_dominance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Top-1% B-dominant fraction against a pure-noise simulation."""
    return b_dominance_control(lakehouse)


def injection_control(lakehouse: LakehouseResource, min_recovery: float = 0.8) -> dg.AssetCheckResult:
    """Recovery of injected anomalies from the injection_results table."""
    trials = lakehouse.read("injection_results")
    reps = injection_reports(trials, thresholds(lakehouse), InjectionConfig().max_fpr)
    res = bias.injection_recovery(reps, min_recovery=min_recovery)
    return _result(res, [Between("best", min_recovery, 1.0)], {"best": res.statistic["best"]})


@dg.asset_check(asset=anomaly_injection,
                description="Injection/recovery: overall recovery ≥ 0.8 at the threshold giving FPR ≤ 1% on clean "
                            "spectra, for the best of the seed, noise-aware and local scores (per-kind numbers "
                            "reported).")
def injection_recovery(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Recovery of injected anomalies from the injection_results table."""
    return injection_control(lakehouse)


ALL_CHECKS = [training_class_balance, wavelength_invariance, flux_scale_invariance, noise_level, sky_position,
              fiber_number, observation_date, b_band_dominance, injection_recovery]
