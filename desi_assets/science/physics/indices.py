"""Vectorised spectral indices with ivar-propagated errors over a batch of spectra at different redshifts.

Convention (as `science.indices`): band limits are the nominal **air** definitions converted to
**vacuum** (Ciddor 1996), because DESI wavelengths are vacuum; `dn4000_fsf` instead applies the
nominal limits directly to vacuum wavelengths, as fastspecfit does. Spectra stay on their observed
grid; each band is moved to the observed frame with (1+z), so no resampling touches the native pixels.
Band means are fractional-pixel-weighted means over good pixels (MaNGA-DAP / Worthey style):
⟨f⟩ = Σ w g f / Σ w g; EWs are rest-frame Å, I = Δλ_rest·(1 − ⟨f/C⟩) with C the straight line through
the sideband means at their midpoints; Mg2 is −2.5 log10⟨f/C⟩ (mag); D4000/Dn4000 are ⟨F_ν⟩red/⟨F_ν⟩blue.
Errors are first-order propagation of 1/ivar (pixels independent; the small Fe4383 blue/central
overlap is ignored). An index is NaN with a reason code when a band leaves the spectrum
(NO_COVERAGE), fewer than `min_good_frac` of a band's width has good pixels (MASKED), or the
continuum is not positive (BAD_CONTINUUM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desi_assets.science.indices import air_to_vac

#: Reason codes per index (0 = measured).
OK, NO_COVERAGE, MASKED, BAD_CONTINUUM, NOT_MEASURED = 0, 1, 2, 3, 4
REASONS = ("ok", "no_coverage", "masked", "bad_continuum", "not_measured")


@dataclass(frozen=True)
class Index:
    """One index: kind ('break', 'ew' in Å or 'mag'), air band limits (Å) and whether they are converted to vacuum."""

    name: str
    kind: str
    blue: tuple[float, float]
    red: tuple[float, float]
    central: tuple[float, float] | None = None
    to_vacuum: bool = True

    def bands(self) -> dict[str, tuple[float, float]]:
        """Band limits used on vacuum spectra (Å)."""
        out = {"blue": self.blue, "red": self.red} | ({"central": self.central} if self.central else {})
        if not self.to_vacuum:
            return out
        return {k: tuple(float(x) for x in air_to_vac(np.array(v))) for k, v in out.items()}


#: DESI-REFERENCE §3 (Balogh+99, Bruzual 83, Worthey & Ottaviani 97, Trager+98).
INDICES: tuple[Index, ...] = (
    Index("dn4000", "break", (3850.0, 3950.0), (4000.0, 4100.0)),
    Index("dn4000_fsf", "break", (3850.0, 3950.0), (4000.0, 4100.0), to_vacuum=False),
    Index("d4000", "break", (3750.0, 3950.0), (4050.0, 4250.0)),
    Index("hdelta_a", "ew", (4041.600, 4079.750), (4128.500, 4161.000), (4083.500, 4122.250)),
    Index("hgamma_a", "ew", (4283.500, 4319.750), (4367.250, 4419.750), (4319.750, 4363.500)),
    Index("fe4383", "ew", (4359.125, 4370.375), (4442.875, 4455.375), (4369.125, 4420.375)),
    Index("hbeta", "ew", (4827.875, 4847.875), (4876.625, 4891.625), (4847.875, 4876.625)),
    Index("mg2", "mag", (4895.125, 4957.625), (5301.125, 5366.125), (5154.125, 5196.625)),
    Index("mgb", "ew", (5142.625, 5161.375), (5191.375, 5206.375), (5160.125, 5192.625)),
    Index("fe5270", "ew", (5233.150, 5248.150), (5285.650, 5318.150), (5245.650, 5285.650)),
    Index("fe5335", "ew", (5304.625, 5315.875), (5353.375, 5363.375), (5312.125, 5352.125)),
)
INDEX_NAMES: tuple[str, ...] = tuple(i.name for i in INDICES) + ("mgfe_prime",)


@dataclass
class IndexResult:
    """Per index: value, 1σ error and reason code arrays (n,); units as in the module docstring."""

    value: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    reason: dict[str, np.ndarray]

    def flags(self) -> list[str]:
        """Per spectrum: 'ok' or 'name:reason;…' for every index that is null."""
        names = list(self.reason)
        codes = np.stack([self.reason[k] for k in names], axis=1)
        out = []
        for row in codes:
            bad = [f"{names[j]}:{REASONS[c]}" for j, c in enumerate(row) if c]
            out.append(";".join(bad) if bad else "ok")
        return out


def pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Pixel edges (Å) from monotonic pixel centres (midpoints, extrapolated at the ends)."""
    wave = np.asarray(wave, dtype=np.float64)
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2 * wave[0] - mid[0]], mid, [2 * wave[-1] - mid[-1]]])


