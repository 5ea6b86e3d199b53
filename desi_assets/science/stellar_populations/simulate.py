"""Simulated galaxies with known truth for calibrating and validating the stellar-population fits (pure numpy).

The spectra are made the way the mock makes them, independently of the fast path's compressed library:
full-resolution (30 km/s) `sps.rest_continuum_from_weights` sampled at λ_obs/(1+z) on DESI's 0.8 Å arm pixels,
and total g, r, z, W1, W2 fluxes from `photometry.sed_band_fluxes` (the mock's; continuum only, no lines). Noise is the caller's
(the instrument model, or the ivar of real spectra); see `add_noise`.
"""

from __future__ import annotations

import numpy as np

from desi_assets.science import indices
from desi_assets.science.preprocess import bin_arm
from desi_assets.science.stellar_populations import photometry, sps
from desi_assets.science.stellar_populations.fast import (
    FastSettings,
    distance_factor,
    draw_prior,
    universe_age_gyr,
)
from desi_assets.science.wavelength import ARMS


def draw_population(rng: np.random.Generator, z: np.ndarray, kind: str = "mixed",
                    settings: FastSettings | None = None) -> dict[str, np.ndarray]:
    """SFH/dust/Z/σ★ parameters for galaxies at redshifts z (per row: tstart_gyr, tau_gyr, zmet, dust_av, vdisp).

    kind "library": the fast path's own prior (`fast.draw_prior`, tstart up to the age of the Universe);
    "mixed": a red/blue/starburst mixture like the mock survey's delayed-τ galaxies (40% red, 20% of the blue young
    bursts), i.e. a population the prior was not drawn from.
    """
    settings = settings or FastSettings()
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    tmax = universe_age_gyr(z, settings.h0, settings.om0) - 0.05
    if kind == "library":
        p = draw_prior(settings, n, rng, tmax)
        p.pop("component")
        return p
    if kind != "mixed":
        raise ValueError(f"unknown population kind {kind!r}")
    red = rng.uniform(size=n) < 0.4
    ts = np.where(red, rng.uniform(0.55, 0.98, n), rng.uniform(0.15, 0.9, n)) * tmax
    tau = np.where(red, rng.uniform(0.2, 1.2, n), np.exp(rng.uniform(np.log(1.5), np.log(15), n)))
    zmet = np.where(red, 10 ** rng.uniform(-0.1, 0.4, n), 10 ** rng.uniform(-0.7, 0.1, n))
    av = np.where(red, rng.uniform(0, 0.35, n), rng.uniform(0.1, 1.2, n))
    vdisp = np.where(red, rng.uniform(140, 350, n), rng.uniform(50, 150, n))
    burst = ~red & (rng.uniform(size=n) < 0.2)
    ts = np.where(burst, np.exp(rng.uniform(np.log(0.005), np.log(1.0), n)), ts)
    tau = np.where(burst, rng.uniform(5.0, 15.0, n), tau)
    zmet = np.where(burst, 10 ** rng.uniform(-0.7, -0.2, n), zmet)
    av = np.where(burst, rng.uniform(0.05, 0.6, n), av)
    vdisp = np.where(burst, rng.uniform(40, 90, n), vdisp)
    return {"tstart_gyr": np.maximum(ts, 0.005), "tau_gyr": tau, "zmet": zmet, "dust_av": av, "vdisp": vdisp}


