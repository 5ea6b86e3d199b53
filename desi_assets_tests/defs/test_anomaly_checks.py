"""The nine bias controls: each passes on the small mock (where it can) and FAILS on a biased fixture.

The check functions are called directly with a lakehouse. Biased fixtures are copies of the
small-mock lakehouse (the session fixture ``anomaly_lake`` in conftest.py) with one table or the scorer changed:

* class balance: a 50/30/20 training_set written through LakehouseResource.overwrite;
* wavelength / sky / fibre / date: anomaly_scores whose scores rise with z / RA / FIBER / MJD,
  and one petal shifted (fibre KS);
* flux scale: the scorer's normalisation step removed (the GE wrapper fed a score path that is
  not scale-invariant: BigAE cannot be made scale-variant through data, normalisation sits outside it);
* noise: thresholds at the clean normal-score 30th percentile, so one extra noise draw flips many;
* B dominance: preprocessed spectra with a strong b-arm defect in 3% of rows;
* injection: an injection_results table whose injected scores are clean-score draws (no recovery).
"""

import numpy as np
import polars as pl
import pytest

from desi_assets.defs.anomalies import checks
from desi_assets.defs.anomalies.config import AnomalyConfig, ControlsConfig, InjectionConfig, ScoringConfig
from desi_assets.science.anomaly import scoring
from desi_assets.science.anomaly.training import reconstruct
from desi_assets.science.wavelength import arm_bin_slices
from desi_assets.storage.arrays import to_list_array, to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.samples import scored_with_targets

DEFAULT = AnomalyConfig()


@pytest.fixture(scope="module")
def base(anomaly_lake) -> LakehouseResource:
    return LakehouseResource(root=anomaly_lake["lake"])


def _meta(res) -> dict:
    return {k: getattr(v, "value", v) for k, v in res.metadata.items()}


def _run(check, lh, config: AnomalyConfig = DEFAULT):
    """Invoke an asset check directly with its two resources."""
    return check(lakehouse=lh, anomaly_config=config)


# ------------------------------------------------------------------ passes on the small mock
#: Measured on the realistic mock (issue 11): on this 8-pixel test survey with a 20-epoch model the noise-aware
#: score's within-stratum Spearman ρ with z is 0.118 (bound 0.1, p = 1e-5); the full demo passes. Kept visible.
_WAVELENGTH_ON_SMALL_MOCK = pytest.param(
    checks.wavelength_invariance, id="wavelength_invariance",
    marks=pytest.mark.xfail(reason="noise-aware score trends with z on the 8-pixel test mock (ρ 0.118 > 0.1)",
                            strict=False))


@pytest.mark.parametrize("check", [checks.training_class_balance, _WAVELENGTH_ON_SMALL_MOCK,
                                   checks.flux_scale_invariance, checks.noise_level, checks.sky_position,
                                   checks.fiber_number, checks.observation_date, checks.b_band_dominance],
                         ids=lambda c: c.check_key.name)
def test_control_passes_on_small_mock(base, check):
    res = _run(check, base)
    assert res.passed, _meta(res)
    assert "gx_failures" in res.metadata and res.metadata["gx_failures"].value == []


#: check -> the ControlsConfig fields its description must quote (and its thresholds use).
QUOTED = {"training_class_balance": ["class_balance_tol"],
          "wavelength_invariance": ["wavelength_rho_max", "wavelength_max_quintile_ratio", "snr_bins"],
          "flux_scale_invariance": ["flux_scale_tol", "flux_scale_sample"],
          "noise_level": ["noise_max_increase", "control_sample"],
          "sky_position": ["sky_rho_max", "snr_bins"],
          "fiber_number": ["fiber_rho_max", "fiber_min_bonferroni_p", "snr_bins"],
          "observation_date": ["date_rho_max", "snr_bins"],
          "b_band_dominance": ["b_dominance_abs_margin", "b_dominance_n_sigma", "b_dominance_sample"],
          "injection_recovery": ["min_recovery"]}
#: Unusual values for every quoted field, so that a hand-written number cannot match by chance.
ODD = {"class_balance_tol": 0.0173, "wavelength_rho_max": 0.0871, "wavelength_max_quintile_ratio": 1.37,
       "snr_bins": 7, "flux_scale_tol": 3.3e-6, "flux_scale_sample": 777, "noise_max_increase": 0.0123,
       "control_sample": 3210, "sky_rho_max": 0.0432, "fiber_rho_max": 0.0654, "fiber_min_bonferroni_p": 0.0234,
       "date_rho_max": 0.0345, "b_dominance_abs_margin": 0.1234, "b_dominance_n_sigma": 2.75,
       "b_dominance_sample": 43210, "min_recovery": 0.765}


def _descriptions(config: AnomalyConfig) -> dict[str, str]:
    return {c.check_key.name: next(iter(c.check_specs)).description for c in checks.build_checks(config)}