def band_means(edges: np.ndarray, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, good: np.ndarray | None,
               lo: np.ndarray, hi: np.ndarray, power: int = 0):
    """Good-pixel mean of λ^power·flux over per-row bands [lo, hi] (observed Å).

    Returns mean, variance, good fraction of the band width, band-inside-spectrum, and the gathered
    (weights w·g, pixel index, λ^power·flux, variance, Σ w·g) for continuum-relative sums.
    Only the pixels of each band are touched (a gather), so the cost does not grow with npix.
    """
    n = flux.shape[0]
    lo, hi = np.broadcast_to(lo, (n,)).astype(np.float64), np.broadcast_to(hi, (n,)).astype(np.float64)
    inside = (lo >= edges[0]) & (hi <= edges[-1])
    i0 = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, edges.size - 2)
    i1 = np.clip(np.searchsorted(edges, hi, side="left"), 1, edges.size - 1)
    k = max(int((i1 - i0).max()) if n else 1, 1)
    raw = i0[:, None] + np.arange(k)[None, :]
    idx = np.minimum(raw, edges.size - 2)
    w = np.clip(np.minimum(edges[idx + 1], hi[:, None]) - np.maximum(edges[idx], lo[:, None]), 0.0, None)
    w[idx != raw] = 0.0  # clipped past the last pixel
    f = np.take_along_axis(flux, idx, axis=1).astype(np.float64)
    iv = np.take_along_axis(ivar, idx, axis=1).astype(np.float64)
    ok = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
    if good is not None:
        ok &= np.take_along_axis(good, idx, axis=1)
    wg = np.where(ok, w, 0.0)
    scale = wave[idx] ** power if power else 1.0
    f = np.where(ok, f, 0.0) * scale
    v = np.where(ok, 1.0 / np.where(ok, iv, 1.0), 0.0) * scale**2
    s = wg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (wg * f).sum(1) / s
        variance = (wg**2 * v).sum(1) / s**2
        frac = s / np.maximum(hi - lo, 1e-30)
    return mean, variance, frac, inside, (wg, idx, f, v, s)


