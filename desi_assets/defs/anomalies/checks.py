"""The nine bias controls of the anomaly layer as asset checks, each validated by a GE suite.

Thresholds come from the `anomaly_config` resource (:class:`AnomalyConfig`); the descriptions are
generated from the same config (:func:`check_descriptions`) and every result records the values used.
"""

import dagster as dg
import polars as pl

from desi_assets.defs.anomalies.assets import anomaly_injection, anomaly_scores, training_set
from desi_assets.defs.anomalies.config import AnomalyConfig, check_descriptions
from desi_assets.science.anomaly import controls, recovery, scoring
from desi_assets.storage import models, samples
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.validation import Between, run_suite


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


def check_result(outcome: controls.ControlOutcome, used: dict, blocking: bool = False) -> dg.AssetCheckResult:
    """The GE suite over the outcome's bounded statistics; metadata: every statistic, thresholds, config used."""
    res = outcome.result
    suite = run_suite(res.name, outcome.stats, [Between(k, lo, hi) for k, (lo, hi) in outcome.bounds.items()])
    meta = {k: float(v) for k, v in res.statistic.items()}
    thr = res.threshold if isinstance(res.threshold, dict) else {"threshold": res.threshold}
    meta.update({"threshold": dg.MetadataValue.json(thr), "rule": res.description,
                 "config_used": dg.MetadataValue.json(used), "gx_failures": dg.MetadataValue.json(suite.failures())})
    return dg.AssetCheckResult(passed=bool(suite.success and res.passed), metadata=meta,
                               severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN)


def _scores(d: pl.DataFrame) -> dict:
    return {c: d[c].to_numpy() for c in controls.CONTROL_SCORES}


def _strata(d: pl.DataFrame, snr_bins: int):
    return controls.strata_of(d["program"].to_numpy(), d["spectype"].to_numpy(),
                              d["median_coadd_snr_r"].fill_null(float("nan")).to_numpy(), snr_bins)


def class_balance_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Class fractions of the training set."""
    c = config.controls
    spectype = lakehouse.read("training_set", columns=["spectype"])["spectype"].to_numpy()
    return check_result(controls.class_balance(spectype, c.class_balance_tol), {"tol": c.class_balance_tol},
                        blocking=True)


def wavelength_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Within-stratum score trend with redshift among normal spectra."""
    c = config.controls
    d = samples.scored_with_targets(lakehouse).drop_nulls("z")
    out = controls.wavelength(_scores(d), d["z"].to_numpy(), _strata(d, c.snr_bins), c.wavelength_rho_max,
                              c.wavelength_max_quintile_ratio)
    return check_result(out, {"rho_max": c.wavelength_rho_max, "max_quintile_ratio": c.wavelength_max_quintile_ratio,
                              "snr_bins": c.snr_bins})


def flux_scale_check(lakehouse: LakehouseResource, config: AnomalyConfig,
                     make_score_fn=scoring.make_score_fn) -> dg.AssetCheckResult:
    """score(k·f) vs score(f) for the published model; make_score_fn(model, which, raw_ivar) builds the scorer."""
    c = config.controls
    rows = samples.normal_sample(lakehouse, c.flux_scale_sample, c.seed)
    raw, raw_ivar = controls.unit_raw(to_numpy_2d(rows["flux"]), to_numpy_2d(rows["ivar"]), rows["norm"].to_numpy())
    out = controls.flux_scale(models.load_published(lakehouse).net, raw, raw_ivar, c.flux_scale_tol, make_score_fn)
    return check_result(out, {"tol": c.flux_scale_tol, "sample": c.flux_scale_sample})


def noise_level_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Anomaly rate before and after one extra noise realisation, at the scoring config's thresholds."""
    c, m = config.controls, models.load_published(lakehouse)
    thr = config.scoring.thresholds(m.meta)
    rows = samples.normal_sample(lakehouse, c.control_sample, c.seed)
    raw, raw_ivar = controls.unit_raw(to_numpy_2d(rows["flux"]), to_numpy_2d(rows["ivar"]), rows["norm"].to_numpy())
    out = controls.noise_level(m.net, raw, raw_ivar, to_numpy_2d(rows["masked_frac"]), thr.seed, thr.noise_aware,
                               c.noise_max_increase, c.seed)
    return check_result(out, {"max_increase": c.noise_max_increase, "threshold": thr.seed,
                              "noise_aware_threshold": thr.noise_aware, "sample": c.control_sample})


