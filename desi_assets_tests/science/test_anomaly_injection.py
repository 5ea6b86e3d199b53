"""Anomaly injection on binned spectra and the recovery report."""

from __future__ import annotations

import numpy as np
import pytest

from desi_assets.plots import plot_completeness
from desi_assets.science.anomaly.injection import (
    AMPLITUDE_RANGES, BIN_WIDTH_A, CIV_A, INJECTION_KINDS, OIII_A, box_fraction, choose_hosts, detectability_ceiling,
    draw_amplitudes, inject, injected_snr, recovery_report, roc_auc, threshold_at_fpr,
)
from desi_assets.science.wavelength import arm_bin_slices, binned_wavelength

W = binned_wavelength()


def _flat(n: int):
    return np.ones((n, 496), np.float32), np.full((n, 496), 16.0, np.float32)


def test_box_fraction_hand():
    # Bin 0 is centred at 3606 Å (mean of 3600.0…3612.0), edges 3599.6–3612.4.
    assert W[0] == pytest.approx(3606.0)
    fr = box_fraction(np.array([3600.0]), np.array([3606.4]), W)
    assert fr[0, 0] == pytest.approx(0.5)
    assert fr[0, 1:].sum() == 0


def test_amplitude_draws_in_range():
    rng = np.random.default_rng(0)
    assert set(INJECTION_KINDS) == set(AMPLITUDE_RANGES)
    for k in INJECTION_KINDS:
        lo, hi, unit = AMPLITUDE_RANGES[k]
        a = draw_amplitudes(k, 4000, rng)
        assert a.min() >= lo and a.max() <= hi and unit
        assert np.median(a) == pytest.approx(np.sqrt(lo * hi), rel=0.1)  # log-uniform: weak half well sampled


def test_dead_segment_zeros_range():
    f, iv = _flat(50)
    rng = np.random.default_rng(1)
    amp = draw_amplitudes("dead_segment", 50, rng)
    out, p = inject(f, iv, np.full(50, 0.5), W, "dead_segment", amp, rng, return_params=True)
    np.testing.assert_allclose(p["hi_a"] - p["lo_a"], amp)
    inside = (W[None] - BIN_WIDTH_A / 2 >= p["lo_a"][:, None]) & (W[None] + BIN_WIDTH_A / 2 <= p["hi_a"][:, None])
    outside = (W[None] + BIN_WIDTH_A / 2 <= p["lo_a"][:, None]) | (W[None] - BIN_WIDTH_A / 2 >= p["hi_a"][:, None])
    assert np.all(out[inside] == 0) and inside.any()
    assert np.all(out[outside] == 1)
    # Lost flux = width in Å / bin width (flat unit flux), both arms counted where they overlap.
    lost = (1 - out).sum(axis=1) * BIN_WIDTH_A
    single = (p["lo_a"] > 5800) & (p["hi_a"] < 7500) | (p["lo_a"] > 3620) & (p["hi_a"] < 5750)
    np.testing.assert_allclose(lost[single], amp[single], rtol=1e-4)
    assert np.all(f == 1)  # input untouched


def test_calibration_jump_scales_exactly_one_arm():
    rng = np.random.default_rng(2)
    f = (1 + 0.1 * rng.standard_normal((30, 496))).astype(np.float32)
    iv = np.ones_like(f)
    amp = draw_amplitudes("calibration_jump", 30, rng)
    out, p = inject(f, iv, np.zeros(30), W, "calibration_jump", amp, rng, return_params=True)
    np.testing.assert_allclose(np.abs(p["factor"] - 1), amp, rtol=1e-12)
    for i in range(30):
        changed = [a for a, sl in arm_bin_slices().items() if not np.allclose(out[i, sl], f[i, sl])]
        assert changed == [p["arm"][i]]
        sl = arm_bin_slices()[p["arm"][i]]
        np.testing.assert_allclose(out[i, sl], f[i, sl] * p["factor"][i], rtol=1e-6)


def test_bal_trough_blueward_of_civ():
    f, iv = _flat(20)
    rng = np.random.default_rng(3)
    z = np.full(20, 2.5)
    amp = draw_amplitudes("bal", 20, rng)
    out, p = inject(f, iv, z, W, "bal", amp, rng, spectype=np.array(["QSO"] * 20), return_params=True)
    assert p["qso_mode"].all()
    civ = CIV_A * 3.5
    for i in range(20):
        changed = out[i] < 1
        assert changed.any()
        assert np.all(W[changed] < civ + BIN_WIDTH_A / 2)
        # Fully covered CIV-trough bins are at exactly 1 − depth.
        full = (W - BIN_WIDTH_A / 2 >= p["lo_a"][i]) & (W + BIN_WIDTH_A / 2 <= p["hi_a"][i])
        np.testing.assert_allclose(out[i, full], 1 - amp[i], rtol=1e-6)
        width_kms = (p["hi_a"][i] - p["lo_a"][i]) / civ * 299792.458
        assert 1900 < width_kms < 10100
    # Galaxies get a generic trough (not tied to CIV).
    _, pg = inject(f, iv, z, W, "bal", amp, rng, spectype=np.array(["GALAXY"] * 20), return_params=True)
    assert not pg["qso_mode"].any()


