import numpy as np
import pytest

from desi_assets.science.preprocess import bin_arm, bin_lsf, preprocess
from desi_assets.science.wavelength import ARMS


def _arms(n=2, value=1.0, ivar=4.0):
    return {k: (np.full((n, a.npix), value, np.float32), np.full((n, a.npix), ivar, np.float32),
                np.zeros((n, a.npix), np.int32)) for k, a in ARMS.items()}


def test_bin_arm_hand_computed():
    flux = np.arange(40, dtype=np.float32)[None, :]  # 2 whole bins + 8 remainder pixels
    ivar = np.full((1, 40), 2.0, np.float32)
    fb, ivb, mf = bin_arm(flux, ivar)
    assert fb.tolist() == [[7.5, 23.5]]  # means of 0..15 and 16..31; 32..39 dropped
    # ivar of a 16-pixel mean of pixels with ivar 2: 16 * 2 = 32
    assert np.allclose(ivb, 32.0)
    assert np.all(mf == 0)


def test_bin_arm_nan_inf_become_zero_and_count_as_masked():
    flux = np.ones((1, 16), np.float32)
    flux[0, :2] = [np.nan, np.inf]
    ivar = np.ones((1, 16), np.float32)
    mask = np.zeros((1, 16), np.int32)
    mask[0, 2] = 4  # COSMIC
    fb, ivb, mf = bin_arm(flux, ivar, mask)
    assert fb[0, 0] == pytest.approx(14 / 16)  # NaN and inf contribute 0 (the seed's rule)
    assert mf[0, 0] == pytest.approx(3 / 16)
    assert ivb[0, 0] == pytest.approx(16 * 13 / 13)  # 13 good pixels of ivar 1 -> 16


def test_preprocess_normalises_by_median_abs_flux():
    arms = _arms(value=3.0, ivar=4.0)
    arms["b"][0][1] *= -1  # sign must not matter for the median |flux|
    pre = preprocess(arms)
    assert pre.flux.shape == (2, 496)
    assert np.allclose(pre.norm, 3.0)
    assert np.allclose(np.abs(pre.flux), 1.0)
    # ivar scales by norm^2: 16 * 4 * 9
    assert np.allclose(pre.ivar, 16 * 4 * 9)


def test_all_zero_spectrum_is_invalid_not_nan():
    arms = _arms(value=0.0)
    pre = preprocess(arms)
    assert not pre.valid.any()
    assert np.all(np.isfinite(pre.flux)) and np.all(pre.flux == 0)


def test_wrong_arm_length_raises():
    arms = _arms()
    arms["r"] = tuple(a[:, :-1] for a in arms["r"])
    with pytest.raises(ValueError, match="arm r has 2325 pixels"):
        preprocess(arms)


def test_bin_lsf_means_per_bin():
    lsf = {k: np.full(a.npix, 1.5 if k == "z" else 1.0, np.float32) for k, a in ARMS.items()}
    out = bin_lsf(lsf)
    assert out.shape == (496,) and out[0] == 1.0 and out[-1] == 1.5


def test_chunked_preprocessing_equals_one_batch(monkeypatch):
    from desi_assets.science import preprocess as pp

    rng = np.random.default_rng(0)
    arms = {k: (rng.normal(1, 1, (70, a.npix)).astype(np.float32), rng.uniform(0, 2, (70, a.npix)).astype(np.float32),
                np.zeros((70, a.npix), np.int32)) for k, a in ARMS.items()}
    whole = pp.preprocess(arms)
    monkeypatch.setattr(pp, "CHUNK_ROWS", 16)
    chunked = pp.preprocess(arms)
    for f in ("flux", "ivar", "masked_frac", "norm"):
        assert np.array_equal(getattr(whole, f), getattr(chunked, f))
