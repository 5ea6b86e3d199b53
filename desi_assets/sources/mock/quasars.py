"""Quasar spectra: power-law continuum, broad and narrow lines, Lyα forest and Lyman limit.

Observed-frame model on the padded merged grid (1e-17 erg/s/cm²/Å before normalisation).
The forest is a lognormal optical-depth field (correlated over ~2 pixels) whose mean
transmission follows τ_eff = 0.0023 (1+z_abs)^3.65 (Faucher-Giguère+2008-like).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: Broad/narrow QSO lines: (vacuum rest λ Å, rest EW Å, FWHM km/s or 0 for "broad" draw).
QSO_LINES = [
    (1033.8, 12.0, 0), (1215.67, 95.0, 0), (1240.8, 20.0, 0), (1400.0, 10.0, 0), (1549.06, 40.0, 0),
    (1640.4, 4.0, 0), (1908.73, 22.0, 0), (2799.12, 32.0, 0), (3426.84, 1.5, 600), (3728.48, 2.0, 500),
    (4102.89, 6.0, 0), (4341.69, 12.0, 0), (4862.71, 55.0, 0), (5008.24, 12.0, 500), (6564.60, 230.0, 0),
]
LYA = 1215.67
LYLIMIT = 911.75


def qso_model(rng: np.random.Generator, wave: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, dict]:
    """Unnormalised observed-frame QSO spectra (n, nwave) and their parameters (slope, FWHM)."""
    n = len(z)
    alpha = rng.normal(-0.5, 0.3, n)  # F_ν ∝ ν^α
    fwhm = rng.uniform(2500, 7000, n)
    rest = wave[None, :] / (1 + z[:, None])
    cont = (rest / 2000.0) ** (-2.0 - alpha[:, None])
    # small blue bump (Balmer continuum + Fe II blend) at 2200–4000 Å rest
    cont *= 1 + rng.uniform(0.05, 0.2, n)[:, None] * np.exp(-0.5 * ((rest - 3000) / 500) ** 2)
    flux = cont.copy()
    ew_scale = rng.lognormal(0, 0.3, n)
    for lam, ew, fw in QSO_LINES:
        f_kms = np.full(n, float(fw)) if fw else fwhm * (0.8 if lam > 4000 else 1.0)
        sig = lam * f_kms / 299792.458 / 2.3548  # rest Å
        amp = ew * ew_scale * (lam / 2000.0) ** (-2.0 - alpha)  # continuum at the line × EW
        flux += amp[:, None] * np.exp(-0.5 * ((rest - lam) / sig[:, None]) ** 2) / (np.sqrt(2 * np.pi) * sig[:, None])
    # Lyα forest (observed λ < (1+z)·1215.67) and Lyman limit
    zabs = wave[None, :] / LYA - 1
    in_forest = (rest < LYA) & (rest > LYLIMIT)
    g = gaussian_filter1d(rng.normal(size=(n, len(wave))), 2.0, axis=1)
    g /= g.std(axis=1, keepdims=True) + 1e-12
    s = 1.4
    tau_eff = 0.0023 * (1 + np.clip(zabs, 0, None)) ** 3.65
    tau = tau_eff * 0.55 * np.exp(s * g - 0.5 * s**2) * 1.6
    T = np.where(in_forest, np.exp(-tau), 1.0)
    T = np.where(rest <= LYLIMIT, np.exp(-rng.uniform(0.5, 3.0, n))[:, None] * np.exp(-tau), T)
    return flux * T, {"qso_alpha": alpha, "qso_fwhm_kms": fwhm}
