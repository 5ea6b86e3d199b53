"""Synthetic AB photometry through the real DECam g, r, z and WISE W1, W2 curves (speclite).

One place for "SED → FIBERMAP fluxes": the mock's photometry and the stellar-population
fits both use band_matrix / band_fluxes, so the two agree by construction.
"""

from __future__ import annotations

import functools

import numpy as np

#: FIBERMAP band → speclite filter name (Legacy Surveys DR9: DECam grz, unWISE W1/W2).
BANDS: dict[str, str] = {
    "G": "decam2014-g", "R": "decam2014-r", "Z": "decam2014-z", "W1": "wise2010-W1", "W2": "wise2010-W2",
}
BAND_NAMES = tuple(BANDS)
C_AA_S = 2.99792458e18  # speed of light, Å/s
NANOMAGGY_CGS = 3631e-23 * 1e-9  # erg/s/cm²/Hz of 1 nanomaggy


@functools.lru_cache(maxsize=1)
def filter_curves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Band → (wavelength Å, response) from speclite's packaged curves (no download)."""
    import speclite.filters as sf

    group = sf.load_filters(*BANDS.values())
    return {b: (np.asarray(f.wavelength, float), np.asarray(f.response, float)) for b, f in zip(BANDS, group)}


def band_matrix(wave_a: np.ndarray, bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """(nwave, nband) weights W such that f_λ[1e-17 erg/s/cm²/Å] @ W gives AB fluxes in nanomaggies.

    wave_a is the observed-frame wavelength grid (Å, increasing); the SED is treated as piecewise
    linear on it (trapezoid rule) and as zero outside it.
    """
    wave_a = np.asarray(wave_a, float)
    dw = np.gradient(wave_a)
    out = np.zeros((wave_a.size, len(bands)))
    for j, b in enumerate(bands):
        lam, resp = filter_curves()[b]
        r = np.interp(wave_a, lam, resp, left=0.0, right=0.0)
        norm = C_AA_S * np.trapezoid(resp / lam, lam)  # ∫ R c/λ dλ/λ·λ → Hz-weighted denominator
        out[:, j] = r * wave_a * dw / norm
    return out * 1e-17 / NANOMAGGY_CGS


def band_fluxes(wave_a: np.ndarray, flam: np.ndarray, bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """AB fluxes (nanomaggies, shape (n, nband)) of observed SEDs flam (n, nwave) in 1e-17 erg/s/cm²/Å."""
    return np.atleast_2d(np.asarray(flam, float)) @ band_matrix(wave_a, bands)


def ab_mag(nanomaggies: np.ndarray) -> np.ndarray:
    """AB magnitude of fluxes in nanomaggies (NaN for non-positive flux)."""
    f = np.asarray(nanomaggies, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 22.5 - 2.5 * np.log10(f), np.nan)


def band_coverage(wave_a: np.ndarray, bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """Fraction (nband,) of each band's AB normalisation covered by the grid wave_a (Å): 1 where fully inside."""
    wave_a = np.asarray(wave_a, float)
    flat = 1e-9 * 3631e-23 * C_AA_S / wave_a**2 / 1e-17  # f_ν = 1 nanomaggy, as f_λ in 1e-17 erg/s/cm²/Å
    return band_fluxes(wave_a, flat, bands)[0]


def line_band_fluxes(centers_a: np.ndarray, fluxes_1e17: np.ndarray,
                     bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """AB fluxes (n, nband) nanomaggies of unresolved lines at observed λ centers_a (n, L) Å, fluxes in 1e-17 erg/s/cm²."""
    c = np.atleast_2d(np.asarray(centers_a, float))
    f = np.atleast_2d(np.asarray(fluxes_1e17, float))
    out = np.zeros((c.shape[0], len(bands)))
    for j, b in enumerate(bands):
        lam, resp = filter_curves()[b]
        norm = C_AA_S * np.trapezoid(resp / lam, lam)
        out[:, j] = (f * np.interp(c, lam, resp, left=0.0, right=0.0) * c).sum(1) / norm
    return out * 1e-17 / NANOMAGGY_CGS


#: Rest log-λ step of the photometric SSP grid (600 km/s bins: broad bands need no finer sampling).
PHOT_DLNL = 2e-3
#: Rest range (Å) of the photometric grid: from below DECam g at z = 1.6 to beyond W2 at z = 0.
PHOT_REST_RANGE = (1400.0, 60000.0)


@functools.cache
def filter_cumulative(band: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(λ Å, ∫_0^λ R λ' dλ' (trapezoid), AB normalisation c ∫ R/λ dλ) of one band."""
    lam, resp = filter_curves()[band]
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (resp[1:] * lam[1:] + resp[:-1] * lam[:-1]) * np.diff(lam))])
    return lam, cum, C_AA_S * np.trapezoid(resp / lam, lam)


@functools.lru_cache(maxsize=1)
def phot_ssp_grid() -> tuple[np.ndarray, np.ndarray]:
    """BC03 SSPs averaged into PHOT_DLNL log-λ bins (flux-conserving): (bin centres Å, (7*221, nbin) L☉/Å per M☉)."""
    from desi_assets.science.stellar_populations.sps import load_native_grid

    wave, flux = load_native_grid()
    lo, hi = PHOT_REST_RANGE
    sel = np.flatnonzero((wave >= lo * 0.99) & (wave <= hi * 1.01))
    w = wave[sel]
    edges = lo * np.exp(PHOT_DLNL * np.arange(int(np.log(hi / lo) / PHOT_DLNL) + 2))
    f = flux[:, sel].astype(np.float64)
    cum = np.concatenate([np.zeros((len(f), 1)), np.cumsum(0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(w), axis=1)], 1)
    i = np.clip(np.searchsorted(w, edges) - 1, 0, w.size - 2)  # ∫ f dλ up to each edge (piecewise-linear f)
    t = np.clip((edges - w[i]) / (w[i + 1] - w[i]), 0, 1)
    at = cum[:, i] * (1 - t) + cum[:, i + 1] * t
    return np.sqrt(edges[1:] * edges[:-1]), np.diff(at, axis=1) / np.diff(edges)[None, :]


def sed_band_fluxes(age_weights: np.ndarray, zmet: np.ndarray, av: np.ndarray, z: np.ndarray,
                    flux_scale: np.ndarray, bands: tuple[str, ...] = BAND_NAMES) -> np.ndarray:
    """AB fluxes (n, nband) nanomaggies of BC03 galaxies (any SFH (n, 221), Z/Z☉, Calzetti A_V mag) at redshift z.

    The observed SED is f_λ(λ) = flux_scale · L_λ(λ/(1+z)) in 1e-17 erg/s/cm²/Å with L_λ in L☉/Å per M☉
    formed (so flux_scale = M · L☉ / (4π d_L² (1+z)) / 1e-17). Same numbers as sps.sed_from_weights →
    band_fluxes to ~0.1%, on a 600 km/s rest grid (phot_ssp_grid), fast enough for the whole mock. The grid
    starts at 1400 Å rest, so DECam g (from 3700 Å) is complete for z < 1.6.
    """
    from desi_assets.science.stellar_populations.sps import calzetti_k, zmet_weights

    wr, grid = phot_ssp_grid()
    wa = np.atleast_2d(np.asarray(age_weights, np.float64))
    z = np.atleast_1d(np.asarray(z, np.float64))
    n, nage = wa.shape
    curves = [filter_curves()[b] for b in bands]
    lam_lo, lam_hi = min(c[0][c[1] > 0].min() for c in curves), max(c[0][c[1] > 0].max() for c in curves)
    if z.size == 0:
        return np.zeros((0, len(bands)))
    cols = np.flatnonzero((wr * (1 + z.max()) >= lam_lo * 0.98) & (wr * (1 + z.min()) <= lam_hi * 1.02))
    wz = zmet_weights(np.atleast_1d(np.asarray(zmet, np.float64)))
    used, zused = np.flatnonzero(wa.max(0) > 0), np.flatnonzero(wz.max(0) > 0)
    W = (wz[:, zused, None] * wa[:, None, used]).reshape(n, -1)
    rows = (zused[:, None] * nage + used[None, :]).ravel()
    sed = W @ grid[np.ix_(rows, cols)]
    sed *= 10 ** (-0.4 * np.atleast_1d(np.asarray(av, np.float64))[:, None] * calzetti_k(wr[cols])[None, :] / 4.05)
    # each bin's mean f_λ times ∫_bin R λ dλ over the bin's observed-frame edges (no point-sampling of sharp
    # telluric features in the filter curves)
    edges = wr[cols[0]] * np.exp(PHOT_DLNL * (np.arange(cols.size + 1) - 0.5))  # cols is contiguous
    edges_obs = edges[None, :] * (1 + z[:, None])
    out = np.empty((n, len(bands)))
    for j, b in enumerate(bands):
        lam, cum, norm = filter_cumulative(b)
        out[:, j] = (sed * np.diff(np.interp(edges_obs, lam, cum), axis=1)).sum(1) / norm
    return out * np.atleast_1d(np.asarray(flux_scale, np.float64))[:, None] * 1e-17 / NANOMAGGY_CGS
