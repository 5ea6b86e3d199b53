"""science.physics.fit: pPXF recovery of σ*, gas σ and a line flux on a noiseless mock galaxy; statuses."""

import numpy as np
import pytest
from ppxf import ppxf_util

from desi_assets.science.physics import indices as ix
from desi_assets.science.physics.fit import FitSettings, fit_spectrum
from desi_assets.science.physics.spectra import C_KMS
from desi_assets.science.physics.templates import load_templates
from desi_assets.science.wavelength import combined_wavelength

WAVE = combined_wavelength()
LSF = 0.75  # observed-frame σ, Å (DESI-like)


def _mock_galaxy(z: float, sigma_kms: float, gas_sigma_kms: float, ha_flux: float, tset):
    """BC03 mix broadened by σ*, moved to z, through a Gaussian LSF, plus Hα (flux in flux·Å); noiseless."""
    lam = np.exp(tset.ln_lam)
    rest = 0.6 * tset.flux[:, -1] + 0.4 * tset.flux[:, 20]
    rest = ppxf_util.varsmooth(tset.ln_lam, rest, np.full(lam.size, sigma_kms / C_KMS))
    obs = np.interp(WAVE / (1 + z), lam, rest, left=np.nan, right=np.nan)
    obs = ppxf_util.varsmooth(WAVE, np.nan_to_num(obs), np.full(WAVE.size, LSF))
    obs[~np.isfinite(np.interp(WAVE / (1 + z), lam, rest, left=np.nan, right=np.nan))] = 0
    c = 6564.632 * (1 + z)
    s = np.hypot(c * gas_sigma_kms / C_KMS, LSF)
    obs = obs * 10 + ix.gaussian_lines(WAVE, np.array([[c]]), np.array([[s]]), np.array([[ha_flux]]))[0]
    return obs


@pytest.fixture(scope="module")
def tset():
    return load_templates("bc03", 50.0, fwhm_a=0.0)


def test_noiseless_mock_galaxy_is_recovered(tset):
    z = 0.12
    flux = _mock_galaxy(z, 180.0, 60.0, 150.0, tset)
    ivar = np.where(flux > 0, 1e4, 0.0)
    settings = FitSettings(template_fwhm_a=0.0)  # the mock's stars are the templates themselves
    r = fit_spectrum(WAVE, flux, ivar, np.full(WAVE.size, LSF), z, tset, settings, keep_model=True)
    assert r.status == "ok", r.status
    assert r.vdisp == pytest.approx(180.0, rel=0.03)
    assert abs(r.vel) < 5.0
    assert r.gas_sigma == pytest.approx(60.0, rel=0.1)
    assert r.flux["halpha"] == pytest.approx(150.0, rel=0.03)
    assert r.ew["halpha"] > 0 and r.vdisp_below_floor is False
    assert set(r.model) >= {"wave", "data", "stars", "gas"}


def test_statuses_for_bad_inputs(tset):
    flat = np.ones(WAVE.size)
    iv = np.full(WAVE.size, 1e4)
    s = FitSettings()
    assert fit_spectrum(WAVE, flat, iv, LSF, np.nan, tset, s).status == "out_of_range"
    assert fit_spectrum(WAVE, flat, iv, LSF, 3.0, tset, s).status == "out_of_range"  # rest range < templates
    assert fit_spectrum(WAVE, flat, np.full(WAVE.size, 1e-6), LSF, 0.1, tset, s).status == "low_sn"
    nan = flat.copy()
    nan[::2] = np.nan
    r = fit_spectrum(WAVE, nan * 0 + np.nan, iv, LSF, 0.1, tset, s)
    assert r.status == "out_of_range"  # no finite pixel at all
    bad = fit_spectrum(WAVE, flat, iv, np.full(WAVE.size, -1.0), 0.1, tset, s)  # nonsense LSF
    assert bad.status.startswith(("failed", "ok", "out_of_range"))