def sky_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Score vs RA, Dec, Galactic b within strata."""
    c = config.controls
    d = samples.scored_with_targets(lakehouse)
    out = controls.sky_position(_scores(d), _strata(d, c.snr_bins), d["target_ra"].to_numpy(),
                                d["target_dec"].to_numpy(), c.sky_rho_max)
    return check_result(out, {"rho_max": c.sky_rho_max, "snr_bins": c.snr_bins})


def fiber_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Score vs FIBER and per-petal KS within strata."""
    c = config.controls
    d = samples.scored_with_targets(lakehouse)
    out = controls.fiber(_scores(d), _strata(d, c.snr_bins), d["fiber"].fill_null(-1).to_numpy(), c.fiber_rho_max,
                         c.fiber_min_bonferroni_p)
    return check_result(out, {"rho_max": c.fiber_rho_max, "min_bonferroni_p": c.fiber_min_bonferroni_p,
                              "snr_bins": c.snr_bins})


def date_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Score vs MJD within strata."""
    c = config.controls
    d = samples.scored_with_targets(lakehouse)
    out = controls.observation_date(_scores(d), _strata(d, c.snr_bins), d["mean_mjd"].fill_null(float("nan"))
                                    .to_numpy(), c.date_rho_max)
    return check_result(out, {"rho_max": c.date_rho_max, "snr_bins": c.snr_bins})


def b_dominance_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Top-1% B-dominant fraction (both scores) against a pure-noise simulation."""
    c = config.controls
    rows = samples.spectra_sample(lakehouse, c.b_dominance_sample, c.seed)
    res = controls.b_dominance(models.load_published(lakehouse).net, rows["flux"], rows["ivar"], rows["masked_frac"],
                               c.seed, c.b_dominance_abs_margin, c.b_dominance_n_sigma)
    return check_result(controls.b_dominance_outcome(res), {"abs_margin": c.b_dominance_abs_margin,
                                                            "n_sigma": c.b_dominance_n_sigma,
                                                            "sample": c.b_dominance_sample})


def injection_check(lakehouse: LakehouseResource, config: AnomalyConfig) -> dg.AssetCheckResult:
    """Recovery of injected anomalies from the injection_results table, at the scoring config's thresholds."""
    c, m = config.controls, models.load_published(lakehouse)
    thr = config.scoring.thresholds(m.meta)
    reports = recovery.injection_reports(lakehouse.read("injection_results"), thr, config.injection.max_fpr)
    return check_result(controls.injection_recovery(reports, c.min_recovery),
                        {"min_recovery": c.min_recovery, "max_fpr": config.injection.max_fpr, **thr._asdict()})


#: check name -> (asset, blocking, the function that evaluates it).
CHECKS = {
    "training_class_balance": (training_set, True, class_balance_check),
    "wavelength_invariance": ("anomaly_summary", False, wavelength_check),
    "flux_scale_invariance": ("anomaly_summary", False, flux_scale_check),
    "noise_level": ("anomaly_summary", False, noise_level_check),
    "sky_position": ("anomaly_summary", False, sky_check),
    "fiber_number": ("anomaly_summary", False, fiber_check),
    "observation_date": ("anomaly_summary", False, date_check),
    "b_band_dominance": ("anomaly_summary", False, b_dominance_check),
    "injection_recovery": (anomaly_injection, False, injection_check),
}


def build_checks(config: AnomalyConfig | None = None) -> list[dg.AssetChecksDefinition]:
    """The nine asset checks, described with `config`'s values (they run with the `anomaly_config` resource)."""
    descriptions = check_descriptions(config or AnomalyConfig())

    def make(name: str, asset, blocking: bool, fn) -> dg.AssetChecksDefinition:
        @dg.asset_check(name=name, asset=asset, blocking=blocking, description=descriptions[name])
        def _check(lakehouse: LakehouseResource, anomaly_config: AnomalyConfig) -> dg.AssetCheckResult:
            return fn(lakehouse, anomaly_config)
        return _check

    return [make(name, *spec) for name, spec in CHECKS.items()]


ALL_CHECKS = build_checks()
training_class_balance, wavelength_invariance, flux_scale_invariance, noise_level, sky_position, fiber_number, \
    observation_date, b_band_dominance, injection_recovery = ALL_CHECKS
