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


def smooth_pixels(y: np.ndarray, sigma_pix: np.ndarray) -> np.ndarray:
    """Gaussian convolution along axis 0 with a per-pixel σ (pixels) on the native grid, no resampling.

    The kernel's variance is σ² exactly: a sampled Gaussian for σ ≥ 0.7 pixel, the 3-tap [σ²/2, 1 − σ², σ²/2]
    below (pPXF's varsmooth resamples onto a stretched grid first, which blurs by another ~0.4–0.7 pixel).
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.clip(np.broadcast_to(np.asarray(sigma_pix, dtype=np.float64), y.shape[:1]), 0.0, None)
    if not s.max() > 0:
        return y
    half = max(int(np.ceil(4.0 * s.max())), 1)
    k = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k[None, :] / np.maximum(s, 1e-3)[:, None]) ** 2)
    small = s < 0.7
    w[small] = 0.0
    w[small, half] = 1.0 - s[small] ** 2
    w[small, half - 1] = w[small, half + 1] = 0.5 * s[small] ** 2
    w /= w.sum(axis=1, keepdims=True)
    pad = np.pad(y, [(half, half)] + [(0, 0)] * (y.ndim - 1), mode="edge")
    out = np.zeros_like(y)
    wshape = (-1,) + (1,) * (y.ndim - 1)
    for j in range(k.size):  # 2·half + 1 shifted copies, each vectorised over pixels (and templates)
        out += w[:, j].reshape(wshape) * pad[j:j + y.shape[0]]
    return out


#: Bright, single night-sky emission lines (vacuum Å): [OI] 5577, 6300 and strong OH lines.
SKY_LINES_VAC_A = (5578.887, 6302.046, 7343.9, 7823.0, 8401.7, 8829.5, 8887.0)


def sky_lsf_scale(wave: np.ndarray, sky: np.ndarray, sigma_a: np.ndarray, lines=SKY_LINES_VAC_A,
                  min_contrast: float = 5.0, half_pix: int = 7) -> float:
    """Median ratio of the Gaussian σ fitted to bright sky lines to the stated LSF σ there (both Å); 1.0 if < 2 lines fit.

    A check of an instrument's stated resolution on the spectrum's own sky model (SDSS coadds: the lines are
    ~17% wider than WDISP says).
    """
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    def model(x, a, mu, s, b, c):
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + b + c * (x - mu)

    wave, sky, sigma_a = (np.asarray(v, dtype=np.float64) for v in (wave, sky, sigma_a))
    ratios = []
    for lam0 in lines:  # a handful of lines, not a loop over spectra
        i = int(np.searchsorted(wave, lam0))
        if i - half_pix < 0 or i + half_pix >= wave.size or not np.isfinite(sky[i - half_pix:i + half_pix + 1]).all():
            continue
        x, y = wave[i - half_pix:i + half_pix + 1], sky[i - half_pix:i + half_pix + 1]
        bg = float(np.median(y))
        if not (bg > 0 and y.max() / bg >= min_contrast):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)  # a noiseless line has no covariance
                p, _ = curve_fit(model, x, y, p0=[y.max() - bg, x[np.argmax(y)], sigma_a[i], bg, 0.0], maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        r = abs(p[2]) / sigma_a[i]
        if abs(p[1] - lam0) < 3 * sigma_a[i] and 0.5 < r < 2.0:
            ratios.append(r)
    return float(np.median(ratios)) if len(ratios) >= 2 else 1.0
