"""Seed score, noise-aware χ², categorisation tree, high-z signature (throughput: bench/anomaly_score.py)."""

from __future__ import annotations

import numpy as np

from desi_assets.science.anomaly.scoring import (
    categorize, dominance_labels, highz_signature, is_anomaly, make_score_fn, normalise_binned, score_spectra,
)
from desi_assets.science.wavelength import binned_wavelength


def _toy():
    """Row 0: hand-computable residuals; row 1: same but z-arm ivar all zero."""
    flux = np.ones((2, 496), np.float32)
    flux[:, 248:] = 3.0
    flux[:, 400:410] = 10.0  # outliers: median of flux² stays (1 + 9)/2 = 5, the mean would not
    recon = flux.copy()
    recon[:, 0:171] -= 1.0            # b: residual 1 everywhere → mean 1
    recon[:, 171:316] -= 0.5          # r: residual 0.5 → mean 0.25
    recon[:, 316:334] -= 3.0          # z: residual 3 on 18 of 180 bins → mean 0.9
    ivar = np.ones((2, 496), np.float32)
    ivar[:, 0:171] = 4.0              # χ²_b = 4·1 = 4
    ivar[:, 171:243] = 0.0            # r: 72 masked bins, remaining 73 with ivar 2 → χ²_r = 2·0.25
    ivar[:, 243:316] = 2.0
    ivar[1, 316:] = 0.0               # row 1: no valid z bins
    return flux, recon, ivar


def test_seed_score_hand_computed():
    t = score_spectra(*_toy())
    np.testing.assert_allclose(t.r_b, [0.2, 0.2], rtol=1e-6)      # 1/5
    np.testing.assert_allclose(t.r_r, [0.05, 0.05], rtol=1e-6)    # 0.25/5
    np.testing.assert_allclose(t.r_z, [0.18, 0.18], rtol=1e-6)    # 0.9/5
    np.testing.assert_allclose(t.score, [0.43, 0.43], rtol=1e-6)
    np.testing.assert_allclose(t.frac_b, 0.2 / 0.43, rtol=1e-6)
    np.testing.assert_allclose(t.frac_r, 0.05 / 0.43, rtol=1e-6)
    np.testing.assert_allclose(t.frac_z, 0.18 / 0.43, rtol=1e-6)
    assert list(t.worst_band) == ["B", "B"]
    assert len(t) == 2 and set(t.to_dict()) >= {"score", "score_noise_aware", "worst_band"}


