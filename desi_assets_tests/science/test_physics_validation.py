"""science.physics.validation and spectra helpers: hand-computed bias/scatter and S/N per Å."""

import numpy as np
import pytest

from desi_assets.science.physics.spectra import continuum_snr_per_a
from desi_assets.science.physics.validation import bias_curve, robust_stats


def test_robust_stats_and_bias_curve_by_hand():
    med, scat, n = robust_stats(np.array([0.0, 0.1, 0.2, np.nan]))
    assert (med, n) == (0.1, 3) and scat == pytest.approx(1.4826 * 0.1)
    true = np.full(6, 100.0)
    fit = np.array([110, 110, 110, 95, 95, 95.0])
    c = bias_curve(fit, true, np.array([3, 3, 3, 12, 12, 12.0]))
    assert c["bias"] == pytest.approx([0.10, -0.05]) and list(c["n"]) == [3, 3]
    assert c["scatter"] == pytest.approx([0.0, 0.0])


def test_continuum_snr_per_angstrom():
    wave = np.arange(3600.0, 9824.0, 0.8)
    flux = np.full((1, wave.size), 2.0)
    ivar = np.full((1, wave.size), 25.0)  # S/N 10 per 0.8 Å pixel -> 10/sqrt(0.8) per Å
    assert continuum_snr_per_a(wave, flux, ivar, np.array([0.1]))[0] == pytest.approx(10 / np.sqrt(0.8))
    assert continuum_snr_per_a(wave, flux, ivar, np.array([3.0]))[0] == 0.0  # rest range not covered
