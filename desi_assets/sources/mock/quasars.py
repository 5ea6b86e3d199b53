"""Quasar spectra: broken power-law continuum, broad and narrow lines, Lyα forest and Lyman limit.

Observed-frame model on the padded merged grid (1e-17 erg/s/cm²/Å before normalisation).
- Continuum F_ν ∝ ν^α (α ~ N(−0.5, 0.3)) that softens below 1200 Å rest by Δα = −1.07 (Telfer+2002's
  EUV break), with a small Balmer-continuum/Fe II bump.
- High-ionisation lines (NV, SiIV, CIV, HeII) have two components: a core (65% of the flux)
  blueshifted by ~400 km/s and a 1.5× broader wing a further 1,500 km/s to the blue, i.e. the
  asymmetric, blueshifted CIV of real quasars; tuned to the stack of the real fuji QSOs measured
  by bench/mock_vs_real.py against their catalogue redshifts (W80/FWHM ≈ 1.7, rest EW(CIV) ≈ 57 Å).
- The forest: a lognormal optical-depth field correlated over ~2 pixels whose mean transmission
  ⟨e^{−τ}⟩ equals exp(−τ_eff(z)) with τ_eff = 0.0018 (1+z)^3.92 (Faucher-Giguère+2008), times a
  per-sightline lognormal factor (scatter 0.25 dex-e) for the sightline-to-sightline variation.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import gaussian_filter1d

C_KMS = 299792.458
#: Broad/narrow QSO lines: (vacuum rest λ Å, rest EW Å, FWHM km/s or 0 for "broad" draw).
QSO_LINES = [
    (1033.8, 12.0, 0), (1215.67, 95.0, 0), (1240.8, 20.0, 0), (1400.0, 10.0, 0), (1549.06, 55.0, 0),
    (1640.4, 4.0, 0), (1908.73, 22.0, 0), (2799.12, 32.0, 0), (3426.84, 1.5, 600), (3728.48, 2.0, 500),
    (4102.89, 6.0, 0), (4341.69, 12.0, 0), (4862.71, 55.0, 0), (5008.24, 12.0, 500), (6564.60, 230.0, 0),
]
#: Lines with the two-component blueshifted profile.
HIGH_IONISATION = (1240.8, 1400.0, 1549.06, 1640.4)
#: (flux fraction, FWHM / broad FWHM, extra blueshift km/s) of the core and the blue wing.
CORE = (0.65, 0.6, 0.0)
WING = (0.35, 1.5, 1500.0)
LYA = 1215.67
LYLIMIT = 911.75
EUV_BREAK_A = 1200.0
EUV_DALPHA = 1.07  # Telfer+2002: α_ν −0.69 above the break, −1.76 below
TAU_SCATTER = 0.25  # per-sightline lognormal scatter of τ_eff
_S_LOGN = 1.4  # lognormal width of the pixel optical depth


def tau_eff(z: np.ndarray) -> np.ndarray:
    """Effective Lyα optical depth at absorber redshift z (Faucher-Giguère et al. 2008 power law)."""
    return 0.0018 * (1 + np.clip(np.asarray(z, dtype=np.float64), 0, None)) ** 3.92


@functools.lru_cache(maxsize=1)
def _amplitude_table() -> tuple[np.ndarray, np.ndarray]:
    """τ_eff grid and lognormal amplitudes A with ⟨exp(−A·e^{sg−s²/2})⟩ = exp(−τ_eff) (Gauss–Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    y = np.exp(_S_LOGN * x - 0.5 * _S_LOGN**2)
    amps = np.exp(np.linspace(np.log(1e-3), np.log(60.0), 400))
    teff = -np.log((np.exp(-amps[:, None] * y[None, :]) * w).sum(1))
    return teff, amps


def forest_amplitude(teff: np.ndarray) -> np.ndarray:
    """Lognormal amplitude giving mean transmission exp(−τ_eff) for each τ_eff."""
    t, a = _amplitude_table()
    return np.interp(teff, t, a)


def _gauss(rest, lam, sig):
    return np.exp(-0.5 * ((rest - lam) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig)


def qso_model(rng: np.random.Generator, wave: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, dict]:
    """Unnormalised observed-frame QSO spectra (n, nwave) and their parameters (slope, FWHM, CIV shift)."""
    n = len(z)
    alpha = rng.normal(-0.5, 0.3, n)  # F_ν ∝ ν^α
    fwhm = rng.uniform(2500, 7000, n)
    shift = rng.normal(400, 300, n)  # km/s, blueshift of the high-ionisation core against the redshift
    rest = wave[None, :] / (1 + z[:, None])
    cont = (rest / 2000.0) ** (-2.0 - alpha[:, None])
    cont *= np.where(rest < EUV_BREAK_A, (rest / EUV_BREAK_A) ** EUV_DALPHA, 1.0)  # EUV softening
    # small blue bump (Balmer continuum + Fe II blend) at 2200–4000 Å rest
    cont *= 1 + rng.uniform(0.05, 0.2, n)[:, None] * np.exp(-0.5 * ((rest - 3000) / 500) ** 2)
    flux = cont.copy()
    ew_scale = rng.lognormal(0, 0.3, n)
    for lam, ew, fw in QSO_LINES:
        f_kms = np.full(n, float(fw)) if fw else fwhm * (0.8 if lam > 4000 else 1.0)
        amp = (ew * ew_scale * (lam / 2000.0) ** (-2.0 - alpha))[:, None]  # continuum at the line × EW
        if lam in HIGH_IONISATION:
            for frac, wscale, extra in (CORE, WING):
                c = lam * (1 - (shift + extra) / C_KMS)
                sig = lam * f_kms * wscale / C_KMS / 2.3548
                flux += frac * amp * _gauss(rest, c[:, None], sig[:, None])
        else:
            c = lam * (1 - (0.3 * shift if lam == 1908.73 else 0.0) / C_KMS)
            sig = lam * f_kms / C_KMS / 2.3548  # rest Å
            flux += amp * _gauss(rest, np.broadcast_to(c, (n,))[:, None], sig[:, None])
    # Lyα forest (observed λ < (1+z)·1215.67) and Lyman limit
    zabs = wave[None, :] / LYA - 1
    in_forest = (rest < LYA) & (rest > LYLIMIT)
    g = gaussian_filter1d(rng.normal(size=(n, len(wave))), 2.0, axis=1)
    g /= g.std(axis=1, keepdims=True) + 1e-12
    teff = tau_eff(zabs) * rng.lognormal(0, TAU_SCATTER, n)[:, None]
    tau = np.where(in_forest | (rest <= LYLIMIT), forest_amplitude(teff), 0.0) * np.exp(_S_LOGN * g - 0.5 * _S_LOGN**2)
    T = np.where(in_forest, np.exp(-tau), 1.0)
    T = np.where(rest <= LYLIMIT, np.exp(-rng.uniform(0.5, 3.0, n))[:, None] * np.exp(-tau), T)
    return flux * T, {"qso_alpha": alpha, "qso_fwhm_kms": fwhm, "qso_civ_shift_kms": -shift}
