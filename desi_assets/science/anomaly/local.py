"""Localised residual significance: the strongest narrow feature left after the reconstruction.

The seed score and the noise-aware χ² average the residual over whole arms, so a 2-bin spike,
a 20 Å dead segment or a BAL trough is diluted by 150+ ordinary bins, and spectra the model fits
poorly everywhere (bright stars, QSOs) set the threshold. ``score_local`` instead asks how
significant the strongest *localised* feature is, in σ:

1. Bins whose seed-binned flux contains pipeline-masked pixels (``masked_frac > 0``) are left out:
   the seed averages masked cosmic rays and dead columns into the bin, so their flux is not data.
   The reconstruction is made from the flux with those bins interpolated (:func:`inpaint_bins`).
2. The residual ``flux − recon`` is high-passed per arm (block medians of ``HIGHPASS_BINS`` bins,
   linearly interpolated), removing the smooth continuum misfit the model leaves.
3. Each bin's variance is ``1/ivar + (ε·recon)² + σ²_model(λ/(1+z), class)``: noise, a fractional
   model-error floor and the model's measured rest-frame error (:class:`ModelError`, fitted on the
   training split; large at emission lines, whose strengths the model cannot predict).
4. The score is the largest ``|Σ χ| / √w`` over boxes of ``w`` in ``WIDTHS_BINS`` consecutive
   bins (1–13 bins, 13–166 Å): a matched filter for box-shaped features of unknown width and
   position. Left-out bins add 0 to a box (conservative for boxes that hold them).

5. A second component catches what a box cannot: a flux-calibration step between arms.
   :func:`arm_step_significance` compares the fractional residual in the last and first
   ``STEP_BINS`` bins on either side of the b/r and r/z boundaries (σ); the model's misfit is
   continuous across them, a step of one arm is not.

Both components are in σ but have different clean distributions, and the model fits the three
redrock classes differently (QSOs worst). :class:`LocalCalibration` therefore divides each
component by its 90th percentile on clean validation spectra of the same class, and
``score_local`` is the larger of the two ratios (dimensionless: 1 = a clean spectrum's 90th
percentile). The catalogue threshold on it is set at FPR 1% on clean validation spectra.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from desi_assets.science.batching import in_row_blocks
from desi_assets.science.wavelength import arm_bin_slices, binned_wavelength

#: Box widths of the matched filter (bins of 12.8 Å).
WIDTHS_BINS: tuple[int, ...] = (1, 2, 3, 5, 8, 13)
#: Block length (bins) of the per-arm running-median high-pass.
HIGHPASS_BINS = 40
#: Fractional model-error floor ε (of the reconstruction).
MODEL_ERROR_FLOOR = 0.05
#: Rest-frame grid of the model-error profile (Å): start, stop, step.
REST_GRID_A = (400.0, 10_000.0, 4.0)
#: A rest-frame cell needs this many training bins to get a variance (else 0).
MIN_CELL_BINS = 5
#: Bins on each side of an arm boundary compared by the calibration-step component.
STEP_BINS = 10
#: Clean-spectrum quantile each component is divided by (per class).
CALIBRATION_QUANTILE = 0.9
CLASSES = ("GALAXY", "QSO", "STAR")


def inpaint_bins(flux: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Copy of flux (N,M) with bad bins linearly interpolated from the nearest good bins (edges: nearest good)."""
    flux = np.asarray(flux)
    bad = np.asarray(bad, dtype=bool)
    out = np.array(flux, dtype=flux.dtype if flux.dtype.kind == "f" else np.float32, copy=True)
    rows = np.flatnonzero(bad.any(axis=1) & ~bad.all(axis=1))
    if rows.size == 0:
        return out
    b = bad[rows]
    m = b.shape[1]
    idx = np.arange(m, dtype=np.int32)
    left = np.maximum.accumulate(np.where(b, np.int32(-1), idx), axis=1)              # last good at or before
    right = np.minimum.accumulate(np.where(b, np.int32(m), idx)[:, ::-1], axis=1)[:, ::-1]  # first good at/after
    r, c = np.nonzero(b)                                                              # only the bad bins
    li, ri = left[r, c], right[r, c]
    li, ri = np.where(li < 0, ri, li), np.where(ri >= m, li, ri)
    f = out[rows]
    fl, fr = f[r, li], f[r, ri]
    span = (ri - li).astype(np.float64)
    t = np.where(span > 0, (c - li) / np.where(span > 0, span, 1.0), 0.0)
    f[r, c] = fl + t * (fr - fl)
    out[rows] = f
    return out


