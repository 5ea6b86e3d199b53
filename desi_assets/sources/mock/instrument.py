"""DESI-like instrument: resolution matrices, sky spectrum, throughput, noise and mask bits.

Models are evaluated on the merged 0.8 Å grid padded by 5 pixels at each end (every
arm pixel lies on it); each arm is cut out, convolved with its own 11-diagonal
resolution matrix (DESI convention: offsets +5…−5, data[d, j] = R[j − off_d, j]),
and noise is drawn from per-arm DESI noise curves measured on real coadds (data/noise_curves.npz,
written by tools/noise_curves.py: σ per pixel for 1,000 s of dark time, with the blue end, arm ends,
dichroic overlaps and sky lines), scaled by 1/√(exposure time) and the program's sky brightness, plus
the object's own Poisson noise. Sky-subtraction residuals (not in ivar) are added at sky-line pixels
in proportion to the line's excess noise, i.e. to its sky flux.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from scipy.ndimage import gaussian_filter1d

from desi_assets.science.wavelength import ARMS, COMBINED_NPIX, COMBINED_START_A, DESI_PIXEL_STEP_A

NDIAG = 11
OFFSETS = NDIAG // 2 - np.arange(NDIAG)  # +5 … −5
PAD = NDIAG // 2
#: SPECMASK bit (desispec.maskbits.specmask) that real coadd pixels carry: desispec's coadd keeps mask 0
#: where any input exposure was good, and ORs the inputs' bits (SOMEBADPIX in real frames) where none was.
MASK_SOMEBADPIX = 1 << 0
#: COADD_FIBERSTATUS values of real DESI coadd rows without data (fuji sv3-dark-26065, tile 169).
FIBERSTATUS = {"unassigned": (1, 1033), "stuck": (515, 513), "broken": (512, 4), "sky": (520,)}
#: Sky brightness per program: extra sky variance relative to dark, at 3600 Å (blue, moon) and flat.
SKY_BRIGHTNESS = {"dark": (0.0, 0.0), "bright": (2.5, 0.6), "backup": (4.0, 1.0)}
#: Sky-subtraction residual amplitude in units of the sky line's excess noise (tuned to the real Z-arm
#: robust χ scatter at sky-line pixels as bench/mock_vs_real.py measures it on the real files).
SKY_RESIDUAL_SCALE = 1.25
FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"

#: Per-arm LSF Gaussian σ in pixels at the blue and red end of the arm (matches real iron R).
_SIGMA_PIX = {"b": (0.95, 0.86), "r": (0.86, 0.80), "z": (0.92, 0.97)}
#: Small negative/positive wings of the real (deconvolved) DESI resolution at |off| = 3, 4, 5.
_RINGING = {3: -0.0015, 4: 0.003, 5: -0.0012}


def model_wave() -> np.ndarray:
    """Padded model grid (Å): the merged 3600–9824 Å grid plus 5 pixels each side."""
    return np.round(COMBINED_START_A + DESI_PIXEL_STEP_A * np.arange(-PAD, COMBINED_NPIX + PAD), 4)


def arm_slice(arm: str) -> slice:
    """Slice of an arm's pixels, with ±PAD margin, inside model_wave()."""
    a = ARMS[arm]
    i0 = int(round((a.start_a - COMBINED_START_A) / DESI_PIXEL_STEP_A))
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


def throughput(wave: np.ndarray) -> np.ndarray:
    """Relative end-to-end throughput (peak 1) with blue fall-off, dichroic dips and red CCD roll-off."""
    w = np.asarray(wave)
    t = 0.35 + 0.65 / (1 + np.exp(-(w - 3800) / 100.0))
    t *= 1.0 / (1 + np.exp((w - 9500) / 180.0)) * 0.9 + 0.1
    t *= 1 - 0.25 * np.exp(-0.5 * ((w - 5780) / 25) ** 2) - 0.25 * np.exp(-0.5 * ((w - 7570) / 30) ** 2)
    return t


@functools.lru_cache(maxsize=1)
def noise_table() -> dict[str, np.ndarray]:
    """Measured DESI noise per arm pixel for 1,000 s of dark time (σ and σ between sky lines, flux units)."""
    with resources.files("desi_assets.sources.mock").joinpath("data/noise_curves.npz").open("rb") as f:
        with np.load(f) as z:
            return {k: np.asarray(z[k]) for k in z.files}


def sky_variance_scale(program: str, wave: np.ndarray) -> np.ndarray:
    """Sky variance of a program relative to dark time at each wavelength (Å): 1 for dark."""
    blue, flat = SKY_BRIGHTNESS.get(program, (0.0, 0.0))
    return 1.0 + blue * np.exp(-(np.asarray(wave) - 3600.0) / 1500.0) + flat


def noise_sigma(model: np.ndarray, wave: np.ndarray, arm: str, program: str, exptime_s: np.ndarray) -> np.ndarray:
    """Per-pixel 1σ noise (flux units): measured DESI sky+read noise scaled to exposure time (s) and program,
    plus the object's Poisson noise."""
    t = np.maximum(np.asarray(exptime_s, dtype=np.float64), 1.0)[:, None]
    base = noise_table()[f"sigma_{arm}"].astype(np.float64)[None, :]
    var_bg = base**2 * sky_variance_scale(program, wave)[None, :] * (1000.0 / t)
    conv = 28.0 * throughput(wave)[None, :] * (wave[None, :] / 5000.0) * (t / 1000.0)  # photons per flux unit
    return np.sqrt(var_bg + np.clip(model, 0, None) / conv)


def sky_residuals(rng: np.random.Generator, arm: str, program: str, exptime_s: np.ndarray) -> np.ndarray:
    """Sky-subtraction residuals (n, npix) in flux units: zero between sky lines, correlated over a line."""
    t = np.maximum(np.asarray(exptime_s, dtype=np.float64), 1.0)[:, None]
    tab = noise_table()
    excess = np.sqrt(np.clip(tab[f"sigma_{arm}"].astype(np.float64) ** 2
                             - tab[f"sigma_cont_{arm}"].astype(np.float64) ** 2, 0, None))
    cols = np.flatnonzero(excess > 0.05 * tab[f"sigma_cont_{arm}"])  # sky-line pixels only
    out = np.zeros((len(t), excess.size))
    if cols.size:
        g = gaussian_filter1d(rng.standard_normal((len(t), cols.size), dtype=np.float32), 1.0, axis=1)
        out[:, cols] = (SKY_RESIDUAL_SCALE * np.sqrt(2 * np.sqrt(np.pi))) * g * excess[cols][None, :]
        out[:, cols] *= np.sqrt(1000.0 / t)
    return out