def test_noise_aware_chi2_hand_computed():
    t = score_spectra(*_toy())
    np.testing.assert_allclose(t.chi2_b, [4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(t.chi2_r, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(t.chi2_z[0], 0.9, rtol=1e-6)
    assert np.isnan(t.chi2_z[1])
    np.testing.assert_allclose(t.score_noise_aware[0], 5.4, rtol=1e-6)
    assert np.isnan(t.score_noise_aware[1])
    assert list(t.noise_aware_ok) == [True, False]


def test_worst_band_and_nan_safety():
    flux = np.ones((3, 496), np.float32)
    recon = flux.copy()
    recon[0, 200] = 0.0   # r arm
    recon[1, 400] = 0.0   # z arm
    ivar = np.ones_like(flux)
    ivar[2, 5] = np.nan   # NaN ivar ignored in χ²
    t = score_spectra(flux, recon, ivar)
    assert list(t.worst_band[:2]) == ["R", "Z"]
    assert np.isfinite(t.chi2_b[2]) and t.chi2_b[2] == 0.0
    np.testing.assert_allclose(t.r_r[0], 1 / 145, rtol=1e-6)
    np.testing.assert_allclose(t.chi2_z[1], 1 / 180, rtol=1e-6)


def test_is_anomaly_threshold():
    assert list(is_anomaly(np.array([4.9, 5.0, 5.1, np.nan]))) == [False, False, True, False]
    assert list(is_anomaly(np.array([2.0, 3.5]), threshold=3.0)) == [False, True]


def test_categorisation_every_branch():
    #             artifact  B-dom<=10  novel   highz    hz-gated  multi   normal  art>novel frac=.85
    score = np.array([12.0, 9.0, 20.0, 8.0, 8.0, 6.0, 3.0, 16.0, 12.0])
    fb = np.array([0.90, 0.90, 0.30, 0.10, 0.10, 0.40, 0.40, 0.05, 0.85])
    fr = np.array([0.05, 0.05, 0.65, 0.20, 0.20, 0.30, 0.30, 0.05, 0.10])
    fz = 1 - fb - fr
    st = np.array(["GALAXY", "GALAXY", "QSO", "QSO", "QSO", "STAR", "GALAXY", "QSO", "QSO"])
    hz = np.array([False, False, True, True, True, False, False, False, False])
    zr = np.array([0.1, 0.1, 0.5, 1.0, 2.5, 0.0, 0.1, 1.0, 1.0])
    dom = dominance_labels(score, fb, fr, fz)
    assert list(dom) == ["ARTIFACT_SUSPECT", "B_DOMINANT", "R_DOMINANT", "Z_DOMINANT", "Z_DOMINANT",
                         "MULTI_BAND", "MULTI_BAND", "ARTIFACT_SUSPECT", "B_DOMINANT"]
    cat = categorize(score, fb, fr, fz, st, hz, z_redrock=zr)
    assert list(cat) == ["ARTIFACT_SUSPECT", "UNUSUAL_GALAXY", "GENUINELY_NOVEL", "HIGH_Z_CANDIDATE",
                         "UNUSUAL_AGN", "UNUSUAL_GALAXY", "UNUSUAL_GALAXY", "ARTIFACT_SUSPECT", "UNUSUAL_AGN"]
    cat_t = categorize(score, fb, fr, fz, st, hz, z_redrock=zr, threshold=5.0)
    assert cat_t[6] == "NORMAL" and cat_t[0] == "ARTIFACT_SUSPECT"
    assert dominance_labels(score, fb, fr, fz, threshold=5.0)[6] == "NORMAL"
    # Without z_redrock the signature alone decides.
    assert categorize(score, fb, fr, fz, st, hz)[4] == "HIGH_Z_CANDIDATE"


W = binned_wavelength()


def _qso(z: float) -> np.ndarray:
    rest = W / (1 + z)
    g = lambda mu, a, s: a * np.exp(-0.5 * ((rest - mu) / s) ** 2)  # noqa: E731
    f = (W / 5000.0) ** -1.0 * (1 + g(1215.67, 2.5, 12) + g(1240.8, 0.8, 8) + g(1549.06, 1.0, 15) + g(2799.5, 0.4, 20))
    f = np.where(rest < 1210, 0.55 * f, f)       # Lyα forest transmission
    return np.where(rest < 912, 0.0, f)          # Lyman limit


def _galaxy(z: float) -> np.ndarray:
    rest = W / (1 + z)
    f = np.where(rest < 4000, 0.4, 1.0)          # strong 4000 Å break, no emission peak
    return f + 3 * np.exp(-0.5 * ((rest - 3727) / 2) ** 2) + 5 * np.exp(-0.5 * ((rest - 6563) / 2) ** 2)


def test_highz_signature_synthetic():
    rng = np.random.default_rng(0)
    zs = [2.1, 2.6, 3.2, 3.7]
    q = np.stack([_qso(z) for z in zs]) + rng.normal(0, 0.05, (4, 496))
    qn, _ = normalise_binned(q)
    assert highz_signature(qn, z_redrock=np.full(4, 0.8)).all()       # missed high-z QSO
    assert not highz_signature(qn, z_redrock=np.array(zs)).any()      # Redrock already has it
    low = normalise_binned(np.stack([_qso(z) for z in (0.5, 1.2, 1.9)]))[0]
    assert not highz_signature(low).any()
    gal = normalise_binned(np.stack([_galaxy(z) for z in (0.0, 0.1, 0.3, 0.5)]) + rng.normal(0, 0.1, (4, 496)))[0]
    assert not highz_signature(gal).any()
    # A sharp break without an emission peak (step, then a declining continuum) is not Lyα.
    step = np.where(W < 5000, 0.3, 2.0 * (W / 5000) ** -1.5)[None, :] + rng.normal(0, 0.02, (3, 496))
    assert not highz_signature(normalise_binned(step)[0]).any()
    noise = normalise_binned(rng.normal(0, 1, (500, 496)))[0]
    assert highz_signature(noise).mean() < 0.01
    flat = normalise_binned(1 + rng.normal(0, 0.3, (500, 496)))[0]
    assert not highz_signature(flat).any()


def test_normalise_binned_contract():
    raw = np.array([[2.0, -4.0, np.nan, np.inf, 6.0] + [2.0] * 491])
    f, norm = normalise_binned(raw)
    assert norm[0] == 2.0 and f.dtype == np.float32
    assert f[0, 2] == 0 and f[0, 3] == 0 and f[0, 1] == -2.0
    f0, n0 = normalise_binned(np.zeros((1, 496)))
    assert n0[0] == 1.0 and not f0.any()


def test_make_score_fn_is_scale_invariant():
    import torch
    from desi_assets.science.anomaly.bigae import BigAE

    torch.manual_seed(0)
    fn = make_score_fn(BigAE().eval())
    rng = np.random.default_rng(2)
    raw = (1e-17 * (1 + rng.normal(0, 0.2, (64, 496)))).astype(np.float32)
    s = fn(raw)
    assert s.shape == (64,) and np.all(np.isfinite(s))
    np.testing.assert_allclose(fn(raw * np.float32(1e3)), s, rtol=1e-5)