@dataclass
class ModelError:
    """Per-class excess residual variance of the model on a rest-frame grid (normalised flux²)."""

    variance: dict[str, np.ndarray] = field(default_factory=dict)
    grid: tuple[float, float, float] = REST_GRID_A

    def _cells(self, z: np.ndarray, wave: np.ndarray) -> np.ndarray:
        start, stop, step = self.grid
        ncell = int(round((stop - start) / step))
        rest = wave[None, :] / (1.0 + np.clip(np.nan_to_num(np.asarray(z, np.float64), nan=0.0), 0.0, None))[:, None]
        return np.clip(((rest - start) / step).astype(np.int64), 0, ncell - 1)

    def bin_variance(self, z: np.ndarray, spectype: np.ndarray, wave: np.ndarray | None = None) -> np.ndarray:
        """Model variance (N,496) in normalised flux² at each observed bin; 0 for unknown classes."""
        wave = binned_wavelength() if wave is None else np.asarray(wave, np.float64)
        z = np.asarray(z, np.float64)
        st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))
        out = np.zeros((z.size, wave.size))
        for cls, var in self.variance.items():
            m = st == cls
            if m.any():
                out[m] = np.asarray(var)[self._cells(z[m], wave)]
        return out

    def to_json(self) -> dict:
        """JSON-friendly dict (lists), for the model file's metadata."""
        return {"grid": list(self.grid), "variance": {k: np.round(v, 6).tolist() for k, v in self.variance.items()}}

    @classmethod
    def from_json(cls, d: dict | None) -> "ModelError":
        """Inverse of :meth:`to_json`; None or {} gives an empty profile (no model-error term)."""
        if not d:
            return cls()
        return cls({k: np.asarray(v, np.float64) for k, v in d["variance"].items()}, tuple(d["grid"]))


def fit_model_error(flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray, bad: np.ndarray, z: np.ndarray,
                    spectype: np.ndarray, grid: tuple[float, float, float] = REST_GRID_A) -> ModelError:
    """Mean (flux−recon)² − 1/ivar per class and rest-frame cell over good bins, floored at 0 (normalised flux²)."""
    flux, recon, ivar = (np.asarray(a, np.float64) for a in (flux, recon, ivar))
    good = (ivar > 0) & ~np.asarray(bad, bool) & np.isfinite(flux)
    excess = np.where(good, (flux - recon) ** 2 - 1.0 / np.where(good, ivar, 1.0), 0.0)
    st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))
    me = ModelError(grid=grid)
    ncell = int(round((grid[1] - grid[0]) / grid[2]))
    wave = binned_wavelength()
    for cls in CLASSES:
        m = st == cls
        if not m.any():
            continue
        cells = me._cells(np.asarray(z)[m], wave)
        g = good[m]
        s = np.bincount(cells[g], weights=excess[m][g], minlength=ncell)
        n = np.bincount(cells[g], minlength=ncell)
        me.variance[cls] = np.where(n >= MIN_CELL_BINS, np.maximum(s / np.maximum(n, 1), 0.0), 0.0)
    return me


