"""Seed reconstruction-error scoring, noise-aware χ², categorisation and the high-z Lyα signature.

Combination of the two label fields (both returned for every row):

* ``dominance`` (:func:`dominance_labels`): ``ARTIFACT_SUSPECT`` when one arm's fraction of the
  score is > 0.85 **and** score > 10; otherwise ``B_DOMINANT`` / ``R_DOMINANT`` / ``Z_DOMINANT``
  when one arm's fraction is > 0.60, else ``MULTI_BAND``.
* ``category`` (:func:`categorize`): ``ARTIFACT_SUSPECT`` overrides everything (same rule as
  above); otherwise ``GENUINELY_NOVEL`` when score > 15; otherwise ``HIGH_Z_CANDIDATE`` when the
  high-z signature fires and Redrock z < 2; otherwise ``UNUSUAL_AGN`` for SPECTYPE QSO and
  ``UNUSUAL_GALAXY`` for everything else (GALAXY and STAR).

Both functions label every row as if it were an anomaly; pass ``threshold`` to label rows with
score <= threshold ``NORMAL`` in both fields (``is_anomaly = score > threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from desi_assets.science.anomaly.local import (
    LocalCalibration, LocalScore, ModelError, inpaint_bins, local_significance,
)
from desi_assets.science.batching import in_row_blocks
from desi_assets.science.wavelength import ARM_NAMES, arm_bin_slices, binned_wavelength

#: Default anomaly threshold on the seed score (dimensionless).
DEFAULT_THRESHOLD = 5.0
ARTIFACT_FRAC = 0.85
ARTIFACT_SCORE = 10.0
DOMINANT_FRAC = 0.60
NOVEL_SCORE = 15.0
HIGHZ_MAX_REDROCK_Z = 2.0
LYA_A = 1215.67
_CHUNK = 4096


@dataclass
class ScoreTable:
    """Per-spectrum score columns (N,): seed r_x/score (dimensionless), fractions, worst band, χ²_ν per arm."""

    r_b: np.ndarray
    r_r: np.ndarray
    r_z: np.ndarray
    score: np.ndarray
    frac_b: np.ndarray
    frac_r: np.ndarray
    frac_z: np.ndarray
    worst_band: np.ndarray
    chi2_b: np.ndarray
    chi2_r: np.ndarray
    chi2_z: np.ndarray
    score_noise_aware: np.ndarray
    noise_aware_ok: np.ndarray

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns as a dict of arrays (for a DataFrame)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        return int(self.score.shape[0])


def score_spectra(flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray) -> ScoreTable:
    """Seed score r_x = mean_arm|f−r|²/median_all|f|² (dimensionless) and χ²_ν per arm over ivar>0 bins."""
    flux = np.asarray(flux, dtype=np.float32)
    recon = np.asarray(recon, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    if flux.shape != recon.shape or flux.shape != ivar.shape or flux.ndim != 2:
        raise ValueError(f"flux, recon, ivar must share a 2-D shape; got {flux.shape}, {recon.shape}, {ivar.shape}")
    n = flux.shape[0]
    slices = arm_bin_slices()
    r = {a: np.empty(n) for a in ARM_NAMES}
    chi2 = {a: np.empty(n) for a in ARM_NAMES}
    half = flux.shape[1] // 2
    kth = [half - 1, half] if flux.shape[1] % 2 == 0 else [half]
    for s0 in range(0, n, _CHUNK):
        sl_rows = slice(s0, min(n, s0 + _CHUNK))
        f, rc, iv = flux[sl_rows], recon[sl_rows], ivar[sl_rows]
        resid2 = np.square(f - rc)
        # median over all bins of flux² = median of |flux|, squared (averaging the two middle values).
        part = np.partition(np.abs(f), kth, axis=1)[:, kth].astype(np.float64)
        denom = np.mean(np.square(part), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_denom = np.where(denom > 0, 1.0 / denom, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            chi = iv * resid2
            valid = (iv > 0) & np.isfinite(chi)  # NaN ivar fails iv > 0; Inf/NaN products dropped
        chi[~valid] = 0.0
        for arm, sl in slices.items():
            r[arm][sl_rows] = resid2[:, sl].mean(axis=1, dtype=np.float64) * inv_denom
            nv = valid[:, sl].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                chi2[arm][sl_rows] = np.where(nv > 0, chi[:, sl].sum(axis=1, dtype=np.float64) / nv, np.nan)
    score = r["b"] + r["r"] + r["z"]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = {a: r[a] / score for a in ARM_NAMES}
    stacked = np.stack([r[a] for a in ARM_NAMES], axis=1)
    worst = np.array(["B", "R", "Z"])[np.argmax(np.nan_to_num(stacked, nan=-np.inf), axis=1)]
    na = chi2["b"] + chi2["r"] + chi2["z"]
    return ScoreTable(
        r_b=r["b"], r_r=r["r"], r_z=r["z"], score=score,
        frac_b=frac["b"], frac_r=frac["r"], frac_z=frac["z"], worst_band=worst,
        chi2_b=chi2["b"], chi2_r=chi2["r"], chi2_z=chi2["z"],
        score_noise_aware=na, noise_aware_ok=np.isfinite(na),
    )


@dataclass
class ModelScores:
    """Every score of a batch: seed + χ² table, local components, score_local, reconstruction (normalised flux)."""

    table: ScoreTable
    local: LocalScore
    score_local: np.ndarray
    recon: np.ndarray


def score_with_model(model, flux: np.ndarray, ivar: np.ndarray, masked_frac: np.ndarray | None = None,
                     z: np.ndarray | None = None, spectype: np.ndarray | None = None,
                     model_error: ModelError | None = None,
                     calibration: LocalCalibration | None = None) -> ModelScores:
    """Reconstruct normalised flux (N,496) with masked bins inpainted, then the seed, χ² and local scores.

    Bins with ``masked_frac > 0`` hold pipeline-masked pixels in their seed-binned flux: the model
    sees them interpolated, and they leave the noise-aware χ² and the local score (the seed score
    keeps every bin, as the seed did). ``z``/``spectype`` select the model-error profile and the
    per-class calibration of ``score_local`` (without a calibration it is the box significance, σ).
    Works in blocks of ``_CHUNK`` rows.
    """
    n = np.shape(flux)[0]
    if n == 0:  # an empty batch (e.g. a list column read back as (0, 0)) scores to empty columns
        width = int(getattr(model, "n_bins", 496))
        flux, ivar = np.zeros((0, width), np.float32), np.zeros((0, width), np.float32)
        masked_frac = None if masked_frac is None else np.zeros((0, width), np.float32)
    types = np.full(n, "") if spectype is None else np.asarray(spectype)
    use_model_error = model_error is not None and bool(model_error.variance) and z is not None
    calibration = calibration or LocalCalibration()

    def block(rows: slice) -> ModelScores:
        f, iv = np.asarray(flux[rows], np.float32), np.asarray(ivar[rows], np.float32)
        bad = _bad_bins(masked_frac, rows, f.shape)
        recon = reconstruct_masked(model, f, bad)
        model_var = model_error.bin_variance(np.asarray(z)[rows], types[rows]) if use_model_error else 0.0
        local = local_significance(f, recon, iv, bad, model_var)
        return ModelScores(score_spectra(f, recon, np.where(bad, np.float32(0), iv)), local,
                           calibration.score(local, types[rows]), recon)

    return in_row_blocks(n, _CHUNK, block)


def _bad_bins(masked_frac: np.ndarray | None, rows: slice, shape: tuple[int, ...]) -> np.ndarray:
    """Bins holding pipeline-masked pixels (masked_frac > 0); none when masked_frac is not given."""
    return np.zeros(shape, bool) if masked_frac is None else np.asarray(masked_frac[rows]) > 0


def reconstruct_masked(model, flux: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """BigAE reconstruction (normalised flux) of flux with its `bad` bins inpainted, as the model was trained."""
    from desi_assets.science.anomaly.training import reconstruct

    return reconstruct(model, inpaint_bins(flux, bad) if bad.any() else flux)


def is_anomaly(score: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean anomaly flag: score > threshold (dimensionless); NaN scores are not anomalies."""
    s = np.asarray(score, dtype=np.float64)
    return np.nan_to_num(s, nan=-np.inf) > threshold


