"""DESI-like instrument: resolution matrices, sky spectrum, throughput, noise and mask bits.

Models are evaluated on the merged 0.8 Å grid padded by 5 pixels at each end (every
arm pixel lies on it); each arm is cut out, convolved with its own 11-diagonal
resolution matrix (DESI convention: offsets +5…−5, data[d, j] = R[j − off_d, j]),
and noise is drawn from the inverse variance of a sky + object + read-noise model.
"""

from __future__ import annotations

import functools

import numpy as np

from desi_assets.science.indices import air_to_vac
from desi_assets.science.wavelength import ARMS, DESI_PIXEL_STEP_A

NDIAG = 11
OFFSETS = NDIAG // 2 - np.arange(NDIAG)  # +5 … −5
PAD = NDIAG // 2
#: SPECMASK bits (desispec).
MASK_COSMIC = 1 << 2
MASK_BADCOLUMN = 1 << 10
FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"

#: Per-arm LSF Gaussian σ in pixels at the blue and red end of the arm (matches real iron R).
_SIGMA_PIX = {"b": (0.95, 0.86), "r": (0.86, 0.80), "z": (0.92, 0.97)}
#: Small negative/positive wings of the real (deconvolved) DESI resolution at |off| = 3, 4, 5.
_RINGING = {3: -0.0015, 4: 0.003, 5: -0.0012}


def model_wave() -> np.ndarray:
    """Padded model grid (Å): the merged 3600–9824 Å grid plus 5 pixels each side."""
    return np.round(3600.0 + DESI_PIXEL_STEP_A * np.arange(-PAD, 7781 + PAD), 4)


def arm_slice(arm: str) -> slice:
    """Slice of an arm's pixels, with ±PAD margin, inside model_wave()."""
    a = ARMS[arm]
    i0 = int(round((a.start_a - 3600.0) / DESI_PIXEL_STEP_A))
    return slice(i0, i0 + a.npix + 2 * PAD)


def resolution_data(arm: str, fibre_scale: np.ndarray) -> np.ndarray:
    """RESOLUTION diagonals (n, 11, npix+2·PAD) float32 for an arm; each column sums to 1."""
    a = ARMS[arm]
    npad = a.npix + 2 * PAD
    s0, s1 = _SIGMA_PIX[a.name]
    x = np.linspace(-PAD / a.npix, 1 + PAD / a.npix, npad)
    sig = (s0 + (s1 - s0) * x + 0.02 * np.sin(6.0 * x)).astype(np.float32)  # (npad,)
    sig = sig[None, :] * fibre_scale.astype(np.float32)[:, None]  # (n, npad)
    q = np.exp(-0.5 / sig**2)  # Gaussian weight at offset o is q**(o²)
    k = np.empty((len(sig), NDIAG, npad), dtype=np.float32)
    k[:, PAD] = 1.0
    for o in range(1, PAD + 1):
        v = q ** (o * o)
        k[:, PAD - o] = v
        k[:, PAD + o] = v
    for o, v in _RINGING.items():
        k[:, PAD - o] += v
        k[:, PAD + o] += v
    k /= k.sum(axis=1, keepdims=True)
    return k.astype(np.float32)


def apply_resolution(model_pad: np.ndarray, rdata_pad: np.ndarray) -> np.ndarray:
    """R @ model for padded arrays: model (n, npix+10), R data (n, 11, npix+10) → (n, npix)."""
    n, npad = model_pad.shape
    npix = npad - 2 * PAD
    out = np.zeros((n, npix), dtype=np.float64)
    for d, o in enumerate(OFFSETS):
        j = slice(PAD + o, PAD + o + npix)  # column index j = i + off
        out += rdata_pad[:, d, j] * model_pad[:, j]
    return out


def _gauss(w, c, s):
    return np.exp(-0.5 * ((w - c) / s) ** 2) / (np.sqrt(2 * np.pi) * s)


@functools.lru_cache(maxsize=4)
def sky_spectrum(program: str) -> np.ndarray:
    """Sky flux in one fibre on model_wave() (1e-17 erg/s/cm²/Å): continuum + 5577, 6300, NaD, Hg, OH forest."""
    w = model_wave()
    moon = {"dark": 1.0, "bright": 3.0, "backup": 4.0}.get(program, 1.0)
    cont = 1.2 + 1.6 * (w - 3600) / 6200
    cont = cont + (moon - 1) * 1.5 * np.exp(-(w - 3600) / 2500)  # scattered moonlight, blue
    lines_air = [(5577.34, 160.0), (6300.30, 45.0), (6363.78, 15.0), (5889.95, 18.0), (5895.92, 14.0),
                 (4358.34, 9.0), (5460.74, 8.0), (4046.56, 3.0), (5770.0, 2.0), (5790.7, 2.0)]
    rng = np.random.default_rng(20210514)
    bands = [(6830, 7000, 18), (7230, 7420, 25), (7520, 7720, 22), (7750, 8070, 40), (8270, 8560, 45),
             (8760, 9060, 45), (9280, 9820, 55), (6470, 6600, 10), (6200, 6330, 6)]
    for lo, hi, m in bands:
        c = np.sort(rng.uniform(lo, hi, m))
        f = rng.lognormal(np.log(14.0 + 30.0 * (lo > 7700)), 0.9, m)
        lines_air += list(zip(c, f))
    c = air_to_vac(np.array([l[0] for l in lines_air]))
    f = np.array([l[1] for l in lines_air])
    sky = cont.copy()
    for ci, fi in zip(c, f):
        m = np.abs(w - ci) < 6
        sky[m] += fi * _gauss(w[m], ci, 0.72)
    return sky


def throughput(wave: np.ndarray) -> np.ndarray:
    """Relative end-to-end throughput (peak 1) with blue fall-off, dichroic dips and red CCD roll-off."""
    w = np.asarray(wave)
    t = 0.35 + 0.65 / (1 + np.exp(-(w - 3800) / 100.0))
    t *= 1.0 / (1 + np.exp((w - 9500) / 180.0)) * 0.9 + 0.1
    t *= 1 - 0.25 * np.exp(-0.5 * ((w - 5780) / 25) ** 2) - 0.25 * np.exp(-0.5 * ((w - 7570) / 30) ** 2)
    return t


def noise_sigma(model: np.ndarray, wave: np.ndarray, sky: np.ndarray, exptime_s: np.ndarray,
                nexp: np.ndarray) -> np.ndarray:
    """Per-pixel 1σ noise (flux units) from sky + object Poisson and read noise, given exposure time (s)."""
    conv = 28.0 * throughput(wave)[None, :] * (wave[None, :] / 5000.0) * (exptime_s[:, None] / 1000.0)
    var_ph = conv * (sky[None, :] + np.clip(model, 0, None)) + 30.0 * nexp[:, None]
    return np.sqrt(var_ph) / conv
