"""Localised residual significance: inpainting, the model-error profile and the box matched filter."""

from __future__ import annotations

import numpy as np
import pytest

from desi_assets.science.anomaly.local import (
    LocalCalibration, LocalScore, ModelError, arm_step_significance, fit_model_error, inpaint_bins, local_significance,
)
from desi_assets.science.wavelength import binned_wavelength

N_BINS = 496


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_inpaint_bins_interpolates_linearly_and_keeps_good_bins():
    f = np.tile(np.arange(10, dtype=np.float32) * 2.0, (3, 1))
    f[0, 3:5] = 99.0
    bad = np.zeros_like(f, bool)
    bad[0, 3:5] = True           # interior run → the line through bins 2 and 5
    bad[1, 0:2] = True           # leading edge → nearest good value
    bad[2, :] = True             # all bad → unchanged
    out = inpaint_bins(f, bad)
    np.testing.assert_allclose(out[0], np.arange(10) * 2.0)
    np.testing.assert_allclose(out[1, :2], [4.0, 4.0])
    np.testing.assert_array_equal(out[1, 2:], f[1, 2:])
    np.testing.assert_array_equal(out[2], f[2])
    assert f[0, 3] == 99.0       # input untouched


def test_fit_model_error_recovers_an_injected_excess_variance(rng):
    n = 400
    z = rng.uniform(0.0, 0.5, n)
    flux = np.ones((n, N_BINS))
    ivar = np.full((n, N_BINS), 100.0)  # noise variance 0.01
    recon = flux + rng.normal(0, 0.1, flux.shape)  # noise part, variance 0.01
    rest = binned_wavelength()[None, :] / (1 + z[:, None])
    line = np.abs(rest - 4000.0) < 20.0
    recon = np.where(line, recon + rng.normal(0, 0.5, flux.shape), recon)  # excess variance 0.25 at 4000 Å rest
    me = fit_model_error(flux, recon, ivar, np.zeros_like(flux, bool), z, np.array(["GALAXY"] * n))
    v = me.bin_variance(np.array([0.0]), np.array(["GALAXY"]))[0]
    w = binned_wavelength()
    assert abs(np.median(v[np.abs(w - 4000.0) < 8]) - 0.25) < 0.08
    assert np.median(v[np.abs(w - 5000.0) < 300]) < 0.005
    assert me.bin_variance(np.array([0.1]), np.array(["QSO"])).max() == 0.0  # class never seen → no term
    back = ModelError.from_json(me.to_json())
    np.testing.assert_allclose(back.bin_variance(z[:3], np.array(["GALAXY"] * 3)),
                               me.bin_variance(z[:3], np.array(["GALAXY"] * 3)), atol=1e-6)


def test_local_significance_of_a_known_box(rng):
    n = 200
    recon = np.ones((n, N_BINS))
    ivar = np.full((n, N_BINS), 100.0)
    flux = recon + rng.normal(0, 0.1, recon.shape)
    flux[:, 100:105] += 1.0           # 5-bin box of 10σ per bin → Σχ/√5 ≈ 10·√5 ≈ 22σ (ε = 0)
    s = local_significance(flux, recon, ivar, eps=0.0, highpass_bins=0)
    assert np.all(np.abs(s.score - 10 * np.sqrt(5)) < 4)
    assert np.all(s.width_bins == 5)
    w = binned_wavelength()
    np.testing.assert_allclose(s.wave_a, (w[100] + w[104]) / 2)
    clean = local_significance(recon + rng.normal(0, 0.1, recon.shape), recon, ivar, eps=0.0, highpass_bins=0)
    assert 2.5 < np.median(clean.score) < 5.0  # max of ~3,000 correlated N(0,1) box sums