def measure_indices(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray,
                    good: np.ndarray | None = None, min_good_frac: float = 0.9, chunk: int = 512) -> IndexResult:
    """All indices (see INDICES, + [MgFe]′) of (n, npix) F_λ spectra on observed vacuum `wave` (Å) at redshifts z.

    Rows are processed in z-sorted chunks so that each chunk's band windows are only as wide as its own z needs.
    """
    flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
    n = flux.shape[0]
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), (n,))
    if n <= chunk:
        return _measure(wave, flux, ivar, z, good, min_good_frac)
    order = np.argsort(np.where(np.isfinite(z), z, -1.0), kind="stable")
    parts = [_measure(wave, flux[i], ivar[i], z[i], None if good is None else np.atleast_2d(good)[i], min_good_frac)
             for i in np.array_split(order, -(-n // chunk))]
    out = IndexResult({}, {}, {})
    for name in parts[0].value:
        for dst, attr in ((out.value, "value"), (out.error, "error"), (out.reason, "reason")):
            merged = np.empty(n, dtype=getattr(parts[0], attr)[name].dtype)
            merged[order] = np.concatenate([getattr(p, attr)[name] for p in parts])
            dst[name] = merged
    return out


def _measure(wave, flux, ivar, z, good, min_good_frac) -> IndexResult:
    wave = np.asarray(wave, dtype=np.float64)
    good = None if good is None else np.atleast_2d(np.asarray(good, dtype=bool))
    n = flux.shape[0]
    edges = pixel_edges(wave)
    zf = 1.0 + np.where(np.isfinite(z), z, -2.0)  # non-finite z → negative scale → out of range
    value, error, reason = {}, {}, {}
    for ix in INDICES:
        b = ix.bands()
        code = np.zeros(n, dtype=np.int8)
        p = 2 if ix.kind == "break" else 0  # F_ν ∝ λ² F_λ
        mb, vb, fb, ib, _ = band_means(edges, wave, flux, ivar, good, b["blue"][0] * zf, b["blue"][1] * zf, p)
        mr, vr, fr, ir, _ = band_means(edges, wave, flux, ivar, good, b["red"][0] * zf, b["red"][1] * zf, p)
        inside, frac = ib & ir, np.minimum(fb, fr)
        if ix.kind == "break":
            with np.errstate(invalid="ignore", divide="ignore"):
                val = mr / mb
                err = np.abs(val) * np.sqrt(vr / mr**2 + vb / mb**2)
            cont_bad = ~((mb > 0) & (mr > 0))
        else:
            lo_c, hi_c = b["central"][0] * zf, b["central"][1] * zf
            _, _, fc, ic, (wg, idx, fpix, vpix, s) = band_means(edges, wave, flux, ivar, good, lo_c, hi_c)
            inside &= ic
            frac = np.minimum(frac, fc)
            xb = 0.5 * (b["blue"][0] + b["blue"][1]) * zf
            xr = 0.5 * (b["red"][0] + b["red"][1]) * zf
            t = (wave[idx] - xb[:, None]) / (xr - xb)[:, None]
            cont = mb[:, None] * (1 - t) + mr[:, None] * t
            with np.errstate(invalid="ignore", divide="ignore"):
                a = wg / s[:, None]
                q = np.where(wg > 0, fpix / cont, 0.0)
                ratio = (a * q).sum(1)  # ⟨f/C⟩ over the central band
                d_b = -(a * q / cont * (1 - t)).sum(1)
                d_r = -(a * q / cont * t).sum(1)
                var_ratio = (a**2 * np.where(wg > 0, vpix / cont**2, 0.0)).sum(1) + d_b**2 * vb + d_r**2 * vr
            cont_bad = ~((cont > 0) | (wg == 0)).all(1) | ~((mb > 0) & (mr > 0))
            if ix.kind == "ew":
                width = b["central"][1] - b["central"][0]  # rest-frame Å
                val = width * (1 - ratio)
                err = width * np.sqrt(var_ratio)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    val = -2.5 * np.log10(ratio)
                    err = 2.5 / np.log(10) * np.sqrt(var_ratio) / np.abs(ratio)
                cont_bad |= ~(ratio > 0)
        code[~inside] = NO_COVERAGE
        code[inside & ~(frac >= min_good_frac)] = MASKED
        code[(code == 0) & (cont_bad | ~np.isfinite(val))] = BAD_CONTINUUM
        value[ix.name] = np.where(code == 0, val, np.nan)
        error[ix.name] = np.where(code == 0, err, np.nan)
        reason[ix.name] = code
    value["mgfe_prime"], error["mgfe_prime"], reason["mgfe_prime"] = mgfe_prime(value, error, reason)
    return IndexResult(value, error, reason)


def mgfe_prime(value: dict, error: dict, reason: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[MgFe]′ = √(Mgb·(0.72·Fe5270 + 0.28·Fe5335)) (Å; Thomas, Maraston & Bender 2003) with its error and reason."""
    mgb, f1, f2 = value["mgb"], value["fe5270"], value["fe5335"]
    fe = 0.72 * f1 + 0.28 * f2
    prod = mgb * fe
    code = np.maximum(np.maximum(reason["mgb"], reason["fe5270"]), reason["fe5335"]).astype(np.int8)
    code[(code == 0) & ~(prod > 0)] = BAD_CONTINUUM
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.sqrt(prod)
        var_fe = 0.72**2 * error["fe5270"] ** 2 + 0.28**2 * error["fe5335"] ** 2
        err = 0.5 / val * np.sqrt(fe**2 * error["mgb"] ** 2 + mgb**2 * var_fe)
    return np.where(code == 0, val, np.nan), np.where(code == 0, err, np.nan), code


def gaussian_lines(wave: np.ndarray, centers: np.ndarray, sigmas: np.ndarray, fluxes: np.ndarray) -> np.ndarray:
    """Sum of pixel-integrated Gaussians (n, npix) in flux/Å: centers, sigmas (Å) and fluxes (flux·Å), each (n, L)."""
    from scipy.special import erf

    edges = pixel_edges(wave)
    width = np.diff(edges)
    out = np.zeros((centers.shape[0], wave.size))
    for j in range(centers.shape[1]):  # a handful of lines; each is vectorised over spectra and pixels
        c, s, f = centers[:, j:j + 1], sigmas[:, j:j + 1], fluxes[:, j:j + 1]
        use = np.isfinite(c) & np.isfinite(s) & np.isfinite(f) & (s > 0)
        c, s, f = np.where(use, c, 0.0), np.where(use, s, 1.0), np.where(use, f, 0.0)
        hi = erf((edges[None, 1:] - c) / (np.sqrt(2) * s))
        lo = erf((edges[None, :-1] - c) / (np.sqrt(2) * s))
        out += 0.5 * (hi - lo) * f / width[None, :]
    return out