def _fracs(frac_b, frac_r, frac_z) -> np.ndarray:
    return np.nan_to_num(np.stack([np.asarray(frac_b, float), np.asarray(frac_r, float),
                                   np.asarray(frac_z, float)], axis=1), nan=0.0)


def dominance_labels(
    score: np.ndarray, frac_b: np.ndarray, frac_r: np.ndarray, frac_z: np.ndarray,
    threshold: float | None = None,
) -> np.ndarray:
    """Dominance field: ARTIFACT_SUSPECT / B_,R_,Z_DOMINANT / MULTI_BAND (and NORMAL below threshold if given)."""
    score = np.asarray(score, dtype=np.float64)
    f = _fracs(frac_b, frac_r, frac_z)
    fmax = f.max(axis=1)
    out = np.full(score.shape, "MULTI_BAND", dtype=object)
    dom = np.array(["B_DOMINANT", "R_DOMINANT", "Z_DOMINANT"], dtype=object)[np.argmax(f, axis=1)]
    out = np.where(fmax > DOMINANT_FRAC, dom, out)
    out = np.where((fmax > ARTIFACT_FRAC) & (score > ARTIFACT_SCORE), "ARTIFACT_SUSPECT", out)
    if threshold is not None:
        out = np.where(is_anomaly(score, threshold), out, "NORMAL")
    return out.astype(str)


