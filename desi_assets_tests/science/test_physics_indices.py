"""science.physics.indices: known answers on synthetic spectra, Monte Carlo errors, coverage reasons, bad inputs."""

import numpy as np
import polars as pl
import pytest

from desi_assets.science.physics import indices as ix
from desi_assets.science.physics.catalog import index_frame, make_batch
from desi_assets.science.physics.spectra import combine_arms, lsf_on_grid
from desi_assets.science.wavelength import ARMS, combined_wavelength

WAVE = combined_wavelength()
Z = np.array([0.0, 0.05, 0.3])


def _lam2_mean(lo, hi):
    return (hi**3 - lo**3) / 3 / (hi - lo)


def test_flat_flambda_gives_the_lambda_squared_ratio():
    res = ix.measure_indices(WAVE, np.ones((3, WAVE.size)), np.full((3, WAVE.size), 100.0), Z)
    for name in ("dn4000", "d4000", "dn4000_fsf"):
        b = next(i for i in ix.INDICES if i.name == name).bands()
        assert res.value[name] == pytest.approx(_lam2_mean(*b["red"]) / _lam2_mean(*b["blue"]), rel=1e-6)
        assert (res.reason[name] == ix.OK).all()
    for name in ("hdelta_a", "hgamma_a", "fe4383", "hbeta", "mgb", "fe5270", "fe5335", "mg2"):
        assert res.value[name] == pytest.approx(0.0, abs=1e-9)


def test_vacuum_convention_and_fastspecfit_column_differ_by_the_air_shift():
    dn, fsf = ix.INDICES[0].bands(), ix.INDICES[1].bands()
    assert dn["blue"][0] == pytest.approx(3851.09, abs=0.02) and fsf["blue"][0] == 3850.0


@pytest.mark.parametrize("name,center", [("hdelta_a", 4102.9), ("hbeta", 4862.7), ("mgb", 5176.0),
                                         ("fe5270", 5265.0), ("hgamma_a", 4341.7)])
def test_gaussian_absorption_of_known_ew(name, center):
    ew = 2.5  # rest-frame Å, fully inside the central band
    c = center * (1 + Z)
    lines = ix.gaussian_lines(WAVE, c[:, None], (1.2 * (1 + Z))[:, None], (-ew * (1 + Z))[:, None])
    res = ix.measure_indices(WAVE, 1.0 + lines, np.full((3, WAVE.size), 100.0), Z)
    assert res.value[name] == pytest.approx(np.full(3, ew), abs=0.02)


def test_mg2_magnitude_of_a_uniform_depression():
    b = ix.INDICES[[i.name for i in ix.INDICES].index("mg2")].bands()
    flux = np.where((WAVE >= b["central"][0]) & (WAVE <= b["central"][1]), 0.8, 1.0)
    res = ix.measure_indices(WAVE, flux[None, :], np.full((1, WAVE.size), 1e4), [0.0])
    assert res.value["mg2"][0] == pytest.approx(-2.5 * np.log10(0.8), abs=0.01)


def test_errors_match_monte_carlo():
    rng = np.random.default_rng(3)
    base = 1.0 + ix.gaussian_lines(WAVE, np.array([[4102.9 * 1.1, 5176.0 * 1.1, 5270 * 1.1]]),
                                   np.full((1, 3), 2.0), np.full((1, 3), -4.0))[0]
    base *= (WAVE / 4000.0) ** 1.5
    sigma = 0.05
    n = 3000
    flux = base + rng.normal(0, sigma, (n, WAVE.size))
    res = ix.measure_indices(WAVE, flux, np.full((n, WAVE.size), 1 / sigma**2), np.full(n, 0.1))
    for name in ix.INDEX_NAMES:
        mc = np.nanstd(res.value[name])
        assert np.nanmedian(res.error[name]) == pytest.approx(mc, rel=0.12), name


