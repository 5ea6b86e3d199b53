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
