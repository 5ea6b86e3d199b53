"""Arm merging and rest-frame helpers shared by the index and fitting code (Å, vacuum, 1e-17 flux units)."""

from __future__ import annotations

import numpy as np

from desi_assets.science.wavelength import ARMS, binned_wavelength, combined_wavelength

C_KMS = 299792.458


def combine_arms(flux: dict[str, np.ndarray], ivar: dict[str, np.ndarray],
                 mask: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """b/r/z (n, npix_arm) → merged brz grid (n, 7781) float32: ivar-weighted flux, summed ivar; bad pixels ivar 0."""
    wave = combined_wavelength()
    n = next(iter(flux.values())).shape[0]
    num = np.zeros((n, wave.size), dtype=np.float32)
    den = np.zeros((n, wave.size), dtype=np.float32)
    for name, arm in ARMS.items():
        f = np.asarray(flux[name], dtype=np.float32)
        iv = np.asarray(ivar[name], dtype=np.float32)
        good = np.isfinite(f) & (iv > 0) & np.isfinite(iv)
        if mask is not None and mask.get(name) is not None:
            good &= np.asarray(mask[name]) == 0
        w = np.where(good, iv, np.float32(0))
        i0 = int(round((arm.start_a - wave[0]) / 0.8))
        num[:, i0:i0 + arm.npix] += w * np.where(good, f, np.float32(0))
        den[:, i0:i0 + arm.npix] += w
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.float32(0))
    return out, den


def lsf_on_grid(lsf_bins: np.ndarray, wave: np.ndarray | None = None) -> np.ndarray:
    """Compact LSF σ (n, 496 bins, Å) → per-pixel σ on `wave` (default the brz grid), linear in λ (Å)."""
    wave = combined_wavelength() if wave is None else wave
    lsf_bins = np.atleast_2d(np.asarray(lsf_bins, dtype=np.float64))
    xb = binned_wavelength()
    order = np.argsort(xb, kind="stable")
    xs, ys = xb[order], lsf_bins[:, order]
    i = np.clip(np.searchsorted(xs, wave) - 1, 0, xs.size - 2)
    t = np.clip((wave - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0)
    return ys[:, i] * (1 - t) + ys[:, i + 1] * t


def continuum_snr_per_a(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray,
                        rest_range: tuple[float, float] = (4050.0, 5500.0)) -> np.ndarray:
    """Median continuum S/N per observed Å over a rest-frame range (n,); 0 where the range holds no good pixel."""
    step = np.gradient(wave)
    rest = wave[None, :] / (1 + np.asarray(z, dtype=np.float64)[:, None])
    sel = (rest >= rest_range[0]) & (rest <= rest_range[1]) & (ivar > 0)
    snr = np.where(sel, flux * np.sqrt(np.clip(ivar, 0, None)) / np.sqrt(step)[None, :], np.nan)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(snr, axis=1)
    return np.nan_to_num(med, nan=0.0)
