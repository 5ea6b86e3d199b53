"""Rows of the `spectral_indices` and `kinematics_and_lines` tables from one batch of `spectra` + `targets` rows.

Frames in, frames out (numpy inside, no Dagster). Selection per target, in order: not GALAXY →
`not_galaxy`; ZWARN ≠ 0 → `zwarn`; z missing or outside [z_min, z_max] → `out_of_range`; no good
pixel → `no_data`. Fits additionally need continuum S/N per Å ≥ snr_min (`low_sn`), and at most
`max_fits` per batch are attempted, highest S/N first (the rest: `not_selected`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from desi_assets.science.physics import indices as ix
from desi_assets.science.physics.fit import LINE_NAMES, LINES, FitPool, FitResult
from desi_assets.science.physics.spectra import C_KMS, combine_arms, continuum_snr_per_a, lsf_on_grid
from desi_assets.science.wavelength import ARMS, combined_wavelength
from desi_assets.storage.arrays import to_numpy_2d

KEYS = ["coadd_key", "survey", "program", "healpix", "hpxgroup", "targetid"]
TARGET_COLUMNS = ["coadd_key", "targetid", "z", "zwarn", "spectype", "usable"]
SPECTRA_COLUMNS = KEYS + [f"{w}_{a}" for a in ARMS for w in ("flux", "ivar", "mask")] + ["lsf_sigma"]
#: Lines subtracted for the emission-corrected Dn4000 and HδA (those inside or next to their bands).
CORRECTION_LINES = ("neiii_3869", "hdelta")


@dataclass
class Batch:
    """Merged brz arrays of a batch: keys frame, wave (Å), flux, ivar, LSF σ (Å), z, spectype, zwarn, usable."""

    keys: pl.DataFrame
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    lsf: np.ndarray
    z: np.ndarray
    spectype: np.ndarray
    zwarn: np.ndarray
    usable: np.ndarray


def make_batch(spectra: pl.DataFrame, targets: pl.DataFrame) -> Batch:
    """Join spectra to targets (z, zwarn, spectype, usable) and merge the arms onto the brz grid."""
    t = targets.select([c for c in TARGET_COLUMNS if c in targets.columns])
    df = spectra.join(t, on=["coadd_key", "targetid"], how="left")
    arr = {f"{w}_{a}": to_numpy_2d(df[f"{w}_{a}"], np.int32 if w == "mask" else np.float32)
           for a in ARMS for w in ("flux", "ivar", "mask")} if df.height else {}
    wave = combined_wavelength()
    if df.height:
        flux, ivar = combine_arms({a: arr[f"flux_{a}"] for a in ARMS}, {a: arr[f"ivar_{a}"] for a in ARMS},
                                  {a: arr[f"mask_{a}"] for a in ARMS})
        lsf = lsf_on_grid(to_numpy_2d(df["lsf_sigma"]))
    else:
        flux = ivar = lsf = np.zeros((0, wave.size))
    z = df["z"].cast(pl.Float64).fill_null(np.nan).to_numpy() if "z" in df.columns else np.full(df.height, np.nan)
    zwarn = df["zwarn"].fill_null(-1).to_numpy() if "zwarn" in df.columns else np.full(df.height, -1)
    spectype = df["spectype"].fill_null("").to_numpy().astype(str) if "spectype" in df.columns else \
        np.full(df.height, "")
    usable = df["usable"].fill_null(True).to_numpy() if "usable" in df.columns else np.ones(df.height, bool)
    return Batch(df.select(KEYS), wave, flux, ivar, lsf, z, spectype, zwarn, usable)


def row_status(b: Batch, z_range: tuple[float, float]) -> np.ndarray:
    """Per row: '' (eligible) or the reason it is skipped (not_galaxy, zwarn, out_of_range, no_data)."""
    st = np.full(len(b.z), "", dtype=object)
    ok_z = np.isfinite(b.z) & (b.z >= z_range[0]) & (b.z <= z_range[1])
    no_data = ~(b.ivar > 0).any(axis=1) if b.ivar.size else np.ones(len(b.z), bool)
    for cond, reason in ((no_data | ~b.usable, "no_data"), (~ok_z, "out_of_range"), (b.zwarn != 0, "zwarn"),
                         (np.char.strip(b.spectype.astype(str)) != "GALAXY", "not_galaxy")):
        st[cond] = reason  # later conditions win: the most basic reason is reported
    return st


def index_frame(b: Batch, z_range: tuple[float, float], fits: pl.DataFrame | None = None,
                min_good_frac: float = 0.9) -> pl.DataFrame:
    """`spectral_indices` rows: every index with its error and reason, for eligible rows; others null + status."""
    st = row_status(b, z_range)
    elig = st == ""
    res = ix.measure_indices(b.wave, b.flux, b.ivar, np.where(elig, b.z, np.nan), min_good_frac=min_good_frac)
    cols: dict[str, object] = {"z": b.z, "status": np.where(elig, "ok", st).astype(str)}
    flags = res.flags()
    for name in ix.INDEX_NAMES:
        cols[name] = np.where(elig, res.value[name], np.nan)
        cols[f"{name}_err"] = np.where(elig, res.error[name], np.nan)
    cols["index_flags"] = [f if e else "" for f, e in zip(flags, elig)]
    cols["n_indices_ok"] = np.where(elig, np.stack([res.reason[k] == 0 for k in ix.INDEX_NAMES]).sum(0), 0)
    corr = corrected_indices(b, fits, elig, min_good_frac)
    cols.update(corr)
    out = pl.concat([b.keys, pl.DataFrame({k: v for k, v in cols.items()})], how="horizontal")
    return _nan_to_null(out)


def corrected_indices(b: Batch, fits: pl.DataFrame | None, elig: np.ndarray, min_good_frac: float
                      ) -> dict[str, np.ndarray]:
    """Dn4000 and HδA after subtracting the pPXF gas lines (observed-frame Gaussians); NaN where no ok fit."""
    n = len(b.z)
    out = {k: np.full(n, np.nan) for k in ("dn4000_corr", "dn4000_corr_err", "hdelta_a_corr", "hdelta_a_corr_err")}
    if fits is None or fits.height == 0 or n == 0:
        return out
    f = b.keys.select("coadd_key", "targetid").join(fits, on=["coadd_key", "targetid"], how="left")
    ok = (f["status"] == "ok").fill_null(False).to_numpy() & elig
    if not ok.any():
        return out
    zz = b.z[ok]
    gv = f["gas_vel"].fill_null(np.nan).to_numpy()[ok]
    gs = f["gas_sigma"].fill_null(np.nan).to_numpy()[ok]
    rest = np.array([LINES[k][2] for k in CORRECTION_LINES])
    centers = rest[None, :] * (1 + zz[:, None]) * np.exp(gv[:, None] / C_KMS)
    lsf = np.take_along_axis(b.lsf[ok], np.clip(np.searchsorted(b.wave, centers), 0, b.wave.size - 1), 1)
    sig = np.sqrt((gs[:, None] / C_KMS * centers) ** 2 + lsf**2)
    fl = np.stack([f[f"flux_{k}"].fill_null(0.0).fill_nan(0.0).to_numpy()[ok] for k in CORRECTION_LINES], 1)
    model = ix.gaussian_lines(b.wave, centers, sig, fl)
    res = ix.measure_indices(b.wave, b.flux[ok] - model, b.ivar[ok], zz, min_good_frac=min_good_frac)
    for name in ("dn4000", "hdelta_a"):
        out[f"{name}_corr"][ok] = res.value[name]
        out[f"{name}_corr_err"][ok] = res.error[name]
    return out


def select_fits(b: Batch, z_range: tuple[float, float], snr_min: float, max_fits: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status per row before fitting ('' = to fit), continuum S/N per Å, and the rows to fit (highest S/N first)."""
    st = row_status(b, z_range)
    snr = continuum_snr_per_a(b.wave, b.flux, b.ivar, np.where(np.isfinite(b.z), b.z, 0.0))
    st[(st == "") & ~(snr >= snr_min)] = "low_sn"
    cand = np.flatnonzero(st == "")
    cand = cand[np.argsort(-snr[cand], kind="stable")]
    if max_fits is not None and max_fits >= 0 and cand.size > max_fits:
        st[cand[max_fits:]] = "not_selected"
        cand = cand[:max_fits]
    return st, snr, cand