def categorize(
    score: np.ndarray, frac_b: np.ndarray, frac_r: np.ndarray, frac_z: np.ndarray,
    spectype: np.ndarray, highz_signature: np.ndarray,
    z_redrock: np.ndarray | None = None, threshold: float | None = None,
) -> np.ndarray:
    """Category per the seed tree (ARTIFACT_SUSPECT overrides; see module doc); returns a str array."""
    score = np.asarray(score, dtype=np.float64)
    f = _fracs(frac_b, frac_r, frac_z)
    artifact = (f.max(axis=1) > ARTIFACT_FRAC) & (score > ARTIFACT_SCORE)
    st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))
    hz = np.asarray(highz_signature, dtype=bool)
    if z_redrock is not None:
        hz = hz & (np.asarray(z_redrock, dtype=np.float64) < HIGHZ_MAX_REDROCK_Z)
    out = np.where(st == "QSO", "UNUSUAL_AGN", "UNUSUAL_GALAXY").astype(object)
    out = np.where(hz, "HIGH_Z_CANDIDATE", out)
    out = np.where(score > NOVEL_SCORE, "GENUINELY_NOVEL", out)
    out = np.where(artifact, "ARTIFACT_SUSPECT", out)
    if threshold is not None:
        out = np.where(is_anomaly(score, threshold), out, "NORMAL")
    return out.astype(str)


#: Rest-frame windows (Å) of the high-z signature: Lyα forest, Lyα+NV peak, red continuum.
HIGHZ_FOREST_REST = (1060.0, 1180.0)
HIGHZ_PEAK_REST = (1195.0, 1250.0)
HIGHZ_CONT_REST = (1275.0, 1375.0)
#: Trial Lyα redshifts: Lyα observed 3600–5800 Å (the b arm) → z ≈ 1.96–3.77.
HIGHZ_TRIAL_Z = np.arange(2.0, 3.78, 0.01)  # Δz 0.01 ≈ 1 bin (12.8 Å) at Lyα
HIGHZ_FOREST_RATIO = 0.6   # forest mean < 0.6 × peak mean
HIGHZ_PEAK_RATIO = 1.3     # peak mean > 1.3 × red continuum mean
HIGHZ_MIN_FOREST_BINS = 3
HIGHZ_MIN_PEAK = 1.0       # peak mean > 1 × median|flux| (the normalisation): a real emission peak
HIGHZ_NSIGMA = 5.0         # peak above forest and continuum by 5σ (σ from bin-to-bin differences)


