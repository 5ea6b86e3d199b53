"""Stellar spectra: Planck continuum at T_eff plus a T_eff-dependent absorption-line set.

Choice: blackbodies (3,200–15,000 K) with Balmer lines (peaking near A0), Ca II H&K,
G band, Mg b, Na D, Ca triplet, a forest of weak metal lines for cool stars, UV line
blanketing below 4,000 Å, a Balmer jump for hot stars and TiO band heads for M stars.
Radial velocities ±250 km/s. SUBTYPE is the spectral class (B, A, F, G, K, M).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

H_C_K = 1.438777e8  # hc/k in Å·K

#: Absorption features (vacuum Å, rest): name → (λ, σ Å).
_FEATURES = {
    "halpha": (6564.6, 3.0), "hbeta": (4862.7, 3.0), "hgamma": (4341.7, 3.0), "hdelta": (4102.9, 3.0),
    "heps": (3971.2, 3.0), "h8": (3890.2, 2.5), "h9": (3836.5, 2.5), "h10": (3799.0, 2.5),
    "cak": (3934.8, 2.5), "cah": (3969.6, 2.5), "gband": (4305.0, 6.0), "mgb": (5176.0, 5.0),
    "nad1": (5891.6, 1.5), "nad2": (5897.6, 1.5), "cat1": (8500.4, 2.0), "cat2": (8544.4, 2.5),
    "cat3": (8664.5, 2.5),
}
_TIO_HEADS = [4955.0, 5168.0, 5449.0, 6160.0, 6653.0, 7056.0, 7591.0, 8434.0]


def spectral_class(teff: np.ndarray) -> np.ndarray:
    """MK class letter from T_eff (K)."""
    edges = [3700, 5200, 6000, 7500, 10000]
    return np.array(["M", "K", "G", "F", "A", "B"])[np.searchsorted(edges, teff)]


def star_model(rng: np.random.Generator, wave: np.ndarray, teff: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Unnormalised observed-frame stellar spectra (n, nwave) for T_eff (K) and z = v/c."""
    n = len(teff)
    rest = wave[None, :] / (1 + z[:, None])
    T = teff[:, None]
    flux = rest**-5 / np.expm1(H_C_K / (rest * T))
    flux /= flux.max(axis=1, keepdims=True)
    lt = np.log10(teff)
    balmer = 10.0 * np.exp(-0.5 * ((lt - np.log10(9500)) / 0.11) ** 2) + 0.8  # Hβ EW Å
    cool = np.clip((6800 - teff) / 3000, 0, 1.3)  # metal strength
    hot = np.clip((teff - 7500) / 5000, 0, 1)
    ew = {
        "halpha": balmer * 1.2, "hbeta": balmer, "hgamma": balmer * 0.95, "hdelta": balmer * 0.9,
        "heps": balmer * 0.8, "h8": balmer * 0.7, "h9": balmer * 0.6, "h10": balmer * 0.5,
        "cak": 1 + 14 * cool + 2 * (1 - hot), "cah": 1 + 10 * cool, "gband": 8 * cool, "mgb": 7 * cool**1.5,
        "nad1": 0.3 + 3 * cool**1.5, "nad2": 0.3 + 2.5 * cool**1.5, "cat1": 1 + 1.5 * cool,
        "cat2": 1.5 + 3 * cool, "cat3": 1.2 + 2.5 * cool,
    }
    tau = np.zeros_like(flux)
    for k, (lam, sig) in _FEATURES.items():
        balmer_line = k in ("halpha", "hbeta", "hgamma", "hdelta", "h8", "h9", "h10")
        s = sig * (1 + 0.8 * hot) if balmer_line else np.full(n, sig)  # pressure-broadened wings
        depth = np.clip(ew[k] / (np.sqrt(2 * np.pi) * s), 0, 3)
        tau += depth[:, None] * np.exp(-0.5 * ((rest - lam) / s[:, None]) ** 2)
    # weak metal-line forest (fixed line list), stronger in cool stars and to the blue
    lrng = np.random.default_rng(77)
    lw = np.sort(lrng.uniform(3600, 9000, 900))
    ld = lrng.exponential(0.12, 900)
    grid = np.zeros(rest.shape[1])
    step = wave[1] - wave[0]
    i = ((lw - wave[0]) / step).astype(np.int64)
    ok = (i >= 0) & (i < grid.size)
    np.add.at(grid, i[ok], ld[ok])
    forest = gaussian_filter1d(grid, 1.3) * 3.0
    tau += (cool + 0.05)[:, None] * forest[None, :] * (4500.0 / rest) ** 2
    flux *= np.exp(-tau)
    # blanketing and Balmer jump
    flux *= np.where(rest < 4000, 1 - 0.5 * cool[:, None] * np.clip((4000 - rest) / 400, 0, 1), 1)
    flux *= np.where(rest < 3646, 1 - 0.45 * hot[:, None], 1)
    # TiO bands for M stars: sharp head, linear recovery over ~150 Å
    tio = np.clip((3900 - teff) / 700, 0, 1)
    for h in _TIO_HEADS:
        x = (rest - h) / 180.0
        band = np.where((x > 0) & (x < 1), 1 - x, 0)
        flux *= 1 - 0.6 * tio[:, None] * band
    return flux