def test_strong_line_flux_and_position():
    f, iv = _flat(3)
    rng = np.random.default_rng(4)
    z = np.array([0.1, 1.0, 2.5])
    out, p = inject(f, iv, z, W, "strong_line", 500.0, rng, return_params=True)
    assert list(p["line"]) == ["OIII5007", "NeV3426", "generic"]
    added = (out - f).sum(axis=1) * BIN_WIDTH_A
    # EW_obs = EW_rest (1+z) on unit continuum (single arm at these wavelengths).
    np.testing.assert_allclose(added[:2], 500.0 * (1 + z[:2]), rtol=0.01)
    assert abs(W[np.argmax(out[0])] - OIII_A * 1.1) < BIN_WIDTH_A


def test_cosmic_ray_binned_amplitude():
    f, iv = _flat(40)   # ivar 16 → σ_bin 0.25, σ_pixel ≈ 1.0
    rng = np.random.default_rng(5)
    amp = draw_amplitudes("cosmic_ray", 40, rng)
    out, p = inject(f, iv, np.zeros(40), W, "cosmic_ray", amp, rng, return_params=True)
    d = out - f
    assert np.all((d != 0).sum(axis=1) == 1)
    np.testing.assert_allclose(d.max(axis=1), amp * p["npix"] * 0.25 / 4, rtol=1e-5)  # A·σ_pix·npix/16
    assert set(np.unique(p["npix"])) <= {1, 2, 3}


def test_broad_balmer_adds_halpha_and_hbeta():
    f, iv = _flat(2)
    rng = np.random.default_rng(6)
    f, iv = _flat(3)
    out, p = inject(f, iv, np.array([0.1, 1.5, 3.0]), W, "broad_balmer", 90.0, rng, return_params=True)
    assert list(p["balmer"]) == [True, False, False] and list(p["mgii"]) == [False, True, False]
    assert list(p["civ"]) == [False, False, True]
    added = (out[0] - f[0]).sum() * BIN_WIDTH_A
    np.testing.assert_allclose(added, 90.0 * 1.1 * (1 + 1 / 3), rtol=0.02)
    assert (out[1] > f[1]).any()


@pytest.mark.parametrize("kind", INJECTION_KINDS)
def test_every_kind_changes_spectrum(kind):
    rng = np.random.default_rng(7)
    f = (1 + 0.05 * rng.standard_normal((25, 496))).astype(np.float32)
    iv = np.full_like(f, 100.0)
    z = rng.uniform(0.0, 3.0, 25)
    out = inject(f, iv, z, W, kind, draw_amplitudes(kind, 25, rng), rng)
    assert out.shape == f.shape and out.dtype == np.float32
    assert np.all(np.any(out != f, axis=1))


def test_unknown_kind_rejected():
    f, iv = _flat(1)
    with pytest.raises(ValueError):
        inject(f, iv, np.zeros(1), W, "nope", 1.0, np.random.default_rng(0))


