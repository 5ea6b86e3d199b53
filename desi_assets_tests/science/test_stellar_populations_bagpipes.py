"""Bagpipes path: pure parts (units, filter files, spectrum binning, priority, result mapping, bad input) + a slow smoke fit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from desi_assets.science.stellar_populations import bagpipes_fit as B
from desi_assets.science.stellar_populations import photometry, simulate, sps
from desi_assets.science.wavelength import ARMS


def observe(z=0.2, tstart=6.0, tau=1.0, zmet=1.0, av=0.3, logmass=10.8, snr=10.0, fiberfrac=0.5, seed=0):
    """One simulated galaxy (simulate.simulate_galaxies) with white noise: (GalaxyInput fields, truth)."""
    rng = np.random.default_rng(seed)
    par = {"tstart_gyr": np.array([tstart]), "tau_gyr": np.array([tau]), "zmet": np.array([zmet]),
           "dust_av": np.array([av]), "vdisp": np.array([150.0])}
    g = simulate.simulate_galaxies(par, np.array([z]), np.array([logmass]), fiberfrac)
    wave = np.concatenate([ARMS[a].wavelength() for a in ARMS])
    flux = np.concatenate([g["arms"][a][0] for a in ARMS])
    sig = np.full(flux.size, np.median(flux) / snr)
    phot, phot_ivar = simulate.phot_noise(rng, g["phot"])
    obs = {"z": z, "wave": wave, "flux": flux + rng.normal(size=flux.size) * sig, "ivar": 1 / sig**2, "phot": phot[0],
               "phot_ivar": phot_ivar[0]}
    return obs, {k: float(v[0]) for k, v in g["truth"].items()}


def test_nanomaggies_to_mujy_values_floor_and_missing():
    f, e, ok = B.nanomaggies_to_mujy(np.array([10.0, 2.0, np.nan, 5.0]), np.array([4.0, 0.0, 1.0, 1.0]), 0.1)
    assert ok.tolist() == [True, False, False, True]
    assert f[0] == pytest.approx(36.31)  # 1 nanomaggy = 3.631 μJy (22.5 AB = 3631e-9 Jy)
    assert e[0] == pytest.approx(np.hypot(0.5, 1.0) * 3.631)  # 1/sqrt(ivar) and 10% floor in quadrature
    assert e[3] == pytest.approx(np.hypot(1.0, 0.5) * 3.631)
    # 22.5 mag AB is 1 nanomaggy: f_ν = 3631 Jy·10^-9 = 3.631 μJy
    assert 3631e6 * 10 ** (-0.4 * 22.5) == pytest.approx(B.NANOMAGGY_UJY)


def test_write_filter_files_round_trip(tmp_path):
    paths = B.write_filter_files(tmp_path)
    assert list(paths) == list(photometry.BAND_NAMES)
    for band, p in paths.items():
        lam, resp = photometry.filter_curves()[band]
        back = np.loadtxt(p)
        np.testing.assert_allclose(back[:, 0], lam, rtol=1e-7)
        np.testing.assert_allclose(back[:, 1], resp, rtol=1e-6, atol=1e-12)
    mtime = {b: (tmp_path / "filters" / f"{photometry.BANDS[b]}.dat").stat().st_mtime_ns for b in paths}
    B.write_filter_files(tmp_path)  # second call reuses the files
    assert {b: (tmp_path / "filters" / f"{photometry.BANDS[b]}.dat").stat().st_mtime_ns for b in paths} == mtime


def test_prepare_spectrum_bins_cuts_sorts_and_converts():
    st = B.BagpipesSettings(bin_factor=4, rest_range_a=(4000.0, 5000.0), mask_lines_kms=0.0)
    z = 0.25
    wave = np.arange(4800.0, 6400.0, 0.8)
    flux = np.full(wave.size, 2.0)
    ivar = np.full(wave.size, 4.0)
    ivar[400:407] = 0.0  # 7 masked pixels hold exactly one whole bin of 4, whatever the bin phase
    flux[:8] = np.nan  # outside the rest range: cut
    o = np.random.default_rng(0).permutation(wave.size)  # unsorted input is sorted first
    spec = B.prepare_spectrum(wave[o], flux[o], ivar[o], z, st)
    assert spec[0, 0] >= 4000 * (1 + z) and spec[-1, 0] <= 5000 * (1 + z)
    assert np.all(np.diff(spec[:, 0]) > 0)
    good = spec[:, 2] < 1e90
    np.testing.assert_allclose(spec[good, 1], 2.0e-17)  # 1e-17 erg/s/cm²/Å → erg/s/cm²/Å
    err = np.round(spec[good, 2] * 1e17, 9)  # ivar-weighted mean of k good pixels of ivar 4: σ = 1/sqrt(4k)
    assert np.isin(err, np.round(1 / np.sqrt([16.0, 12.0, 8.0, 4.0]), 9)).all()
    assert (err == 0.25).sum() >= good.sum() - 2  # only the two bins beside the masked one are partial
    assert (~good).sum() == 1 and spec[~good, 1][0] == pytest.approx(2.0e-17)  # neighbours' flux, no weight



def test_spectral_error_floor_adds_in_quadrature_on_good_bins_only():
    st = B.BagpipesSettings(bin_factor=4, rest_range_a=(4000.0, 5000.0), mask_lines_kms=0.0)
    z, wave = 0.25, np.arange(4800.0, 6400.0, 0.8)
    flux, ivar = np.full(wave.size, 2.0), np.full(wave.size, 4.0)
    ivar[400:407] = 0.0
    plain = B.prepare_spectrum(wave, flux, ivar, z, st)
    floored = B.prepare_spectrum(wave, flux, ivar, z, replace(st, spec_error_floor=0.1))
    good = plain[:, 2] < 1e90
    np.testing.assert_array_equal(floored[:, :2], plain[:, :2])
    np.testing.assert_allclose(floored[good, 2], np.hypot(plain[good, 2], 0.1 * 2.0e-17))  # 10% of |flux| = 2
    np.testing.assert_array_equal(floored[~good, 2], plain[~good, 2])  # a masked bin stays masked


def test_emission_lines_are_masked_before_binning():
    z = 0.1
    wave = np.arange(5000.0, 5800.0, 0.8)
    hbeta = 4862.691 * (1 + z)
    m = B.line_mask(wave, z, 600.0)
    assert m[np.abs(wave - hbeta) < 0.99 * hbeta * 600 / 2.99792458e5].all()
    assert not B.line_mask(np.array([5100.0, 5300.0, hbeta * 1.0021]), z, 600.0).any()  # continuum; Hβ + 630 km/s
    assert B.line_mask(np.array([4687.02 * (1 + z)]), z, 600.0).all()  # He II 4686 (an extra line) too
    st = B.BagpipesSettings(bin_factor=4, rest_range_a=(4600.0, 5200.0))
    flux = np.ones(wave.size)
    flux[np.abs(wave - hbeta) < 3] = 50.0  # a strong line: masked, so no bin sees it
    spec = B.prepare_spectrum(wave, flux, np.ones(wave.size), z, st)
    good = spec[:, 2] < 1e90
    np.testing.assert_allclose(spec[good, 1], 1e-17)
    assert (~good).sum() >= 2 * 8  # Hβ ±600 km/s ≈ ±10.7 Å: 26 pixels, 6 whole bins; [OIII] 4960/5008 too
    assert not B.line_mask(wave, z, 0.0).any()


def test_select_priority_brightest_first_nan_never():
    snr = np.array([3.0, np.nan, 10.0, 7.0, 10.0, 1.0])
    assert B.select_priority(snr, 3).tolist() == [2, 4, 3]
    assert B.select_priority(snr, 0).tolist() == []
    assert B.select_priority(snr, 99).tolist() == [2, 4, 3, 0, 5]


def test_physical_samples_match_the_sps_definitions():
    st = B.BagpipesSettings()
    names = ["delayed:age", "delayed:massformed", "delayed:metallicity", "delayed:tau", "dust:Av"]
    pts = np.array([[5.0, 11.0, 1.0, 1.0, 0.4], [0.5, 9.0, 0.4, 5.0, 1.1]])
    z = 0.3
    s = B.physical_samples(pts, names, z, st)
    props = sps.galaxy_properties(np.array([5.0, 0.5]), np.array([1.0, 5.0]), np.array([1.0, 0.4]))
    dc = B.distance_correction_dex(z, st.cosmology_h0, st.cosmology_om0)
    assert 0.02 < dc < 0.06  # H0 67.7 vs bagpipes' 70: D_L larger, masses higher
    np.testing.assert_allclose(s[:, 0], np.array([11.0, 9.0]) + np.log10(props["live_frac"]) + dc)
    np.testing.assert_allclose(s[:, 1], 10 ** (np.array([11.0, 9.0]) + dc) * props["sfr_per_msun"])
    np.testing.assert_allclose(s[:, 2], props["age_mw_gyr"])
    np.testing.assert_allclose(s[:, 3:], [[0.4, 1.0], [1.1, 0.4]])
    # delayed-τ begun 5 Gyr ago, τ = 1: formation times t ∝ t·e^(-t/τ) have mean ≈ 2τ, so the formed-mass age is
    # ≈ 5 − 1.96 = 3.04 Gyr; weighting by surviving mass (old stars lost less) nudges it up; ~half the mass survives
    assert 0.45 < props["live_frac"][0] < 0.65 and 3.04 < s[0, 2] < 3.3


def test_percentiles_from_known_samples_keys_as_fast_path():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(200_000, 5)) + np.arange(5)
    p = B.percentiles_from_samples(samples)
    assert set(p) == {f"{a}_{q}" for a in B.PARAMS for q in ("p2_5", "p16", "p50", "p84", "p97_5")}
    for j, a in enumerate(B.PARAMS):
        assert p[f"{a}_p50"] == pytest.approx(j, abs=0.01)
        assert p[f"{a}_p84"] - p[f"{a}_p16"] == pytest.approx(2 * 0.99446, abs=0.02)  # Φ⁻¹(0.84) = 0.99446
        assert p[f"{a}_p97_5"] - p[f"{a}_p2_5"] == pytest.approx(3.92, abs=0.04)
    empty = B.percentiles_from_samples(np.zeros((0, 5)))
    assert all(np.isnan(v) for v in empty.values())


def test_fit_instructions_priors():
    st = B.BagpipesSettings(nebular=True)
    fi = B.fit_instructions(1.0, st, with_calibration=True)
    assert fi["delayed"]["age"][1] == pytest.approx(B._age_at_z_gyr(1.0)) and fi["delayed"]["age"][1] < 6.5
    assert fi["dust"]["type"] == "Calzetti" and fi["nebular"]["logU"] == st.logu
    assert fi["calib"]["type"] == "polynomial_max_like" and "noise" in fi
    assert "calib" not in B.fit_instructions(1.0, st, with_calibration=False)
    assert "nebular" not in B.fit_instructions(1.0, B.BagpipesSettings(), True)  # off by default (module note)
    assert "noise" not in B.fit_instructions(1.0, B.BagpipesSettings(fit_noise_scaling=False), True)


def _galaxy(**kw) -> B.GalaxyInput:
    d = dict(targetid=7, **observe(seed=3)[0])
    d.update(kw)
    return B.GalaxyInput(**d)


def test_bad_input_gets_a_status_without_starting_bagpipes():
    st = B.BagpipesSettings()
    g = _galaxy()
    bad = [
        _galaxy(targetid=1, z=np.nan),
        _galaxy(targetid=2, z=-0.1),
        _galaxy(targetid=3, flux=-np.abs(g.flux)),  # a negative spectrum
        _galaxy(targetid=4, ivar=np.zeros_like(g.ivar)),
        _galaxy(targetid=5, flux=g.flux[:100]),
        _galaxy(targetid=6, z=3.0),  # nothing of the rest range left in the DESI window
    ]
    res = B.fit_bagpipes_many(bad, st, workers=2)  # no worker starts: every row fails the cheap checks
    assert [r.targetid for r in res] == [1, 2, 3, 4, 5, 6]
    assert [r.fit_status for r in res] == ["z_out_of_range", "z_out_of_range", "bad_flux",
                                           "no_spectrum_in_rest_range", "bad_shape", "no_spectrum_in_rest_range"]
    assert all(r.samples.shape == (0, 5) and np.isnan(r.percentiles["logmass_p50"]) for r in res)
    assert B.check_input(g, st) is None


@pytest.mark.slow
def test_bagpipes_smoke_fit_one_galaxy(tmp_path):
    """One real Bagpipes + nautilus fit of a noisy old galaxy (~1-4 min): ok status, sane posterior near the truth."""
    obs, truth = observe(seed=1)
    inp = B.GalaxyInput(11, **obs)
    st = B.BagpipesSettings(state_dir=str(tmp_path), n_samples=300)  # continuum-only galaxy, no nebular model
    r = B.fit_bagpipes_many([inp, _galaxy(targetid=12, z=np.nan)], st, workers=1)
    assert r[1].fit_status == "z_out_of_range"
    r = r[0]
    assert r.fit_status == "ok", r.fit_status
    assert r.samples.shape == (300, 5) and r.n_like > 1000
    p = r.percentiles
    assert p["logmass_p16"] <= p["logmass_p50"] <= p["logmass_p84"]
    assert abs(p["logmass_p50"] - truth["logmass"]) < 0.3
    assert abs(np.log10(p["age_mw_p50"] / truth["age_mw"])) < 0.3
    assert p["dust_av_p50"] < 0.8
    # our derived mass agrees with bagpipes' own stellar_mass (same BC03 live fractions)
    assert abs(r.extra["bagpipes_check"]["stellar_mass"] - p["logmass_p50"]) < 0.1
    assert r.extra["fast_resampling"] and r.extra["bands"] == list(photometry.BAND_NAMES)
    assert not list(tmp_path.glob("pipes")) and (tmp_path / "filters").is_dir()


def test_resample_flux_equals_spectres():
    import spectres  # a bagpipes dependency, imported without bagpipes

    rng = np.random.default_rng(2)
    old = np.cumsum(rng.uniform(0.5, 2.0, 3000)) + 3000.0  # irregular input sampling, as bagpipes' R-grid
    flux = rng.normal(size=(2, old.size))
    new = np.linspace(old[0] - 30, old[-1] + 30, 400)  # ends outside the input: filled
    ref = spectres.spectres(new, old, flux, fill=0, verbose=False)
    np.testing.assert_allclose(B.resample_flux(new, old, flux, fill=0), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(B._FastSpectres.spectres(new, old, flux[0], fill=0), ref[0], rtol=1e-9, atol=1e-12)
    fine = np.linspace(old[10], old[-10], 20000)  # new bins inside single old bins take that bin's value
    np.testing.assert_allclose(B.resample_flux(fine, old, flux[0]), spectres.spectres(fine, old, flux[0]),
                               rtol=1e-9, atol=1e-12)


def test_worker_time_limit_gives_timeout_status(tmp_path):
    """The real worker path (spawned process, bagpipes import, filter files) with a 2 s limit: "timeout", no hang."""
    obs, _ = observe(seed=4)
    st = B.BagpipesSettings(state_dir=str(tmp_path), timeout_s=2.0, nebular=False, n_samples=50)
    (r,) = B.fit_bagpipes_many([B.GalaxyInput(21, **obs)], st, workers=1)
    assert r.fit_status == "timeout", r.fit_status
    assert r.targetid == 21 and 0 < r.n_like < 3000  # the sampler stopped early: far fewer calls than a full fit
    assert r.samples.shape == (50, 5)  # the unconverged posterior is kept, flagged by the status
    assert sorted(p.name for p in (tmp_path / "filters").iterdir()) == sorted(
        f"{v}.dat" for v in photometry.BANDS.values())


def test_worker_imports_are_serialised_only_until_the_igm_table_exists(tmp_path, monkeypatch):
    import importlib.util
    from types import SimpleNamespace

    from desi_assets.science.stellar_populations import bagpipes_fit

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[
        str(tmp_path)]))
    assert not bagpipes_fit.igm_table_written()  # a fresh install: the first import writes the table
    grids = tmp_path / "models" / "grids"
    grids.mkdir(parents=True)
    (grids / "d_igm_grid_inoue14.fits").write_bytes(b"")
    assert bagpipes_fit.igm_table_written()
    assert bagpipes_fit.write_igm_table()  # written already: nothing imported
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert not bagpipes_fit.igm_table_written()  # bagpipes absent: keep the lock (the import then fails cleanly)
    assert not bagpipes_fit.write_igm_table()
