"""Survey footprint as HEALPix pixels: occupied pixels, randoms inside them, edge flags and partition buffers."""

from __future__ import annotations

import healpy as hp
import numpy as np
from scipy.spatial import cKDTree

from desi_assets.science.cosmic_web.coords import unit_vectors


def occupied_pixels(ra_deg: np.ndarray, dec_deg: np.ndarray, nside: int) -> np.ndarray:
    """Sorted unique NESTED pixels (int64) holding at least one of the positions."""
    if len(ra_deg) == 0:
        return np.zeros(0, np.int64)
    pix = hp.ang2pix(nside, np.asarray(ra_deg), np.asarray(dec_deg), nest=True, lonlat=True)
    return np.unique(pix).astype(np.int64)


def volume_randoms(pixels: np.ndarray, nside: int, chi_min: float, chi_max: float, density_mpc3: float,
                   seed: int = 0) -> np.ndarray:
    """Randoms (N,3) Mpc uniform in volume inside each pixel between χ_min and χ_max, seeded per pixel.

    The randoms of a pixel depend only on (seed, pixel), so any run that holds the pixel draws the same ones.
    """
    omega = hp.nside2pixarea(nside)
    n_per = omega / 3 * (chi_max**3 - chi_min**3) * density_mpc3
    sub = 2**10  # sub-pixels per pixel side: positions are sub-pixel centres plus a uniform jitter
    out = []
    for p in np.asarray(pixels, np.int64):
        rng = np.random.default_rng([seed, int(p)])
        n = int(rng.poisson(n_per))
        if n == 0:
            continue
        child = int(p) * sub**2 + rng.integers(0, sub**2, n)
        vec = np.array(hp.pix2vec(nside * sub, child, nest=True)).T
        vec += rng.normal(0, 0.3 * hp.nside2resol(nside * sub), vec.shape)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        chi = rng.uniform(chi_min**3, chi_max**3, n) ** (1 / 3)
        out.append(vec * chi[:, None])
    return np.concatenate(out) if out else np.zeros((0, 3))


def footprint_volume(pixels: np.ndarray, nside: int, chi_min: float, chi_max: float) -> float:
    """Comoving volume (Mpc³) of the footprint pixels between χ_min and χ_max."""
    return len(pixels) * hp.nside2pixarea(nside) / 3 * (chi_max**3 - chi_min**3)


def coverage_fraction(ra_deg: np.ndarray, dec_deg: np.ndarray, radius_deg: np.ndarray, pixels: np.ndarray,
                      nside: int, fine_nside: int) -> np.ndarray:
    """Fraction of each cap (centre, radius in deg) inside the footprint, from the footprint's fine-pixel centres.

    The fine-pixel centres are deterministic randoms: the count inside a cap over the count a fully covered cap
    holds (its area / the fine-pixel area).
    """
    n = len(ra_deg)
    out = np.zeros(n)
    if n == 0 or len(pixels) == 0:
        return out
    k = (fine_nside // nside) ** 2
    child = (np.asarray(pixels, np.int64)[:, None] * k + np.arange(k)[None, :]).ravel()
    pts = np.array(hp.pix2vec(fine_nside, child, nest=True)).T
    tree = cKDTree(pts)
    rad = np.radians(np.asarray(radius_deg, float))
    chord = 2 * np.sin(rad / 2)
    counts = tree.query_ball_point(unit_vectors(ra_deg, dec_deg), chord, return_length=True)
    expected = 2 * np.pi * (1 - np.cos(rad)) / hp.nside2pixarea(fine_nside)
    return np.minimum(counts / np.maximum(expected, 1e-12), 1.0)


def buffer_angle_deg(buffer_mpc: float, chi_near_mpc: float) -> float:
    """Angular radius (deg) of a sphere of buffer_mpc seen from χ_near (Mpc); 180 if the sphere holds the observer."""
    if chi_near_mpc <= buffer_mpc:
        return 180.0
    return float(np.degrees(np.arcsin(buffer_mpc / chi_near_mpc)))


def region_pixels(pixels: np.ndarray, nside: int, radius_deg: float) -> np.ndarray:
    """NESTED pixels within radius_deg of any of `pixels` (healpy query_disc around each, inclusive)."""
    if radius_deg >= 180.0:
        return np.arange(hp.nside2npix(nside), dtype=np.int64)
    out = set()
    half = np.degrees(hp.max_pixrad(nside))
    for p in np.unique(np.asarray(pixels, np.int64)):
        vec = hp.pix2vec(nside, int(p), nest=True)
        out.update(hp.query_disc(nside, vec, np.radians(radius_deg + half), inclusive=True, nest=True).tolist())
    return np.array(sorted(out), dtype=np.int64)
