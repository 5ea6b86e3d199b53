"""Spectral indices (Dn4000, D4000, HδA) on vacuum rest-frame spectra, pure numpy.

Convention: the band limits are the nominal **air** definitions (Balogh+1999 for Dn4000,
Bruzual 1983 for D4000, Worthey & Ottaviani 1997 for HδA) converted to **vacuum** with
the Ciddor (1996) refractive index, because DESI wavelengths are vacuum. (fastspecfit
applies the air limits directly to vacuum wavelengths; the difference is ~1.1 Å.)
Band means integrate the pixel-constant flux with fractional pixel weights
(MaNGA-DAP / Worthey style); Dn4000 is the ratio of mean F_ν (∝ λ² F_λ), red/blue.
"""

from __future__ import annotations

import numpy as np


def air_to_vac(wave_air: np.ndarray | float) -> np.ndarray:
    """Air → vacuum wavelength (Å → Å), Ciddor 1996; below 2000 Å wavelengths are vacuum already (IAU)."""
    w = np.asarray(wave_air, dtype=np.float64)
    s2 = (1e4 / np.maximum(w, 2000.0)) ** 2  # the formula has a pole at 648 Å
    n = 1.0 + 5.792105e-2 / (238.0185 - s2) + 1.67917e-3 / (57.362 - s2)
    return np.where(w >= 2000.0, w * n, w)


def vac_to_air(wave_vac: np.ndarray | float) -> np.ndarray:
    """Vacuum → air wavelength (Å → Å), inverse of air_to_vac by fixed-point iteration."""
    v = np.asarray(wave_vac, dtype=np.float64)
    a = v.copy()
    for _ in range(4):
        a = a * v / air_to_vac(a)
    return a


#: Band limits in air (Å).
DN4000_AIR = {"blue": (3850.0, 3950.0), "red": (4000.0, 4100.0)}
D4000_AIR = {"blue": (3750.0, 3950.0), "red": (4050.0, 4250.0)}
HDELTA_A_AIR = {"blue": (4041.600, 4079.750), "central": (4083.500, 4122.250),
                "red": (4128.500, 4161.000)}


def _vac(bands: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {k: tuple(float(x) for x in air_to_vac(np.array(v))) for k, v in bands.items()}


DN4000_VAC = _vac(DN4000_AIR)
D4000_VAC = _vac(D4000_AIR)
HDELTA_A_VAC = _vac(HDELTA_A_AIR)


def _pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Pixel edges (Å) from pixel centres (midpoints, extrapolated at the ends)."""
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[wave[0] - (mid[0] - wave[0])], mid, [wave[-1] + (wave[-1] - mid[-1])]])


def band_integral(wave: np.ndarray, flux: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """∫_lo^hi f dλ over pixel-constant flux with fractional edge pixels (flux units × Å); flux (..., npix)."""
    wave = np.asarray(wave, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    edges = _pixel_edges(wave)
    width = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return f @ width if f.ndim > 1 else float(f @ width)


def _covered(wave: np.ndarray, lo: float, hi: float) -> bool:
    edges = _pixel_edges(np.asarray(wave, dtype=np.float64))
    return bool(edges[0] <= lo and edges[-1] >= hi)


def band_mean(wave: np.ndarray, flux: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Mean flux density over a band (same units as flux); NaN where the band is not covered."""
    lo, hi = band
    if not _covered(wave, lo, hi):
        shape = np.asarray(flux).shape[:-1]
        return np.full(shape, np.nan) if shape else float("nan")
    return band_integral(wave, flux, lo, hi) / (hi - lo)


def dn4000(wave: np.ndarray, flux: np.ndarray, bands: dict | None = None) -> np.ndarray:
    """Dn4000 (dimensionless): ⟨F_ν⟩ 4001–4101 / ⟨F_ν⟩ 3851–3951 Å (vacuum rest); flux is F_λ (..., npix)."""
    b = bands or DN4000_VAC
    wave = np.asarray(wave, dtype=np.float64)
    fnu = np.asarray(flux, dtype=np.float64) * wave**2
    return band_mean(wave, fnu, b["red"]) / band_mean(wave, fnu, b["blue"])


def d4000(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Broad D4000 (dimensionless), Bruzual 1983 bands in vacuum; flux is F_λ (..., npix)."""
    return dn4000(wave, flux, D4000_VAC)


def equivalent_width(wave: np.ndarray, flux: np.ndarray, bands: dict) -> np.ndarray:
    """Absorption-index EW (Å, positive = absorption): ∫ (1 − f/C) dλ over the central band."""
    wave = np.asarray(wave, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    blo, bhi = bands["blue"]
    rlo, rhi = bands["red"]
    clo, chi = bands["central"]
    if not (_covered(wave, blo, rhi)):
        shape = f.shape[:-1]
        return np.full(shape, np.nan) if shape else float("nan")
    fb = band_mean(wave, f, (blo, bhi))
    fr = band_mean(wave, f, (rlo, rhi))
    xb, xr = 0.5 * (blo + bhi), 0.5 * (rlo + rhi)
    slope = (np.asarray(fr) - np.asarray(fb)) / (xr - xb)
    cont = np.asarray(fb)[..., None] + np.asarray(slope)[..., None] * (wave - xb)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cont != 0, f / cont, np.nan)
    return (chi - clo) - band_integral(wave, ratio, clo, chi)


def hdelta_a(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """HδA equivalent width (Å), Worthey & Ottaviani 1997 bands in vacuum; flux is F_λ (..., npix)."""
    return equivalent_width(wave, flux, HDELTA_A_VAC)
