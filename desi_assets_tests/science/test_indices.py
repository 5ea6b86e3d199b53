"""Spectral indices: Dn4000 and HδA on analytic spectra."""

import numpy as np
import pytest

from desi_assets.science.indices import (DN4000_VAC, HDELTA_A_VAC, air_to_vac, band_integral, d4000, dn4000,
                                         hdelta_a, vac_to_air)

WAVE = np.arange(3600.0, 4500.0, 0.37)


def test_air_to_vac_matches_reference_shift():
    assert air_to_vac(4000.0) - 4000.0 == pytest.approx(1.13, abs=0.02)
    assert vac_to_air(air_to_vac(5300.0)) == pytest.approx(5300.0, abs=1e-6)
    assert DN4000_VAC["blue"][0] == pytest.approx(3851.09, abs=0.02)


def test_dn4000_flat_fnu_is_one():
    flux = 1e3 / WAVE**2  # F_ν constant
    assert dn4000(WAVE, flux) == pytest.approx(1.0, abs=1e-9)
    assert d4000(WAVE, flux) == pytest.approx(1.0, abs=1e-9)


def test_dn4000_step_function_ratio():
    fnu = np.where(WAVE > 3975.0, 1.8, 1.0)
    assert dn4000(WAVE, fnu / WAVE**2) == pytest.approx(1.8, rel=1e-9)


def test_dn4000_vectorised_rows_and_uncovered_is_nan():
    flux = np.stack([1 / WAVE**2, np.where(WAVE > 3975.0, 2.0, 1.0) / WAVE**2])
    assert np.allclose(dn4000(WAVE, flux), [1.0, 2.0])
    assert np.isnan(dn4000(WAVE[WAVE > 3900], 1 / WAVE[WAVE > 3900] ** 2))


def test_band_integral_fractional_pixels():
    w = np.arange(0.0, 10.0, 1.0)
    assert band_integral(w, np.ones_like(w), 2.25, 5.75) == pytest.approx(3.5)


def test_hdelta_flat_is_zero_and_gaussian_ew_recovered():
    w = np.arange(4000.0, 4200.0, 0.2)
    assert hdelta_a(w, np.full(w.size, 3.0)) == pytest.approx(0.0, abs=1e-9)
    ew, sig = 5.0, 3.0
    c = 0.5 * sum(HDELTA_A_VAC["central"])
    flux = 2.0 * (1 - ew / (np.sqrt(2 * np.pi) * sig) * np.exp(-0.5 * ((w - c) / sig) ** 2))
    assert hdelta_a(w, flux) == pytest.approx(ew, rel=0.01)
    # a sloped continuum must not change the answer much
    slope = 1 + (w - 4100) / 2000
    assert hdelta_a(w, flux * slope) == pytest.approx(ew, rel=0.03)


def test_air_to_vac_leaves_the_far_uv_alone_and_stays_increasing():
    import numpy as np

    w = np.geomspace(100.0, 1e5, 5000)  # Ciddor's formula has a pole at 648 Å
    v = air_to_vac(w)
    assert np.all(np.diff(v) > 0)
    assert np.array_equal(v[w < 2000], w[w < 2000])
