"""Native-grid spectra -> patch tokens: median normalisation, per-patch validity, pooled wavelength features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Reasons a spectrum is refused (no embedding), by code.
REFUSALS: dict[int, str] = {
    0: "",
    1: "no good pixel (all masked, ivar <= 0 or non-finite flux)",
    2: "median |flux| of the good pixels is not positive",
    3: "no patch with at least half its pixels good",
}


@dataclass
class Tokens:
    """A batch of tokenised spectra (N rows, T patches of P pixels).

    flux/ivar: normalised flux and ivar (N, T, P), 0 at bad pixels; good: pixel usable (N, T, P);
    wave: pixel wavelengths (T, P) or (N, T, P), Å; inside: real pixel, not end padding (same shape as wave);
    valid: patch usable (N, T); norm: median |flux| of good pixels (N,), input flux units;
    refused: refusal code per row (N,), see REFUSALS.
    """

    flux: np.ndarray
    ivar: np.ndarray
    good: np.ndarray
    wave: np.ndarray
    inside: np.ndarray
    valid: np.ndarray
    norm: np.ndarray
    refused: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Rows that can be embedded (N,) bool."""
        return self.refused == 0

    def reasons(self) -> list[str]:
        """Refusal reason per row ('' when embedded)."""
        return [REFUSALS[int(c)] for c in self.refused]

    def rows(self, idx: np.ndarray) -> "Tokens":
        """The Tokens of rows idx (int indices or a bool mask); a shared (T, P) grid stays shared."""
        sel = {k: getattr(self, k)[idx] for k in ("flux", "ivar", "good", "valid", "norm", "refused")}
        shared = self.wave.ndim == 2
        return Tokens(wave=self.wave if shared else self.wave[idx], inside=self.inside if shared else self.inside[idx],
                      **sel)


def _pad(x: np.ndarray, n: int, value) -> np.ndarray:
    """Pad the last axis of x with `value` to length n."""
    if x.shape[-1] == n:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])]
    return np.pad(x, pad, constant_values=value)