def _highpass(resid: np.ndarray, block: int) -> np.ndarray:
    """Residual minus its per-arm running median: block medians, linearly interpolated (bad bins hold 0)."""
    out = np.empty_like(resid)
    for sl in arm_bin_slices().values():
        d = resid[:, sl]
        n = d.shape[1]
        nb = max(1, int(round(n / block)))
        edges = np.linspace(0, n, nb + 1).astype(int)
        meds = np.stack([np.partition(d[:, a:b], (b - a) // 2, axis=1)[:, (b - a) // 2]  # upper median
                         for a, b in zip(edges[:-1], edges[1:])], axis=1)
        if nb == 1:
            smooth = np.repeat(meds, n, axis=1)
        else:
            centre = (edges[:-1] + edges[1:] - 1) / 2.0
            idx = np.arange(n)
            j = np.clip(np.searchsorted(centre, idx) - 1, 0, nb - 2)
            t = np.clip((idx - centre[j]) / (centre[j + 1] - centre[j]), 0.0, 1.0).astype(d.dtype)
            smooth = meds[:, j] * (1 - t) + meds[:, j + 1] * t
        out[:, sl] = d - smooth
    return out


@dataclass
class LocalScore:
    """Per spectrum: box significance (σ), feature centre (observed Å), width (bins), arm-step significance (σ)."""

    score: np.ndarray
    wave_a: np.ndarray
    width_bins: np.ndarray
    step_sigma: np.ndarray


#: Rows processed at a time by local_significance (keeps temporaries in cache).
CHUNK_ROWS = 1024


def local_significance(flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray, bad: np.ndarray | None = None,
                       model_var: np.ndarray | float = 0.0, eps: float = MODEL_ERROR_FLOOR,
                       widths: tuple[int, ...] = WIDTHS_BINS, highpass_bins: int = HIGHPASS_BINS) -> LocalScore:
    """Largest |Σχ|/√w over boxes of w in `widths` bins of the high-passed residual (σ); NaN if no good bins."""
    flux, recon, ivar = (np.asarray(a) for a in (flux, recon, ivar))
    if flux.shape != recon.shape or flux.shape != ivar.shape or flux.ndim != 2:
        raise ValueError(f"flux, recon, ivar must share a 2-D shape; got {flux.shape}, {recon.shape}, {ivar.shape}")
    mv = np.asarray(model_var, np.float32)
    bad = None if bad is None else np.asarray(bad)
    return in_row_blocks(flux.shape[0], CHUNK_ROWS, lambda rows: _local_chunk(
        flux[rows], recon[rows], ivar[rows], None if bad is None else bad[rows], mv[rows] if mv.ndim == 2 else mv,
        eps, widths, highpass_bins))


def _local_chunk(flux, recon, ivar, bad, model_var, eps, widths, highpass_bins) -> LocalScore:
    flux, recon, ivar = (np.asarray(a, np.float32) for a in (flux, recon, ivar))
    good = (ivar > 0) & np.isfinite(ivar) & np.isfinite(flux) & np.isfinite(recon)
    if bad is not None:
        good &= ~np.asarray(bad, bool)
    resid = np.where(good, flux - recon, np.float32(0))
    if highpass_bins:
        resid = np.where(good, _highpass(resid, highpass_bins), np.float32(0))
    var = 1.0 / np.where(good, ivar, np.float32(1)) + (np.float32(eps) * recon) ** 2 + model_var
    chi = np.where(good, resid / np.sqrt(var), np.float32(0)).astype(np.float32)
    n, m = chi.shape
    cs = np.zeros((n, m + 1), np.float32)
    np.cumsum(chi, axis=1, out=cs[:, 1:])
    best = np.full(n, -np.inf, np.float32)
    where = np.zeros(n, np.int64)
    width = np.zeros(n, np.int64)
    rows = np.arange(n)
    for w in widths:  # bad bins add 0 to a box but count in its √w: conservative where they fall inside
        s = np.abs(cs[:, w:] - cs[:, :-w])
        s *= np.float32(1.0 / np.sqrt(w))
        j = np.argmax(s, axis=1)
        v = s[rows, j]
        better = v > best
        best = np.where(better, v, best)
        where = np.where(better, j, where)
        width = np.where(better, w, width)
    wave = binned_wavelength()
    centre = (wave[where] + wave[where + width - 1]) / 2.0
    none = ~good.any(axis=1)
    step = arm_step_significance(flux, recon, np.where(good, ivar, np.float32(0)), eps=eps)
    return LocalScore(np.where(none, np.nan, best.astype(np.float64)), np.where(none, np.nan, centre),
                      np.where(none, 0, width), step)


def arm_step_significance(flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray, eps: float = MODEL_ERROR_FLOOR,
                          n_bins: int = STEP_BINS) -> np.ndarray:
    """Largest |Δ fractional residual| across the b/r and r/z boundaries over its error (σ); 0 where unmeasurable.

    On each side the fractional residual is the weighted fit a = Σw·r·(f−r) / Σw·r² over the
    ``n_bins`` bins next to the boundary (w = 1/(1/ivar + (ε·r)²)), with error 1/√(Σw·r²).
    """

    def side(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        f, r, iv = (np.asarray(a[:, lo:hi], np.float64) for a in (flux, recon, ivar))
        good = (iv > 0) & np.isfinite(f) & np.isfinite(r)
        w = np.where(good, 1.0 / (1.0 / np.where(good, iv, 1.0) + (eps * r) ** 2), 0.0)
        den = np.sum(w * r * r, axis=1)
        a = np.sum(w * r * np.where(good, f - r, 0.0), axis=1) / np.where(den > 0, den, 1.0)
        return a, np.where(den > 0, 1.0 / np.sqrt(np.where(den > 0, den, 1.0)), np.inf)

    out = np.zeros(np.shape(flux)[0])
    for edge in (sl.start for sl in list(arm_bin_slices().values())[1:]):
        (a1, e1), (a2, e2) = side(edge - n_bins, edge), side(edge, edge + n_bins)
        err = np.hypot(e1, e2)
        out = np.maximum(out, np.where(np.isfinite(err), np.abs(a1 - a2) / np.where(np.isfinite(err), err, 1.0), 0.0))
    return out


@dataclass
class LocalCalibration:
    """Per-class clean 90th percentiles of the box and arm-step components (σ); 'ALL' is the pooled fallback."""

    box: dict[str, float] = field(default_factory=dict)
    step: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, local: LocalScore, spectype: np.ndarray, q: float = CALIBRATION_QUANTILE) -> "LocalCalibration":
        """Quantile q of each component on clean spectra, per class with ≥ 10 spectra and pooled."""
        st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))
        cal = cls()
        for name, vals in (("box", local.score), ("step", local.step_sigma)):
            v = np.asarray(vals, np.float64)
            ok = np.isfinite(v)
            table = {"ALL": float(np.quantile(v[ok], q)) if ok.any() else 1.0}
            for c in CLASSES:
                m = ok & (st == c)
                if m.sum() >= 10:
                    table[c] = float(np.quantile(v[m], q))
            getattr(cal, name).update({k: max(x, 1e-6) for k, x in table.items()})
        return cal

    def score(self, local: LocalScore, spectype: np.ndarray) -> np.ndarray:
        """score_local = max(box σ / box scale, step σ / step scale) of each spectrum's class (dimensionless)."""
        st = np.char.upper(np.char.strip(np.asarray(spectype).astype(str)))

        def scale(table: dict[str, float]) -> np.ndarray:
            return np.array([table.get(x, table.get("ALL", 1.0)) for x in st], np.float64)

        box = np.asarray(local.score, np.float64)
        if not self.box:
            return box
        return np.where(np.isnan(box), np.nan, np.fmax(box / scale(self.box),
                                                          np.asarray(local.step_sigma) / scale(self.step)))

    def to_json(self) -> dict:
        """JSON-friendly dict."""
        return {"box": self.box, "step": self.step}

    @classmethod
    def from_json(cls, d: dict | None) -> "LocalCalibration":
        """Inverse of :meth:`to_json`; None gives an empty calibration (score_local = box σ)."""
        return cls(dict(d["box"]), dict(d["step"])) if d else cls()
