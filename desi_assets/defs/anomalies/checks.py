"""The nine bias controls of the anomaly layer as asset checks, each validated by a GE suite."""


import dagster as dg
import numpy as np
import polars as pl

from desi_assets.defs.anomalies.assets import (
    InjectionConfig,
    ScoringConfig,
    anomaly_injection,
    anomaly_scores,
    current_model,
    injection_reports,
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


def scored_with_targets(lakehouse: LakehouseResource) -> pl.DataFrame:
    """Whole scored table joined with the target columns the controls test against."""
    t = lakehouse.scan("targets").select("coadd_key", "targetid", "target_ra", "target_dec", "fiber",
                                         "mean_mjd", "z", "spectype")
    return lakehouse.scan("anomaly_scores").join(t, on=["coadd_key", "targetid"], how="left").collect()


def normal_sample(lakehouse: LakehouseResource, n: int = CONTROL_SAMPLE, seed: int = 0) -> pl.DataFrame:
    """Up to n scored spectra below the anomaly threshold, with their preprocessed flux/ivar/norm."""
    ok = lakehouse.scan("anomaly_scores").filter(~pl.col("is_anomaly")).select("coadd_key", "targetid")
    rows = lakehouse.scan("preprocessed_spectra").join(ok, on=["coadd_key", "targetid"], how="semi").collect()
    return rows.sample(min(n, rows.height), seed=seed) if rows.height else rows


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


@dg.asset_check(asset=training_set, blocking=True,
                description="Training class balance: each of GALAXY/QSO/STAR within ±0.02 of 1/3 (GE: frac_* between).")
def training_class_balance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Class fractions of the training set."""
    res = bias.class_balance(lakehouse.read("training_set", columns=["spectype"])["spectype"].to_numpy())
    lo, hi = 1 / 3 - 0.02, 1 / 3 + 0.02
    stats = {k: v for k, v in res.statistic.items() if k.startswith("frac_")}
    check = _result(res, [Between(k, lo, hi) for k in stats], stats)
    return dg.AssetCheckResult(passed=check.passed, metadata=check.metadata)  # blocking: ERROR severity


@dg.asset_check(asset="anomaly_summary",
                description="Wavelength invariance: normal-spectrum score vs redshift, significant |ρ| < 0.1 and "
                            "median score of the top-z quintile within ×1.5 of the bottom quintile.")
def wavelength_invariance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score trend with redshift among normal spectra."""
    d = scored_with_targets(lakehouse).filter(~pl.col("is_anomaly"))
    res = bias.wavelength_invariance(d["score"].to_numpy(), d["z"].to_numpy())
    stats = significant_rho(res) | {"quintile_median_ratio": res.statistic["quintile_median_ratio"]}
    return _result(res, [Between("sig_abs_rho", 0.0, 0.1), Between("quintile_median_ratio", 1 / 1.5, 1.5)], stats)


@dg.asset_check(asset="anomaly_summary",
                description="Flux scale invariance: score(k·f) = score(f) for k in {1e-3, 1e3} to 1e-5 relative.")
def flux_scale_invariance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score of rescaled raw binned flux."""
    rows = normal_sample(lakehouse, 1000)
    raw = to_numpy_2d(rows["flux"]).astype(np.float64) * rows["norm"].to_numpy()[:, None]
    model, _ = current_model(lakehouse)
    res = bias.scale_invariance(scoring.make_score_fn(model), raw)
    return _result(res, [Between("max_rel_diff", 0.0, 1e-5)], {"max_rel_diff": res.statistic["max_rel_diff"]})


@dg.asset_check(asset="anomaly_summary",
                description="Noise level: adding noise drawn from each spectrum's own ivar raises the anomaly "
                            "rate of normal spectra by < 1 percentage point.")
def noise_level(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Anomaly rate before and after one extra noise realisation."""
    rows = normal_sample(lakehouse)
    norm = rows["norm"].to_numpy()[:, None]
    raw = to_numpy_2d(rows["flux"]).astype(np.float64) * norm
    raw_ivar = to_numpy_2d(rows["ivar"]).astype(np.float64) / norm**2
    model, _ = current_model(lakehouse)
    res = bias.noise_stability(scoring.make_score_fn(model), raw, raw_ivar, ScoringConfig().threshold,
                               np.random.default_rng(0))
    return _result(res, [Between("increase", None, 0.01)], {"increase": res.statistic["increase"]})


@dg.asset_check(asset="anomaly_summary",
                description="Sky position: significant |Spearman ρ| of score vs RA, Dec, Galactic b < 0.05.")
def sky_position(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs position on the sky."""
    d = scored_with_targets(lakehouse).drop_nulls(["target_ra", "target_dec"])
    res = bias.sky_position(d["score"].to_numpy(), d["target_ra"].to_numpy(), d["target_dec"].to_numpy())
    return _rho_suite(res, 0.05)


@dg.asset_check(asset="anomaly_summary",
                description="Fiber number: significant |ρ| vs FIBER < 0.05 and per-petal KS min p × n_petals > 0.01.")
def fiber_number(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs fibre and petal."""
    d = scored_with_targets(lakehouse).drop_nulls("fiber")
    res = bias.fiber_control(d["score"].to_numpy(), d["fiber"].to_numpy())
    stats = significant_rho(res) | {"ks_min_p_bonferroni": res.statistic["ks_min_p_bonferroni"]}
    return _result(res, [Between("sig_abs_rho_fiber", 0.0, 0.05), Between("ks_min_p_bonferroni", 0.01, None)],
                   stats)


@dg.asset_check(asset="anomaly_summary",
                description="Observation date: significant |Spearman ρ| of score vs MJD < 0.05.")
def observation_date(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Score vs mean exposure MJD."""
    d = scored_with_targets(lakehouse).drop_nulls("mean_mjd")
    return _rho_suite(bias.observation_date(d["score"].to_numpy(), d["mean_mjd"].to_numpy()), 0.05)


@dg.asset_check(asset="anomaly_summary",
                description="B-band dominance: B_DOMINANT share of the top 1% vs the share expected from per-arm "
                            "noise alone, for both scores; the noise-aware score must match expectation.")
def b_band_dominance(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Top-1% B-dominant fraction against a pure-noise simulation."""
    rows = lakehouse.read("preprocessed_spectra", columns=["flux", "ivar"])
    rows = rows.sample(min(rows.height, B_DOMINANCE_SAMPLE), seed=0)
    flux, ivar = to_numpy_2d(rows["flux"]), to_numpy_2d(rows["ivar"])
    model, _ = current_model(lakehouse)
    from desi_assets.science.anomaly.training import reconstruct

    res = bias.b_band_dominance(flux, reconstruct(model, flux), ivar, np.random.default_rng(0))
    m = res.statistic["margin_score_noise_aware"]
    return _result(res, [Between("abs_diff_noise_aware", 0.0, m)],
                   {"abs_diff_noise_aware": res.statistic["abs_diff_noise_aware"]})


@dg.asset_check(asset=anomaly_injection,
                description="Injection/recovery: overall recovery >= 0.8 at FPR <= 1% for the better score.")
def injection_recovery(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    """Recovery of injected anomalies from the injection_results table."""
    trials = lakehouse.read("injection_results")
    reps = injection_reports(trials, ScoringConfig().threshold, ScoringConfig().noise_aware_threshold,
                             InjectionConfig().max_fpr)
    res = bias.injection_recovery(reps["score"], reps["score_noise_aware"])
    return _result(res, [Between("best", 0.8, 1.0)], {"best": res.statistic["best"]})


ALL_CHECKS = [training_class_balance, wavelength_invariance, flux_scale_invariance, noise_level, sky_position,
              fiber_number, observation_date, b_band_dominance, injection_recovery]