def fit_frame(b: Batch, pool: FitPool, z_range: tuple[float, float], max_fits: int | None,
              n_models: int = 0) -> tuple[pl.DataFrame, list[tuple[int, FitResult]]]:
    """`kinematics_and_lines` rows (one per target, fitted or with the reason it was not) and (row, result) fitted."""
    settings = pool.settings
    st, snr, todo = select_fits(b, z_range, settings.snr_min, max_fits)
    keep = np.zeros(todo.size, bool)
    keep[:n_models] = True
    fitted = pool.fit(b.flux[todo], b.ivar[todo], b.lsf[todo], b.z[todo], keep)
    results: list[FitResult] = [FitResult(status=s or "ok", snr_per_a=float(q)) for s, q in zip(st, snr)]
    for i, r in zip(todo, fitted):
        results[i] = r
    rows = pl.DataFrame([r.row() for r in results], schema=_fit_schema(), orient="row") if results else \
        pl.DataFrame(schema=_fit_schema())
    rows = rows.with_columns(z=pl.Series(b.z, dtype=pl.Float64), templates=pl.lit(settings.templates),
                             vdisp_floor=pl.lit(settings.vdisp_floor_kms))
    return _nan_to_null(pl.concat([b.keys, rows], how="horizontal")), list(zip(todo.tolist(), fitted))