def tokenize(waves: Sequence[np.ndarray], fluxes: Sequence[np.ndarray], ivars: Sequence[np.ndarray],
             masks: Sequence[np.ndarray | None], patch: int) -> Tokens:
    """Cut each arm (λ in Å (L,) or (N, L); flux, ivar, mask (N, L)) into patches of `patch` pixels, padding each arm's end.

    A pixel is good when mask == 0, ivar > 0 and flux and ivar are finite. Flux is divided by the
    median |flux| of the good pixels (ivar multiplied by its square), so the tokens do not depend on
    the flux scale. A patch is valid when at most half its pixels are bad.
    """
    parts = {k: [] for k in ("flux", "ivar", "good", "wave", "inside")}
    for wave, flux, ivar, mask in zip(waves, fluxes, ivars, masks, strict=True):
        flux = np.asarray(flux, dtype=np.float64)
        ivar = np.asarray(ivar, dtype=np.float64)
        if flux.ndim != 2 or ivar.shape != flux.shape:
            raise ValueError(f"flux and ivar must be (N, L) of one shape, got {flux.shape} and {ivar.shape}")
        wave = np.asarray(wave, dtype=np.float64)
        if wave.shape[-1] != flux.shape[1]:
            raise ValueError(f"wavelength grid has {wave.shape[-1]} pixels, flux {flux.shape[1]}")
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        if mask is not None:
            good &= np.asarray(mask) == 0
        n_pad = -(-flux.shape[1] // patch) * patch
        step = np.diff(wave, axis=-1).mean(axis=-1, keepdims=True) if wave.shape[-1] > 1 else np.ones(wave.shape[:-1] + (1,))
        extra = wave[..., -1:] + step * np.arange(1, n_pad - wave.shape[-1] + 1)
        parts["wave"].append(np.concatenate([wave, extra], axis=-1))
        parts["inside"].append(_pad(np.ones(wave.shape, bool), n_pad, False))
        parts["flux"].append(_pad(np.where(good, flux, 0.0), n_pad, 0.0))
        parts["ivar"].append(_pad(np.where(good, ivar, 0.0), n_pad, 0.0))
        parts["good"].append(_pad(good, n_pad, False))
    cat = {k: np.concatenate(v, axis=-1) for k, v in parts.items()}
    n = cat["flux"].shape[0]
    absflux = np.where(cat["good"], np.abs(cat["flux"]), np.nan)
    any_good = cat["good"].any(axis=1)
    with np.errstate(all="ignore"):
        norm = np.where(any_good, np.nanmedian(np.where(any_good[:, None], absflux, 0.0), axis=1), np.nan)
    pos = np.isfinite(norm) & (norm > 0)
    scale = np.where(pos, norm, 1.0)
    shape = (n, -1, patch)
    good = cat["good"].reshape(shape)
    valid = 2 * good.sum(axis=-1) >= patch
    refused = np.where(~any_good, 1, np.where(~pos, 2, np.where(~valid.any(axis=1), 3, 0))).astype(np.int8)
    wshape = shape if cat["wave"].ndim == 2 else (-1, patch)
    return Tokens(
        flux=(cat["flux"] / scale[:, None]).astype(np.float32).reshape(shape),
        ivar=(cat["ivar"] * scale[:, None] ** 2).astype(np.float32).reshape(shape),
        good=good, wave=cat["wave"].reshape(wshape), inside=cat["inside"].reshape(wshape),
        valid=valid & (refused == 0)[:, None], norm=norm, refused=refused)


def wavelength_features(wave: np.ndarray, n_freq: int, min_period_a: float, max_period_a: float) -> np.ndarray:
    """Per-pixel sinusoidal features of λ (Å): sin and cos at `n_freq` log-spaced periods, shape (..., 2 n_freq)."""
    periods = np.geomspace(min_period_a, max_period_a, n_freq)
    phase = 2.0 * np.pi * np.asarray(wave, dtype=np.float64)[..., None] / periods
    return np.concatenate([np.sin(phase), np.cos(phase)], axis=-1)


def pooled_wavelength_features(wave: np.ndarray, inside: np.ndarray, n_freq: int, min_period_a: float,
                               max_period_a: float) -> np.ndarray:
    """Mean of the per-pixel λ features over the real pixels of each patch: (..., T, P) -> (..., T, 2 n_freq)."""
    feats = wavelength_features(wave, n_freq, min_period_a, max_period_a)
    w = np.asarray(inside, dtype=np.float64)[..., None]
    return ((feats * w).sum(axis=-2) / np.maximum(w.sum(axis=-2), 1.0)).astype(np.float32)


def tokenize_desi(arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], patch: int, shift: int = 0) -> Tokens:
    """Tokens of DESI spectra from per-arm (flux, ivar, mask) arrays (N, npix) on the native b/r/z grids.

    shift: leave out each arm's first `shift` pixels, so the patch boundaries fall `shift` pixels later in λ
    (a shifted patch grid: training augmentation and the grid-shift test).
    """
    from desi_assets.science.wavelength import ARMS

    if not 0 <= shift < patch:
        raise ValueError(f"shift must be in [0, patch={patch}), got {shift}")
    names = [a for a in ARMS if a in arms]
    return tokenize([ARMS[a].wavelength()[shift:] for a in names], [arms[a][0][:, shift:] for a in names],
                    [arms[a][1][:, shift:] for a in names], [arms[a][2][:, shift:] for a in names], patch)


def grid_shifts(patch: int, n: int) -> list[int]:
    """n patch-grid shifts (pixels) spread evenly over one patch: 0, patch/n, 2 patch/n, ..."""
    if not 1 <= n <= patch:
        raise ValueError(f"need 1 <= n <= patch={patch} grid shifts, got {n}")
    return [i * patch // n for i in range(n)]