def _quoted(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_check_descriptions_quote_the_config_values():
    default, odd = _descriptions(DEFAULT), _descriptions(AnomalyConfig(controls=ControlsConfig(**ODD)))
    assert set(default) == set(QUOTED)
    for name, fields in QUOTED.items():
        for f in fields:
            assert _quoted(getattr(DEFAULT.controls, f)) in default[name], (name, f, default[name])
            assert _quoted(ODD[f]) in odd[name], (name, f, odd[name])
        assert default[name] != odd[name]
    # the checks in the Definitions are described with the resource they run with
    from desi_assets.definitions import defs
    loaded = {k.name: defs.resolve_asset_graph().get_check_spec(k).description
              for k in defs.resolve_asset_graph().asset_check_keys}
    assert {k: loaded[k] for k in default} == default


def test_a_non_default_config_reaches_the_checks(base, tmp_path, clone_lake):
    """min_recovery and the scoring thresholds set on the resource are the ones the checks use and record."""
    lh = clone_lake(base.root, str(tmp_path / "lake"), ["injection_results"])
    default = _run(checks.injection_recovery, lh)
    lenient = _run(checks.injection_recovery, lh, AnomalyConfig(controls=ControlsConfig(min_recovery=0.0)))
    assert lenient.passed and _meta(lenient)["config_used"]["min_recovery"] == 0.0
    assert _meta(default)["config_used"]["min_recovery"] == 0.8
    assert _meta(lenient)["best"] == _meta(default)["best"]
    # injection.max_fpr reaches the recovery reports: a looser operating point recovers at least as much
    loose = _run(checks.injection_recovery, lh, AnomalyConfig(injection=InjectionConfig(max_fpr=0.2)))
    assert _meta(loose)["config_used"]["max_fpr"] == 0.2 and _meta(loose)["best"] >= _meta(default)["best"]
    # the noise-level control uses the scoring section's thresholds, not a rebuilt default
    res = _run(checks.noise_level, base, AnomalyConfig(scoring=ScoringConfig(threshold=1.5,
                                                                              noise_aware_threshold=123.0)))
    assert _meta(res)["config_used"]["noise_aware_threshold"] == 123.0 and _meta(res)["config_used"]["threshold"] == 1.5
    assert _meta(res)["threshold"]["noise_aware_threshold"] == 123.0


# ------------------------------------------------------------------ fails on biased fixtures
def test_class_balance_fails_on_biased_training_set(base, tmp_path, clone_lake):
    lh = clone_lake(base.root, str(tmp_path / "lake"), ["training_set"])
    ts = lh.read("training_set")
    n = 200
    parts = [ts.filter(pl.col("spectype") == c).sample(k, with_replacement=True, seed=0)
             for c, k in (("GALAXY", n // 2), ("QSO", 3 * n // 10), ("STAR", n // 5))]
    lh.overwrite("training_set", pl.concat(parts))
    res = _run(checks.training_class_balance, lh)
    assert not res.passed
    m = _meta(res)
    assert m["frac_galaxy"] == pytest.approx(0.5) and m["frac_star"] == pytest.approx(0.2)
    assert {f["column"] for f in m["gx_failures"]} == {"frac_galaxy", "frac_qso", "frac_star"}  # 0.3 < 1/3 - 0.02


def _biased_scores(base, tmp_path, fn, clone_lake) -> LakehouseResource:
    """Copy of the lake whose normal spectra's scores are replaced by fn(scored_with_targets frame)."""
    lh = clone_lake(base.root, str(tmp_path / "lake"), ["targets", "anomaly_scores"])
    d = scored_with_targets(lh, normal_only=False)
    s = np.asarray(fn(d), dtype=float)
    s = 1e-3 * (1.0 + (s - np.nanmin(s)) / max(np.nanmax(s) - np.nanmin(s), 1e-12))  # below both thresholds
    rng = np.random.default_rng(0)
    s = s * np.exp(0.05 * rng.standard_normal(s.size))
    out = d.select(lh.read("anomaly_scores").columns).with_columns(
        score=pl.Series(s), score_noise_aware=pl.Series(s), is_anomaly=pl.lit(False),
        is_anomaly_noise_aware=pl.lit(False))
    lh.write_partitions("anomaly_scores", out, out["coadd_key"].unique().to_list())
    return lh


@pytest.mark.parametrize("check,covariate", [
    (checks.sky_position, lambda d: d["target_ra"].to_numpy()),
    (checks.sky_position, lambda d: d["target_dec"].to_numpy()),
    (checks.fiber_number, lambda d: d["fiber"].to_numpy()),
    (checks.fiber_number, lambda d: np.where(d["fiber"].to_numpy() // 500 == 3, 2.0, 1.0)),  # one petal shifted
    (checks.observation_date, lambda d: d["mean_mjd"].to_numpy()),
    (checks.wavelength_invariance, lambda d: d["z"].to_numpy()),
], ids=["ra", "dec", "fiber", "petal", "mjd", "redshift"])
def test_correlation_controls_fail_on_biased_scores(base, tmp_path, check, covariate, clone_lake):
    lh = _biased_scores(base, tmp_path, covariate, clone_lake)
    res = _run(check, lh)
    assert not res.passed, _meta(res)
    assert _meta(res)["gx_failures"]  # the GE suite itself failed


def test_flux_scale_fails_for_a_score_path_without_normalisation(base):
    def unnormalised(model, which="score", raw_ivar=None, batch_size=8192):
        def fn(raw):
            f = np.asarray(raw, np.float32)
            ivar = np.ones_like(f) if raw_ivar is None else np.asarray(raw_ivar, np.float32)
            return getattr(scoring.score_spectra(f, reconstruct(model, f), ivar), which)
        return fn

    res = checks.flux_scale_check(base, DEFAULT, make_score_fn=unnormalised)
    assert not res.passed
    assert _meta(res)["max_rel_diff_score"] > 1e-5 and _meta(res)["gx_failures"]


def test_noise_level_fails_when_threshold_lets_noise_flip_normal_spectra(base):
    s = base.read("anomaly_scores").filter(~pl.col("is_anomaly") & ~pl.col("is_anomaly_noise_aware"))
    low = float(s["score_noise_aware"].quantile(0.3))
    cfg = AnomalyConfig(scoring=ScoringConfig(threshold=float(s["score"].quantile(0.3)), noise_aware_threshold=low))
    res = _run(checks.noise_level, base, cfg)
    assert not res.passed
    assert _meta(res)["increase_score_noise_aware"] >= 0.01 and _meta(res)["gx_failures"]


def test_b_dominance_fails_when_top_scores_are_b_dominant(base, tmp_path, clone_lake):
    lh = clone_lake(base.root, str(tmp_path / "lake"), ["preprocessed_spectra"])
    pre = lh.read("preprocessed_spectra")
    flux = to_numpy_2d(pre["flux"]).copy()
    rng = np.random.default_rng(0)
    hit = rng.random(len(flux)) < 0.03
    b = arm_bin_slices()["b"]
    flux[np.ix_(hit, np.arange(b.start, b.start + 40))] += 30.0  # a b-arm defect far above the noise
    pre = pre.with_columns(pl.Series("flux", to_list_array(flux)))
    lh.write_partitions("preprocessed_spectra", pre, pre["coadd_key"].unique().to_list())
    res = _run(checks.b_band_dominance, lh)
    m = _meta(res)
    assert not res.passed, m
    assert m["b_frac_top_score_noise_aware"] > m["b_frac_expected_score_noise_aware"] + m["margin_score_noise_aware"]


def test_injection_recovery_fails_without_recovery_and_passes_with_it(base, tmp_path, clone_lake):
    lh = clone_lake(base.root, str(tmp_path / "lake"), ["injection_results"])
    inj = lh.read("injection_results")
    clean = inj.filter(pl.col("kind") == "clean")
    rng = np.random.default_rng(0)
    injected = inj.filter(pl.col("kind") != "clean")
    pick = rng.integers(0, clean.height, injected.height)
    none = injected.with_columns(score=clean["score"].gather(pick),
                                 score_noise_aware=clean["score_noise_aware"].gather(pick),
                                 score_local=clean["score_local"].gather(pick))
    lh.overwrite("injection_results", pl.concat([clean, none]))
    res = _run(checks.injection_recovery, lh)
    assert not res.passed and _meta(res)["best"] < 0.1 and _meta(res)["gx_failures"]
    # the same control passes on a table where injections stand far above the clean scores
    far = injected.with_columns(score=pl.col("score") + 1e6)  # one score recovering everything is enough
    lh.overwrite("injection_results", pl.concat([clean, far]))
    assert _run(checks.injection_recovery, lh).passed


@pytest.mark.slow
def test_controls_pass_on_the_demo_survey(tmp_path, build_anomaly_layer):
    """Demo-size mock (12 pixels, scale 1.0, seed 42), default configs, through the jobs: 8 controls pass.

    injection_recovery is evaluated too but not asserted: it FAILS on the demo (overall recovery
    at FPR <= 1% ~0.4 for the best score, score_local; see bench/anomaly_injection.py and the report).
    """
    from desi_assets.sources.mock import MockSurveyConfig

    built = build_anomaly_layer(tmp_path, MockSurveyConfig(n_pixels=12, seed=42, spectra_scale=1.0))
    got, train_s = built["evaluations"], built["train_seconds"]
    print(f"training_set + anomaly_model: {train_s:.0f} s")
    for name, e in got.items():
        print(name, e.passed, {k: getattr(v, "value", v) for k, v in e.metadata.items()
                               if k not in ("rule", "gx_failures")})
    failed = {n for n, e in got.items() if not e.passed}
    assert failed <= {"injection_recovery"}, failed
