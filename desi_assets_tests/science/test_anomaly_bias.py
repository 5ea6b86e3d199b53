"""Bias controls: each passes on an unbiased synthetic input and fails on a deliberately biased one."""

from __future__ import annotations

import numpy as np
import pytest

from desi_assets.science.anomaly import bias
from desi_assets.science.anomaly.injection import recovery_report
from desi_assets.science.wavelength import arm_bin_slices

N = 4000


@pytest.fixture()
def rng():
    return np.random.default_rng(42)


def test_class_balance(rng):
    ok = bias.class_balance(np.array(["GALAXY", "QSO", "STAR"] * 1000))
    assert ok.passed and ok.statistic["max_abs_deviation"] == pytest.approx(0.0)
    bad = bias.class_balance(np.array(["GALAXY"] * 50 + ["QSO"] * 30 + ["STAR"] * 20))
    assert not bad.passed and bad.statistic["frac_galaxy"] == 0.5
    assert bad.statistic["max_abs_deviation"] == pytest.approx(0.5 - 1 / 3)


def test_wavelength_invariance(rng):
    z = rng.uniform(0, 3, N)
    assert bias.wavelength_invariance(rng.lognormal(0, 0.5, N), z).passed
    res = bias.wavelength_invariance(np.exp(0.5 * z + rng.normal(0, 0.5, N)), z)
    assert not res.passed and res.statistic["rho"] > 0.5 and res.statistic["p_value"] < 1e-10
    # |ρ| < 0.1 (noisy scores) but a large effect: the top-z quintile median is ~2× the bottom one.
    weak = bias.wavelength_invariance(np.exp(0.2 * z + rng.normal(0, 3.0, N)), z)
    assert abs(weak.statistic["rho"]) < 0.1
    assert weak.statistic["quintile_median_ratio"] > 1.5 and not weak.passed
    # Small sample: a large |ρ| that is not significant passes and says so.
    small = bias.wavelength_invariance(np.array([1.0, 3.0, 2.0, 5.0, 4.0]), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert small.statistic["rho"] == pytest.approx(0.8) and small.statistic["p_value"] > 0.01
    assert small.passed and "not significant" in small.description


def test_scale_invariance(rng):
    import torch
    from desi_assets.science.anomaly.bigae import BigAE
    from desi_assets.science.anomaly.scoring import make_score_fn

    torch.manual_seed(0)
    flux = (3e-17 * (1 + 0.2 * rng.standard_normal((200, 496)))).astype(np.float32)
    ok = bias.scale_invariance(make_score_fn(BigAE().eval()), flux)
    assert ok.passed, ok.statistic
    bad = bias.scale_invariance(lambda f: np.sum(np.asarray(f, float) ** 2, axis=1), flux)
    assert not bad.passed and bad.statistic["max_rel_diff"] > 0.99
    # Subtle: normalises but adds an absolute floor → not invariant.
    sub = bias.scale_invariance(lambda f: np.std(f, axis=1) / (np.median(np.abs(f), axis=1) + 1e-18), flux)
    assert not sub.passed


def _template_and_noise(rng, n=2000):
    ivar = np.full((n, 496), 100.0)
    template = np.ones((n, 496))
    flux = template + rng.standard_normal((n, 496)) / np.sqrt(ivar)
    return template, flux, ivar


def test_noise_stability(rng):
    template, flux, ivar = _template_and_noise(rng)
    chi2 = lambda f: np.mean((f - template) ** 2 * ivar, axis=1)  # noqa: E731  (~1 → ~2 with noise)
    ok = bias.noise_stability(chi2, flux, ivar, threshold=5.0, rng=rng)
    assert ok.passed and ok.statistic["rate_clean"] == 0.0 and ok.statistic["rate_noisy"] == 0.0
    peak = lambda f: np.max(np.abs(f - template) * np.sqrt(ivar), axis=1)  # noqa: E731
    bad = bias.noise_stability(peak, flux, ivar, threshold=4.0, rng=rng)
    assert not bad.passed and bad.statistic["increase"] > 0.2


def test_sky_position(rng):
    ra = rng.uniform(0, 360, N)
    dec = np.degrees(np.arcsin(rng.uniform(-0.3, 1, N)))
    ok = bias.sky_position(rng.lognormal(0, 0.5, N), ra, dec)
    assert ok.passed and set(ok.statistic) >= {"rho_ra", "rho_dec", "rho_gal_b", "p_gal_b"}
    bad = bias.sky_position(ra / 360 + rng.normal(0, 0.3, N), ra, dec)
    assert not bad.passed and bad.statistic["rho_ra"] > 0.3


def test_fiber_control(rng):
    fiber = rng.integers(0, 5000, N)
    score = rng.lognormal(0, 0.5, N)
    ok = bias.fiber_control(score, fiber)
    assert ok.passed and ok.statistic["n_petals"] == 10
    shifted = score * np.where(fiber // 500 == 3, 1.6, 1.0)   # one petal's scores shifted
    bad = bias.fiber_control(shifted, fiber)
    assert not bad.passed and bad.statistic["ks_min_p_bonferroni"] < 0.01
    trend = bias.fiber_control(score * (1 + fiber / 2000), fiber)
    assert not trend.passed and trend.statistic["rho_fiber"] > 0.05


def test_observation_date(rng):
    mjd = rng.uniform(59000, 60500, N)
    assert bias.observation_date(rng.lognormal(0, 0.5, N), mjd).passed
    bad = bias.observation_date(np.exp((mjd - 59000) / 1500 + rng.normal(0, 0.5, N)), mjd)
    assert not bad.passed and bad.statistic["rho_mjd"] > 0.3


def _b_setup(rng, n=5000):
    sl = arm_bin_slices()
    ivar = np.empty((n, 496), np.float32)
    ivar[:, sl["b"]], ivar[:, sl["r"]], ivar[:, sl["z"]] = 25.0, 100.0, 64.0  # blue arm noisiest
    recon = np.ones((n, 496), np.float32)
    flux = (recon + rng.standard_normal((n, 496)) / np.sqrt(ivar)).astype(np.float32)
    return flux, recon, ivar, sl


def test_b_band_dominance(rng):
    flux, recon, ivar, sl = _b_setup(rng)
    ok = bias.b_band_dominance(flux, recon, ivar, rng)
    assert ok.passed, ok.statistic
    # Seed score is B-heavy from noise alone; noise-aware is not.
    assert ok.statistic["b_frac_expected_score"] > 0.3
    assert ok.statistic["b_frac_expected_score_noise_aware"] < 0.1
    bad_flux = flux.copy()
    bad_flux[:200, sl["b"]] += 0.5 * np.sin(np.linspace(0, 20, 171))[None, :]  # systematic blue residual
    bad = bias.b_band_dominance(bad_flux, recon, ivar, rng)
    assert not bad.passed and bad.statistic["b_frac_top_score_noise_aware"] > 0.9


def test_injection_recovery(rng):
    clean = rng.normal(0, 1, 2000)
    kinds = np.array(["bal"] * 500 + ["cosmic_ray"] * 500)
    amps = np.concatenate([np.full(500, 0.5), np.full(500, 20.0)])
    good = recovery_report(clean, rng.normal(6, 1, 1000), kinds, amps)
    poor = recovery_report(clean, rng.normal(1, 1, 1000), kinds, amps)
    assert bias.injection_recovery({"score": poor, "score_local": good}).passed   # the best score counts
    res = bias.injection_recovery({"score": poor, "score_noise_aware": poor})
    assert not res.passed and res.statistic["best"] < 0.8
    assert {"score_bal_recovery_at_fpr1", "score_noise_aware_cosmic_ray_recovery_at_fpr1"} <= set(res.statistic)


def test_results_serialise():
    r = bias.class_balance(np.array(["GALAXY", "QSO", "STAR"]))
    d = r.to_dict()
    assert set(d) >= {"name", "statistic", "threshold", "passed", "description"}
    assert all(isinstance(v, float) for v in d["statistic"].values())
