"""The seed's preprocessing: 16x binning per arm to 496 bins, NaN/Inf -> 0, median-|flux| normalisation.

Remainder pixels: each arm keeps whole groups of 16 from its blue end (b 171, r 145, z 180 bins)
and drops the trailing 15, 6 and 1 pixels (5787.2-5800.0, 7615.2-7620.0 and 9824.0 Å); the
first two lie in the arm overlaps, so only the last z pixel is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desi_assets.science.batching import in_row_blocks
from desi_assets.science.wavelength import ARMS, BIN_FACTOR


@dataclass
class Preprocessed:
    """Binned spectra: flux/ivar normalised (N, 496), masked fraction per bin, norm (N,) in input flux units."""

    flux: np.ndarray
    ivar: np.ndarray
    masked_frac: np.ndarray
    norm: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Rows whose normalisation constant is finite and positive."""
        return np.isfinite(self.norm) & (self.norm > 0)


def bin_arm(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average one arm in whole groups of 16 pixels: (flux, ivar, masked fraction), flux units kept."""
    n, npix = flux.shape
    nb = npix // BIN_FACTOR
    used = nb * BIN_FACTOR
    f = np.asarray(flux[:, :used], dtype=np.float64)
    iv = np.asarray(ivar[:, :used], dtype=np.float64)
    good = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
    if mask is not None:
        good &= np.asarray(mask[:, :used]) == 0
    f = np.where(np.isfinite(f), f, 0.0)  # the seed: NaN/±Inf -> 0, bad pixels otherwise kept
    fb = f.reshape(n, nb, BIN_FACTOR).mean(axis=2)
    g = good.reshape(n, nb, BIN_FACTOR)
    var = np.where(good, 1.0 / np.where(good, iv, 1.0), 0.0).reshape(n, nb, BIN_FACTOR).sum(axis=2)
    ngood = g.sum(axis=2)
    # ivar of a 16-pixel mean, bad pixels assumed as noisy as the good ones of the same bin
    ivb = np.where(ngood > 0, BIN_FACTOR * ngood / np.where(var > 0, var, np.inf), 0.0)
    return fb, ivb, 1.0 - ngood / BIN_FACTOR


#: Rows binned at a time: keeps float64 temporaries to ~tens of MB (large ones thrash the page cache).
CHUNK_ROWS = 1024


def preprocess(arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> Preprocessed:
    """Run the seed pipeline on b/r/z (flux, ivar, mask) arrays of shape (N, npix_arm), in row chunks."""
    return in_row_blocks(arms["b"][0].shape[0], CHUNK_ROWS, lambda rows: _preprocess(
        {k: tuple(None if a is None else a[rows] for a in v) for k, v in arms.items()}))


def _preprocess(arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> Preprocessed:
    fluxes, ivars, fracs = [], [], []
    for name, arm in ARMS.items():
        flux, ivar, mask = arms[name]
        if flux.shape[1] != arm.npix:
            raise ValueError(f"arm {name} has {flux.shape[1]} pixels, expected {arm.npix}")
        fb, ivb, mf = bin_arm(flux, ivar, mask)
        fluxes.append(fb), ivars.append(ivb), fracs.append(mf)
    flux = np.concatenate(fluxes, axis=1)
    ivar = np.concatenate(ivars, axis=1)
    norm = np.median(np.abs(flux), axis=1)
    ok = np.isfinite(norm) & (norm > 0)
    safe = np.where(ok, norm, 1.0)
    flux_n = np.where(ok[:, None], flux / safe[:, None], 0.0)
    flux_n = np.nan_to_num(flux_n, nan=0.0, posinf=0.0, neginf=0.0)
    ivar_n = np.where(ok[:, None], ivar * safe[:, None] ** 2, 0.0)
    return Preprocessed(flux_n.astype(np.float32), ivar_n.astype(np.float32),
                        np.concatenate(fracs, axis=1).astype(np.float32), norm.astype(np.float64))


def bin_lsf(lsf_sigma: dict[str, np.ndarray]) -> np.ndarray:
    """Mean LSF sigma per 496-bin (Å) from per-arm per-pixel sigma: (npix,) → (496,), (n, npix) → (n, 496)."""
    parts = []
    for name, arm in ARMS.items():
        s = np.asarray(lsf_sigma[name], dtype=np.float32)[..., : arm.nbins * BIN_FACTOR]
        parts.append(s.reshape(*s.shape[:-1], arm.nbins, BIN_FACTOR).mean(axis=-1, dtype=np.float64))
    return np.concatenate(parts, axis=-1).astype(np.float32)