def test_auc_and_fpr_threshold_hand():
    assert roc_auc(np.array([1.0, 2, 3]), np.array([4.0, 5])) == 1.0
    assert roc_auc(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 0.5
    assert roc_auc(np.array([1.0, 2, 3]), np.array([2.5, 4])) == pytest.approx(5 / 6)
    clean = np.arange(100.0)
    assert threshold_at_fpr(clean, 0.01) == 98.0
    assert np.mean(clean > 98.0) == 0.01


def test_recovery_report_known_values(tmp_path):
    rng = np.random.default_rng(8)
    clean = rng.uniform(0, 10, 1000)
    a_cr = draw_amplitudes("cosmic_ray", 2000, rng)
    a_dead = draw_amplitudes("dead_segment", 500, rng)
    inj = np.concatenate([a_cr, np.full(500, 100.0)])          # cosmic: score = amplitude; dead: all huge
    kinds = np.array(["cosmic_ray"] * 2000 + ["dead_segment"] * 500)
    amps = np.concatenate([a_cr, a_dead])
    rep = recovery_report(clean, inj, kinds, amps, threshold=20.0)
    assert set(rep) == {"cosmic_ray", "dead_segment", "overall"}
    cr, dead = rep["cosmic_ray"], rep["dead_segment"]
    assert cr["fpr"] == 0.0 and dead["auc"] == 1.0 and dead["recovery"] == 1.0
    assert cr["recovery"] == pytest.approx(np.mean(a_cr > 20))
    strong = a_cr >= np.sqrt(5 * 50)
    assert cr["recovery_strong_half"] == pytest.approx(np.mean(a_cr[strong] > 20))
    assert 15 < cr["amplitude_50"] < 27 and cr["amplitude_50_status"] == "interpolated"
    # FPR ≤ 1% threshold sits near the 99th percentile of U(0,10).
    assert cr["threshold_fpr1"] == pytest.approx(9.9, abs=0.15) and cr["fpr_at_threshold_fpr1"] <= 0.01
    assert cr["recovery_at_fpr1"] == pytest.approx(np.mean(a_cr > cr["threshold_fpr1"]))
    assert rep["overall"]["n"] == 2500
    assert dead["amplitude_50_status"] == "upper_limit"
    # Identical distributions → AUC 0.5.
    same = recovery_report(clean, clean.copy(), np.array(["bal"] * 1000), np.full(1000, 0.5), threshold=5.0)
    assert same["bal"]["auc"] == pytest.approx(0.5)
    assert plot_completeness(rep, str(tmp_path / "c.png")).endswith("c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_injected_snr_hand():
    clean = np.zeros((2, 496))
    inj = clean.copy()
    inj[0, 10] = 0.5   # ivar 16 -> (0.5*4)^2 = 4
    inj[0, 20] = -0.25  # (0.25*4)^2 = 1  -> S/N sqrt(5)
    inj[1, 30] = 9.0   # masked bin (ivar 0) does not count
    ivar = np.full((2, 496), 16.0)
    ivar[1, 30] = 0.0
    assert injected_snr(clean, inj, ivar) == pytest.approx([np.sqrt(5.0), 0.0])


def test_dead_segment_snr_matches_flux_and_ivar():
    f, iv = _flat(20)
    amp = np.full(20, 128.0)  # 10 bins' width zeroed (whole or partial) of unit flux at ivar 16
    fi, par = inject(f, iv, np.zeros(20), W, "dead_segment", amp, np.random.default_rng(3), return_params=True)
    snr = injected_snr(f, fi, iv)
    fr = box_fraction(par["lo_a"], par["hi_a"], W)  # removed flux per bin = coverage fraction
    assert snr == pytest.approx(4.0 * np.sqrt((fr ** 2).sum(axis=1)), rel=1e-5)
    assert np.all(snr >= 4.0 * np.sqrt(9.0))  # ≥ 9 fully covered bins (more where the arms overlap)


def test_detectability_ceiling_fractions():
    lo, hi, _ = AMPLITUDE_RANGES["cosmic_ray"]
    mid = np.sqrt(lo * hi)
    kinds = np.array(["cosmic_ray"] * 4 + ["dead_segment"] * 2)
    amps = np.array([lo, lo, hi, hi, 250.0, 25.0])
    snr = np.array([1.0, 6.0, 4.0, 7.0, 30.0, 2.0])
    c = detectability_ceiling(snr, kinds, amps, min_snr=5.0)
    assert c["cosmic_ray"]["frac_detectable"] == pytest.approx(0.5)
    assert c["cosmic_ray"]["frac_detectable_strong_half"] == pytest.approx(0.5)  # hi: 4 (no), 7 (yes)
    assert c["dead_segment"]["frac_detectable_strong_half"] == pytest.approx(1.0)  # 250 Å >= sqrt(20*300)
    assert c["overall"]["frac_detectable"] == pytest.approx(3 / 6)
    assert c["overall"]["frac_detectable_strong_half"] == pytest.approx(2 / 3)
    assert hi > mid > lo


def test_np_bound_is_the_power_of_the_known_signal_test():
    from scipy.special import ndtri

    z99 = ndtri(0.99)  # 2.326: one-sided threshold at FPR 1%
    kinds = np.array(["dead_segment"] * 3)
    amps = np.array([20.0, 250.0, 300.0])
    c = detectability_ceiling(np.array([0.0, z99, 40.0]), kinds, amps, max_fpr=0.01)
    # S/N 0 is detected at the false-positive rate, S/N = threshold half the time, S/N 40 always.
    assert c["dead_segment"]["np_bound"] == pytest.approx((0.01 + 0.5 + 1.0) / 3, abs=1e-6)
    assert c["dead_segment"]["np_bound_strong_half"] == pytest.approx(0.75, abs=1e-6)
    looser = detectability_ceiling(np.array([0.0, z99, 40.0]), kinds, amps, max_fpr=0.1)
    assert looser["dead_segment"]["np_bound"] > c["dead_segment"]["np_bound"]


def test_choose_hosts_puts_bal_troughs_in_quasars():
    spectype = np.array(["GALAXY"] * 50 + ["QSO"] * 12 + ["STAR"] * 30)
    rng = np.random.default_rng(0)
    bal = choose_hosts("bal", spectype, 40, rng)
    assert bal.size == 40 and set(spectype[bal]) == {"QSO"}  # 12 quasars, drawn with replacement
    line = choose_hosts("strong_line", spectype, 40, rng)
    assert np.unique(line).size == 40 and set(spectype[line]) > {"GALAXY"}
    few_qso = np.array(["GALAXY"] * 20 + ["QSO"] * 3)
    few = choose_hosts("bal", few_qso, 50, rng)  # too few quasars: any spectrum, repeated
    assert few.size == 50 and (few_qso[few] == "GALAXY").any()
    assert choose_hosts("cosmic_ray", np.array([], dtype=str), 5, rng).size == 0