def test_coverage_reasons_masked_band_nan_and_bad_z():
    n = 5
    flux = np.ones((n, WAVE.size))
    ivar = np.full((n, WAVE.size), 100.0)
    z = np.array([0.1, 0.1, 0.1, 0.9, np.nan])
    lo, hi = (np.array(ix.INDICES[0].bands()["blue"]) * 1.1)
    ivar[1, (WAVE > lo) & (WAVE < hi)] = 0  # all-masked Dn4000 blue band
    flux[2, (WAVE > lo) & (WAVE < lo + 0.2 * (hi - lo))] = np.nan  # 20% NaN: below the 90% rule
    res = ix.measure_indices(WAVE, flux, ivar, z)
    assert ix.REASONS[res.reason["dn4000"][0]] == "ok"
    assert ix.REASONS[res.reason["dn4000"][1]] == "masked" and np.isnan(res.value["dn4000"][1])
    assert ix.REASONS[res.reason["dn4000"][2]] == "masked"
    assert ix.REASONS[res.reason["mgb"][3]] == "no_coverage"  # 5207 Å × 1.9 is beyond 9824 Å
    assert ix.REASONS[res.reason["dn4000"][3]] == "ok"
    assert (res.reason["dn4000"][4], np.isnan(res.value["dn4000"][4])) == (ix.NO_COVERAGE, True)
    assert "dn4000" not in res.flags()[0] and "dn4000:masked" in res.flags()[1]


def test_combine_arms_weights_the_overlap_and_drops_masked_pixels():
    n = 2
    flux = {a: np.full((n, ARMS[a].npix), {"b": 1.0, "r": 3.0, "z": 5.0}[a]) for a in ARMS}
    ivar = {a: np.ones((n, ARMS[a].npix)) for a in ARMS}
    mask = {a: np.zeros((n, ARMS[a].npix), np.int32) for a in ARMS}
    mask["r"][1] = 1
    f, iv = combine_arms(flux, ivar, mask)
    i = int(np.searchsorted(WAVE, 5780.0))
    assert f[0, i] == pytest.approx(2.0) and iv[0, i] == 2.0
    assert f[1, i] == pytest.approx(1.0) and iv[1, i] == 1.0
    lsf = lsf_on_grid(np.full((1, 496), 0.7))
    assert lsf.shape == (1, WAVE.size) and np.allclose(lsf, 0.7)


def _frames(spectype, zwarn, z, ivar_value=1.0):
    n = len(z)
    keys = {"coadd_key": ["k"] * n, "survey": ["main"] * n, "program": ["dark"] * n, "healpix": [1] * n,
            "hpxgroup": [0] * n, "targetid": list(range(n))}
    cols = dict(keys)
    for a in ARMS:
        cols[f"flux_{a}"] = [np.ones(ARMS[a].npix, np.float32).tolist()] * n
        cols[f"ivar_{a}"] = [np.full(ARMS[a].npix, ivar_value, np.float32).tolist()] * n
        cols[f"mask_{a}"] = [np.zeros(ARMS[a].npix, np.int32).tolist()] * n
    cols["lsf_sigma"] = [np.full(496, 0.7, np.float32).tolist()] * n
    spectra = pl.DataFrame(cols)
    targets = pl.DataFrame({"coadd_key": ["k"] * n, "targetid": list(range(n)), "z": z, "zwarn": zwarn,
                            "spectype": spectype, "usable": [True] * n})
    return spectra, targets


def test_index_frame_skips_qso_star_zwarn_and_bad_z_with_a_reason():
    spectra, targets = _frames(["GALAXY", "QSO", "STAR", "GALAXY", "GALAXY"], [0, 0, 0, 4, 0],
                               [0.1, 1.2, 0.0, 0.1, 7.0])
    out = index_frame(make_batch(spectra, targets), (0.0, 1.6))
    assert out["status"].to_list() == ["ok", "not_galaxy", "not_galaxy", "zwarn", "out_of_range"]
    assert out["dn4000"][0] is not None and out["dn4000"][1:].null_count() == 4
    assert out.height == 5 and out["targetid"].to_list() == list(range(5))