def simulate_galaxies(params: dict[str, np.ndarray], z: np.ndarray, logmass: np.ndarray,
                      fiberfrac: np.ndarray | float = 1.0, settings: FastSettings | None = None,
                      chunk: int = 100, age_weights: np.ndarray | None = None) -> dict:
    """Noiseless galaxies: {"arms": {arm: (n, npix) fibre flux 1e-17 erg/s/cm²/Å}, "phot": (n, 5) total nanomaggies,
    "truth": {p: (n,)} in fit_fast's PARAMS units, plus rest-frame dn4000 and hdelta_a (Å)}. logmass is log10 M☉
    surviving, total light. age_weights (n, 221) replaces the delayed-τ SFH of params (frosted, quenched, ...)."""
    settings = settings or FastSettings()
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    ff = np.broadcast_to(np.asarray(fiberfrac, dtype=np.float64), (n,))
    wa = sps.sfh_weights(params["tstart_gyr"], params["tau_gyr"]) if age_weights is None else np.asarray(age_weights)
    props = sps.properties_from_weights(wa, params["zmet"])
    mass_formed = 10 ** np.asarray(logmass, np.float64) / props["live_frac"]
    kz = distance_factor(z, settings.h0, settings.om0)
    arms = {a: np.zeros((n, ARMS[a].npix)) for a in ARMS}
    phot = np.zeros((n, len(photometry.BAND_NAMES)))
    rw_all = sps.rest_wave()
    dn, hd = np.empty(n), np.empty(n)
    for i0 in range(0, n, chunk):
        sl = slice(i0, min(n, i0 + chunk))
        zz = z[sl]
        wr = (ARMS["b"].start_a / (1 + zz.max()) - 20, ARMS["z"].end_a / (1 + zz.min()) + 20)
        wr = (min(wr[0], 3700.0), max(wr[1], 4300.0))
        rest = sps.rest_continuum_from_weights(wa[sl], params["zmet"][sl], params["dust_av"][sl],
                                               params["vdisp"][sl], wave_range=wr).astype(np.float64)
        rw = rw_all[sps.rest_slice(wr)]
        isel = (rw > 3700) & (rw < 4300)
        dn[sl] = indices.dn4000(rw[isel], rest[:, isel])
        hd[sl] = indices.hdelta_a(rw[isel], rest[:, isel])
        scale = (mass_formed[sl] * kz[sl] * ff[sl])[:, None]
        for a, arm in ARMS.items():
            x = (np.log(arm.wavelength())[None, :] - np.log1p(zz)[:, None] - np.log(rw[0])) / sps.DLNL
            j = np.clip(np.floor(x).astype(np.int64), 0, rest.shape[1] - 2)
            t = np.clip(x - j, 0, 1)
            arms[a][sl] = (np.take_along_axis(rest, j, 1) * (1 - t) + np.take_along_axis(rest, j + 1, 1) * t) * scale
        phot[sl] = photometry.sed_band_fluxes(wa[sl], params["zmet"][sl], params["dust_av"][sl], zz,
                                              mass_formed[sl] * kz[sl])
    truth = {"logmass": np.asarray(logmass, np.float64), "sfr": mass_formed * props["sfr_per_msun"],
             "age_mw": props["age_mw_gyr"], "dust_av": np.asarray(params["dust_av"], np.float64),
             "zmet": np.asarray(params["zmet"], np.float64)}
    return {"arms": arms, "phot": phot, "truth": truth, "dn4000": dn, "hdelta_a": hd}


def bin_arms(arms: dict[str, np.ndarray], ivar: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """16-pixel bins of per-arm flux (and ivar; ones if None), concatenated b, r, z: (n, 496) each, units kept."""
    fl, iv = [], []
    for a in ARMS:
        f = arms[a]
        i = np.ones_like(f) if ivar is None else ivar[a]
        fb, ib, _ = bin_arm(f, i)
        fl.append(fb), iv.append(ib)
    return np.concatenate(fl, 1), np.concatenate(iv, 1)


def add_noise(rng: np.random.Generator, arms: dict[str, np.ndarray], sigma: dict[str, np.ndarray]) -> dict:
    """Gaussian noise of per-pixel σ (same units) added to each arm: returns {arm: (flux, ivar)}."""
    out = {}
    for a, f in arms.items():
        s = np.broadcast_to(sigma[a], f.shape)
        out[a] = (f + rng.standard_normal(f.shape) * s, 1.0 / s**2)
    return out


def phot_noise(rng: np.random.Generator, phot: np.ndarray, frac: float = 0.02,
               floor: tuple[float, ...] = (0.08, 0.08, 0.08, 0.5, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Legacy-Surveys-like photometric errors σ = frac·|f| + floor (nanomaggies): (noisy flux, ivar)."""
    sig = frac * np.abs(phot) + np.asarray(floor)[None, :]
    return phot + rng.standard_normal(phot.shape) * sig, 1.0 / sig**2