def test_masked_bins_model_error_and_highpass_suppress_what_they_should(rng):
    n = 50
    recon = np.ones((n, N_BINS))
    ivar = np.full((n, N_BINS), 100.0)
    flux = recon + rng.normal(0, 0.1, recon.shape)
    spiked = flux.copy()
    spiked[:, 300] += 20.0                         # a masked cosmic ray inside the seed's bin mean
    bad = np.zeros_like(flux, bool)
    bad[:, 300] = True
    with_mask = local_significance(spiked, recon, ivar, bad, eps=0.0)
    assert np.all(with_mask.score < 6)
    assert np.all(local_significance(spiked, recon, ivar, eps=0.0).score > 100)
    # model variance 1.0 on that bin turns a 200σ residual into ~20σ
    mv = np.zeros_like(flux)
    mv[:, 300] = 1.0
    assert np.all(local_significance(spiked, recon, ivar, model_var=mv, eps=0.0).score < 25)
    # a smooth 20% continuum misfit of one arm is removed by the high-pass, a 3-bin dip is not
    tilted = flux.copy()
    tilted[:, 171:316] += 0.2 * np.linspace(-1, 1, 145)
    assert np.median(local_significance(tilted, recon, ivar, eps=0.0).score) < 6
    tilted[:, 200:203] -= 1.0
    assert np.all(local_significance(tilted, recon, ivar, eps=0.0).score > 12)


def test_local_significance_bad_input():
    with pytest.raises(ValueError, match="2-D shape"):
        local_significance(np.ones((2, 496)), np.ones((2, 495)), np.ones((2, 496)))
    s = local_significance(np.ones((2, 496)), np.ones((2, 496)), np.zeros((2, 496)))
    assert np.isnan(s.score).all() and (s.width_bins == 0).all()


def test_arm_step_significance_hand_computed():
    recon = np.ones((2, N_BINS))
    ivar = np.full((2, N_BINS), 100.0)     # σ = 0.1 per bin
    flux = recon.copy()
    flux[1, 171:316] *= 1.2                 # the r arm 20% high: steps at both of its boundaries
    s = arm_step_significance(flux, recon, ivar, eps=0.0, n_bins=10)
    # each side: a = Δ, error 1/√(Σ w r²) = 0.1/√10; difference 0.2 over 0.1·√(2/10) = 4.47σ
    np.testing.assert_allclose(s, [0.0, 0.2 / (0.1 * np.sqrt(0.2))], rtol=1e-9)
    flux[0, :171] *= 1.3                    # a b-arm step, seen only at the b/r boundary ...
    assert arm_step_significance(flux, recon, ivar, eps=0.0)[0] > 6
    ivar[0, 161:181] = 0.0                  # ... unmeasurable once those bins carry no data
    assert arm_step_significance(flux, recon, ivar, eps=0.0)[0] == 0.0


def test_local_calibration_scales_each_class_and_component():
    n = 300
    types = np.array(["GALAXY", "QSO", "STAR"] * (n // 3))
    box = np.where(types == "QSO", 10.0, 5.0) * np.linspace(0.5, 1.5, n)
    step = np.full(n, 2.0)
    raw = LocalScore(box, np.full(n, 5000.0), np.ones(n, int), step)
    cal = LocalCalibration.fit(raw, types)
    assert cal.box["QSO"] == pytest.approx(2 * cal.box["GALAXY"], rel=0.05) and cal.step["STAR"] == 2.0
    s = cal.score(raw, types)
    assert np.quantile(s[types == "QSO"], 0.9) == pytest.approx(1.0, abs=0.02)
    # a calibration step far above its clean level wins over an ordinary box value
    jump = LocalScore(np.array([5.0]), np.array([5000.0]), np.array([1]), np.array([20.0]))
    assert cal.score(jump, np.array(["GALAXY"]))[0] == pytest.approx(10.0)
    assert cal.score(jump, np.array(["WD"]))[0] == pytest.approx(20.0 / cal.step["ALL"])  # unknown class: pooled
    back = LocalCalibration.from_json(cal.to_json())
    np.testing.assert_array_equal(back.score(raw, types), s)
    assert np.isnan(cal.score(LocalScore(np.array([np.nan]), np.array([np.nan]), np.array([0]), np.array([0.0])),
                              np.array(["GALAXY"])))[0]