def highz_signature(
    flux: np.ndarray, z_redrock: np.ndarray | None = None, wave: np.ndarray | None = None,
) -> np.ndarray:
    """Lyα-break signature in the b arm (bool per spectrum), gated to Redrock z < 2 when z_redrock is given.

    For trial Lyα redshifts z_t in 2.00–3.77 (Lyα at 3647–5800 Å) it compares mean normalised
    flux in three rest-frame windows: forest 1060–1180 Å (≥3 observed bins), Lyα+NV peak
    1195–1250 Å and red continuum 1275–1375 Å. It fires when, for some z_t, the peak exceeds
    1 (the spectrum's median |flux|, i.e. the normalisation; pass normalised flux),
    the forest is < 0.6 × peak (a flux deficit blueward of a sharp break), the peak is
    > 1.3 × continuum (an emission peak, which the 4000 Å break of a galaxy does not have),
    forest and continuum are positive, and the peak exceeds both by 5σ of the window means
    (σ of one bin = 1.4826·median|Δflux|/√2 from first differences; upper median for even counts).
    """
    flux = np.asarray(flux)
    wave = binned_wavelength() if wave is None else np.asarray(wave, dtype=np.float64)
    zt = 1.0 + HIGHZ_TRIAL_Z
    # Only bins up to the reddest continuum window matter (b arm + blue part of r).
    keep = np.nonzero(wave < HIGHZ_CONT_REST[1] * zt[-1] + 20.0)[0]
    keep = keep[np.argsort(wave[keep], kind="stable")]
    w = wave[keep]

    def bounds(rest):
        i0 = np.searchsorted(w, rest[0] * zt, side="left")
        i1 = np.searchsorted(w, rest[1] * zt, side="left")
        return i0, i1, (i1 - i0).astype(np.float64)

    (f0, f1, nf), (p0, p1, npk), (c0, c1, nc) = (
        bounds(HIGHZ_FOREST_REST), bounds(HIGHZ_PEAK_REST), bounds(HIGHZ_CONT_REST))
    ok = (nf >= HIGHZ_MIN_FOREST_BINS) & (npk >= 2) & (nc >= 2)
    f0, f1, nf, p0, p1, npk, c0, c1, nc = (a[ok] for a in (f0, f1, nf, p0, p1, npk, c0, c1, nc))
    errfac = np.sqrt(1.0 / npk + 1.0 / np.minimum(nf, nc))
    nf, npk, nc = (a.astype(np.float32) for a in (nf, npk, nc))
    sig = np.zeros(flux.shape[0], dtype=bool)
    for s0 in range(0, flux.shape[0], 8192):
        fb = np.nan_to_num(np.asarray(flux[s0 : s0 + 8192][:, keep], dtype=np.float64))
        cs = np.zeros((fb.shape[0], fb.shape[1] + 1))
        np.cumsum(fb, axis=1, out=cs[:, 1:])
        cs = cs.astype(np.float32)
        forest = (cs[:, f1] - cs[:, f0]) / nf
        peak = (cs[:, p1] - cs[:, p0]) / npk
        cont = (cs[:, c1] - cs[:, c0]) / nc
        base = (
            (peak > HIGHZ_MIN_PEAK)
            & (forest > 0)
            & (cont > 0)
            & (forest < HIGHZ_FOREST_RATIO * peak)
            & (peak > HIGHZ_PEAK_RATIO * cont)
        )
        rows = np.nonzero(base.any(axis=1))[0]  # the (costly) noise test only where the shape matches
        if rows.size == 0:
            continue
        # Bin-to-bin noise from first differences (robust σ of one bin).
        ad = np.abs(np.diff(fb[rows], axis=1))
        mid = ad.shape[1] // 2
        sigma = 1.4826 * np.partition(ad, mid, axis=1)[:, mid] / np.sqrt(2.0)
        excess = peak[rows] - np.maximum(forest[rows], cont[rows])
        fire = base[rows] & (excess > HIGHZ_NSIGMA * sigma[:, None] * errfac[None, :])
        sig[s0 + rows] = fire.any(axis=1)
    if z_redrock is not None:
        sig &= np.asarray(z_redrock, dtype=np.float64) < HIGHZ_MAX_REDROCK_Z
    return sig


def normalise_binned(raw_flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessing contract on binned flux: NaN/Inf→0, divide by per-spectrum median |flux| → (float32, norm)."""
    f = np.nan_to_num(np.asarray(raw_flux, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    norm = np.median(np.abs(f), axis=1)
    norm = np.where(np.isfinite(norm) & (norm > 0), norm, 1.0)
    return (f / norm[:, None]).astype(np.float32), norm


def make_score_fn(
    model, which: str = "score", raw_ivar: np.ndarray | None = None, masked_frac: np.ndarray | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Callable raw binned flux (N,496) → score column `which` (N,) including normalisation, for the bias controls."""

    def fn(raw_flux: np.ndarray) -> np.ndarray:
        fn_flux, norm = normalise_binned(raw_flux)
        if raw_ivar is None:
            ivar = np.ones_like(fn_flux)
        else:
            ivar = (np.asarray(raw_ivar, dtype=np.float64) * norm[:, None] ** 2).astype(np.float32)
        bad = _bad_bins(masked_frac, slice(None), fn_flux.shape)
        return getattr(score_spectra(fn_flux, reconstruct_masked(model, fn_flux, bad), np.where(bad, 0, ivar)), which)

    return fn
