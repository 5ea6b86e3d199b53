"""Injected anomalies with labelled amplitudes (truth `anomaly_class`, `anomaly_amplitude`).

Physical anomalies act on the noiseless model before the resolution matrix (bal,
extreme_emitter, broad_line_galaxy); mislabeled_highz_qso only changes the redrock row;
instrumental ones act on the observed arrays after noise (calibration_jump,
dead_segment, cosmic_ray). Amplitude units: bal — maximum trough depth (0.1–0.9);
extreme_emitter — rest [OIII]5007 EW added (Å, 300–1500; ordinary
galaxies stop at galaxies.EW_MAX_NORMAL, 150 Å, and truth `ew_oiii_5007` holds the total);
calibration_jump — fractional scale change of one arm (0.05–0.30, sign in truth `anomaly_detail`); dead_segment —
width (Å, 20–300); cosmic_ray — spike height in σ (5–50); broad_line_galaxy — broad
Balmer FWHM (km/s, 2000–6000); mislabeled_highz_qso — z_true − z_redrock.
"""

from __future__ import annotations

import numpy as np

ANOMALY_CLASSES = ("bal", "extreme_emitter", "calibration_jump", "dead_segment", "cosmic_ray",
                   "broad_line_galaxy", "mislabeled_highz_qso")
C_KMS = 299792.458


def draw_amplitude(rng: np.random.Generator, cls: str) -> float:
    """Amplitude for an anomaly class, drawn over its full range (weak cases included)."""
    lo, hi, log = {
        "bal": (0.10, 0.90, False), "extreme_emitter": (300.0, 1500.0, True),
        "calibration_jump": (0.05, 0.30, False), "dead_segment": (20.0, 300.0, True),
        "cosmic_ray": (5.0, 50.0, True), "broad_line_galaxy": (2000.0, 6000.0, False),
        "mislabeled_highz_qso": (0.0, 0.0, False),
    }[cls]
    if log:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def apply_bal(rng: np.random.Generator, flux: np.ndarray, wave: np.ndarray, z: float, depth: float) -> str:
    """Carve BAL troughs (2,000–10,000 km/s wide) blueward of CIV, SiIV, NV and Lyα in place."""
    width = rng.uniform(2000, 10000)
    vmin = rng.uniform(0, 12000)
    v = (1.0 - (wave / (1 + z)) / 1549.06) * C_KMS  # outflow velocity relative to CIV
    prof = np.clip(1 - np.abs((v - vmin - width / 2) / (width / 2)) ** 4, 0, 1)
    tau = depth * prof
    for lam, rel in ((1400.0, 0.6), (1240.8, 0.7), (1215.67, 0.5)):
        vv = (1.0 - (wave / (1 + z)) / lam) * C_KMS
        tau = np.maximum(tau, rel * depth * np.clip(1 - np.abs((vv - vmin - width / 2) / (width / 2)) ** 4, 0, 1))
    flux *= 1 - tau
    return f"vmin={vmin:.0f} width={width:.0f} km/s"


def apply_cosmic_ray(rng: np.random.Generator, flux: np.ndarray, sigma: np.ndarray, nsig: float) -> str:
    """Add an unmasked 1–3 pixel spike of height nsig·σ to one arm's flux row in place."""
    npx = int(rng.integers(1, 4))
    i = int(rng.integers(50, flux.size - 50))
    shape = np.array([1.0, 0.6, 0.3])[:npx]
    flux[i:i + npx] += nsig * sigma[i:i + npx] * shape
    return f"pixel={i} npix={npx}"