def _fit_schema() -> dict[str, pl.DataType]:
    sch: dict[str, pl.DataType] = {"status": pl.String}
    for k in ("vel", "vel_err", "vdisp", "vdisp_err"):
        sch[k] = pl.Float64
    sch["vdisp_below_floor"] = pl.Boolean
    for k in ("gas_vel", "gas_vel_err", "gas_sigma", "gas_sigma_err", "chi2_dof"):
        sch[k] = pl.Float64
    sch["npix"] = pl.Int64
    sch["snr_per_a"] = pl.Float64
    sch["fit_seconds"] = pl.Float64
    for name in LINE_NAMES:
        for c in (f"flux_{name}", f"flux_{name}_err", f"ew_{name}", f"ew_{name}_err"):
            sch[c] = pl.Float64
    return sch


def _nan_to_null(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns([pl.col(c).fill_nan(None) for c, t in df.schema.items() if t in (pl.Float64, pl.Float32)])


def failure_counts(fits: pl.DataFrame) -> dict[str, int]:
    """Rows per status (failed fits grouped under their exception type)."""
    s = fits["status"].str.replace(r"^(failed: [A-Za-z_]+).*$", "$1")
    return dict(sorted(s.value_counts().iter_rows()))


@dataclass
class PartitionRows:
    """Both tables' rows for one batch, the models kept for plots (with labels) and the seconds each step took."""

    fits: pl.DataFrame | None
    indices: pl.DataFrame | None
    models: list[dict]
    labels: list[str]
    fit_seconds: float
    index_seconds: float


def physics_rows(spectra: pl.DataFrame, targets: pl.DataFrame, pool: FitPool | None, z_range: tuple[float, float],
                 max_fits: int | None, min_good_frac: float = 0.9, n_models: int = 0,
                 previous_fits: pl.DataFrame | None = None) -> PartitionRows:
    """Fit (when a pool is given) and measure indices for one batch; corrections use these or previous fits."""
    import time

    b = make_batch(spectra, targets)
    t0 = time.perf_counter()
    fits, fitted = fit_frame(b, pool, z_range, max_fits, n_models) if pool is not None else (None, [])
    t1 = time.perf_counter()
    idx = index_frame(b, z_range, fits if fits is not None else previous_fits, min_good_frac)
    t2 = time.perf_counter()
    models, labels = [], []
    if fits is not None:
        for row, r in fitted:
            if r.model is None:
                continue
            models.append(r.model)
            labels.append(f"TARGETID {b.keys['targetid'][row]}  z={b.z[row]:.3f}  σ*={r.vdisp:.0f}±{r.vdisp_err:.0f} "
                          f"σgas={r.gas_sigma:.0f} km/s  S/N={r.snr_per_a:.1f}/Å")
    return PartitionRows(fits, idx, models, labels, t1 - t0, t2 - t1)
