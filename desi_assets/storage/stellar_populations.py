"""Reads and rows of the stellar-population layer: fit inputs from the lakehouse, table rows from fit results,
and the fast model's files (saved once per settings key, published like the anomaly model)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from desi_assets.science.stellar_populations.fast import spectrum_snr
from desi_assets.storage import models
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import (
    KEY_COLUMNS,
    STELLAR_POP_PARAMS,
    STELLAR_POP_PERCENTILES,
    STELLAR_POPULATION_SAMPLES,
    STELLAR_POPULATIONS,
)

MODEL_NAME = "stellar_population_model"
IDS = ["coadd_key", "targetid"]
#: Photometric bands in photometry.BAND_NAMES order: (flux column, ivar column) of `targets`.
PHOT_COLUMNS = [("flux_g", "flux_ivar_g"), ("flux_r", "flux_ivar_r"), ("flux_z", "flux_ivar_z"),
                ("flux_w1", "flux_ivar_w1"), ("flux_w2", "flux_ivar_w2")]
TARGET_COLUMNS = [*KEY_COLUMNS, "z", "zwarn", "spectype", "usable",
                  *[c for pair in PHOT_COLUMNS for c in pair]]
#: spectral_indices columns the tension flag reads (emission-corrected first, raw where there is no fit).
INDEX_COLUMNS = ["dn4000", "hdelta_a", "dn4000_corr", "hdelta_a_corr",
                 "dn4000_err", "hdelta_a_err", "dn4000_corr_err", "hdelta_a_corr_err"]
#: Percentile result keys of fit_fast / Bagpipes: f"{param}_{suffix}".
RESULT_KEYS = [f"{p}_{q}" for p in STELLAR_POP_PARAMS for q in STELLAR_POP_PERCENTILES]


@dataclass
class FitInputs:
    """One batch: every target row (keys, z, snr, skip reason) and the arrays of the eligible ones."""

    rows: pl.DataFrame  # KEY_COLUMNS + z, skip ('' = eligible), dn4000_used, hdelta_a_used, snr
    eligible: np.ndarray  # bool per row
    flux: np.ndarray  # (n_eligible, 496) 1e-17 erg/s/cm²/Å on wavelength.binned_wavelength()
    ivar: np.ndarray  # (n_eligible, 496) 1e34 (erg/s/cm²/Å)⁻²
    z: np.ndarray  # (n_eligible,)
    phot: np.ndarray  # (n_eligible, 5) nanomaggies, NaN where missing
    phot_ivar: np.ndarray  # (n_eligible, 5) nanomaggy⁻², 0 where missing


def _present(lakehouse: LakehouseResource, table: str, wanted: Sequence[str]) -> list[str]:
    have = set(lakehouse.columns(table))
    return [c for c in wanted if c in have]


def fit_inputs(lakehouse: LakehouseResource, keys: Sequence[str]) -> FitInputs:
    """Targets of `keys` joined to their preprocessed spectrum and indices; skip reasons like kinematics_and_lines.

    Skip reasons (the most basic wins): not_galaxy, zwarn (ZWARN ≠ 0), no_data (no preprocessed spectrum, not
    usable, or norm ≤ 0). Absent photometry columns read as missing (NaN flux, 0 ivar).
    """
    t = lakehouse.read("targets", keys=keys, columns=_present(lakehouse, "targets", TARGET_COLUMNS))
    pre = lakehouse.read("preprocessed_spectra", keys=keys, columns=[*IDS, "flux", "ivar", "norm"]) \
        if lakehouse.exists("preprocessed_spectra") else pl.DataFrame(schema={"coadd_key": pl.String,
                                                                               "targetid": pl.Int64})
    df = t.join(pre, on=IDS, how="left")
    if lakehouse.exists("spectral_indices"):
        idx = lakehouse.read("spectral_indices", keys=keys, columns=[*IDS, *INDEX_COLUMNS])
        df = df.join(idx.unique(IDS, keep="last"), on=IDS, how="left")
    for c in [*INDEX_COLUMNS, "norm", *[c for pair in PHOT_COLUMNS for c in pair]]:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, pl.Float64).alias(c))
    has_flux = pl.col("flux").is_not_null() if "flux" in df.columns else pl.lit(False)
    skip = (pl.when(pl.col("spectype").fill_null("").str.strip_chars() != "GALAXY").then(pl.lit("not_galaxy"))
            .when(pl.col("zwarn").fill_null(-1) != 0).then(pl.lit("zwarn"))
            .when(~has_flux | ~pl.col("usable").fill_null(True) | ~(pl.col("norm").fill_null(0.0) > 0))
            .then(pl.lit("no_data")).otherwise(pl.lit("")))
    df = df.with_columns(
        skip.alias("skip"),
        pl.coalesce("dn4000_corr", "dn4000").cast(pl.Float64).alias("dn4000_used"),
        pl.coalesce("hdelta_a_corr", "hdelta_a").cast(pl.Float64).alias("hdelta_a_used"),
        pl.when(pl.col("dn4000_corr").is_not_null()).then(pl.col("dn4000_corr_err")).otherwise(pl.col("dn4000_err"))
        .cast(pl.Float64).alias("dn4000_used_err"),
        pl.when(pl.col("hdelta_a_corr").is_not_null()).then(pl.col("hdelta_a_corr_err"))
        .otherwise(pl.col("hdelta_a_err")).cast(pl.Float64).alias("hdelta_a_used_err"))
    eligible = (df["skip"] == "").to_numpy()
    e = df.filter(pl.Series(eligible))
    norm = e["norm"].cast(pl.Float64).to_numpy()[:, None] if e.height else np.zeros((0, 1))
    flux = to_numpy_2d(e["flux"], np.float64) * norm if e.height else np.zeros((0, 496))
    ivar = to_numpy_2d(e["ivar"], np.float64) / norm ** 2 if e.height else np.zeros((0, 496))
    phot, phot_ivar = photometry_arrays(e)
    snr = _full(spectrum_snr(flux, ivar) if e.height else [], eligible, np.nan, np.float64)
    rows = df.select(*KEY_COLUMNS, pl.col("z").cast(pl.Float64), "skip", "dn4000_used", "hdelta_a_used",
                     "dn4000_used_err", "hdelta_a_used_err").with_columns(
        pl.Series("snr", snr, nan_to_null=True))
    return FitInputs(rows, eligible, flux, ivar, e["z"].cast(pl.Float64).to_numpy(), phot, phot_ivar)


def photometry_arrays(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n, 5) fluxes (nanomaggies, NaN where missing) and ivars (0 where missing or the flux is not finite)."""
    cols = {c: (df[c].cast(pl.Float64).to_numpy() if c in df.columns else np.full(df.height, np.nan))
            for pair in PHOT_COLUMNS for c in pair}
    phot = np.column_stack([cols[f] for f, _ in PHOT_COLUMNS]) if df.height else np.zeros((0, len(PHOT_COLUMNS)))
    ivar = np.column_stack([cols[i] for _, i in PHOT_COLUMNS]) if df.height else np.zeros((0, len(PHOT_COLUMNS)))
    ivar = np.where(np.isfinite(phot) & np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
    return np.where(np.isfinite(phot), phot, np.nan), ivar


def galaxy_inputs(lakehouse: LakehouseResource, chosen: pl.DataFrame) -> list:
    """Bagpipes inputs of the chosen rows (coadd_key, targetid, z): native brz spectrum (Å, 1e-17 units) and
    FIBERMAP photometry, in the order of `chosen`."""
    from desi_assets.science.physics.catalog import SPECTRA_COLUMNS, make_batch
    from desi_assets.science.stellar_populations.bagpipes_fit import GalaxyInput

    keys = chosen["coadd_key"].unique().to_list()
    ids = chosen.select(IDS)
    spectra = lakehouse.read("spectra", keys=keys, columns=SPECTRA_COLUMNS).join(ids, on=IDS, how="semi")
    targets = lakehouse.read("targets", keys=keys, columns=_present(lakehouse, "targets", TARGET_COLUMNS)
                             ).join(ids, on=IDS, how="semi")
    b = make_batch(spectra, targets)
    row = {k: i for i, k in enumerate(zip(b.keys["coadd_key"], b.keys["targetid"]))}
    t = ids.join(targets, on=IDS, how="left", maintain_order="left")
    phot, phot_ivar = photometry_arrays(t)
    out = []
    for j, (key, tid, z) in enumerate(chosen.select("coadd_key", "targetid", "z").iter_rows()):
        i = row.get((key, tid))
        flux = b.flux[i] if i is not None else np.zeros(b.wave.size)
        ivar = b.ivar[i] if i is not None else np.zeros(b.wave.size)
        out.append(GalaxyInput(int(tid), float(z) if z is not None else float("nan"), b.wave, flux, ivar,
                               phot[j], phot_ivar[j]))
    return out


def _full(values, eligible: np.ndarray, fill, dtype) -> np.ndarray:
    out = np.full(len(eligible), fill, dtype=dtype)
    if eligible.any():
        out[eligible] = np.asarray(values, dtype=dtype)
    return out


def population_rows(inputs: FitInputs, result: dict[str, np.ndarray], index_age: np.ndarray,
                    tension: np.ndarray, model_version: str, method: str = "fast") -> pl.DataFrame:
    """`stellar_populations` rows: fit_fast's results on the eligible rows, skip reasons on the others."""
    el = inputs.eligible
    status = inputs.rows["skip"].to_numpy().astype(object)
    if el.any():
        status[el] = np.asarray(result["fit_status"], dtype=object).astype(str)
    has_idx = np.isfinite(inputs.rows["dn4000_used"].fill_null(np.nan).to_numpy()) & \
        np.isfinite(inputs.rows["hdelta_a_used"].fill_null(np.nan).to_numpy())
    fitted = np.char.startswith(status.astype(str), "ok")
    cols = {k: pl.Series(k, _full(result.get(k, []), el, np.nan, np.float64), nan_to_null=True)
            for k in RESULT_KEYS}
    cols |= {k: pl.Series(k, _full(result.get(k, np.full(el.sum(), np.nan)), el, np.nan, np.float64),
                          nan_to_null=True) for k in ("cost_s", "chi2_dof")}
    flag = _full(tension, el, False, bool)
    out = inputs.rows.select(*KEY_COLUMNS, "z").with_columns(
        *cols.values(), pl.Series("method", [method if e else None for e in el], dtype=pl.String),
        pl.Series("fit_status", status.astype(str)), inputs.rows["snr"], inputs.rows["dn4000_used"],
        inputs.rows["hdelta_a_used"],
        pl.Series("index_age_gyr", _full(index_age, el, np.nan, np.float64), nan_to_null=True),
        pl.Series("tension_flag", [bool(f) if (h and ok) else None for f, h, ok in zip(flag, has_idx, fitted)],
                  dtype=pl.Boolean),
        pl.lit(model_version).alias("model_version"))
    return out.select(STELLAR_POPULATIONS.schema.names)


def priority_rows(lakehouse: LakehouseResource, keys: Sequence[str]) -> pl.DataFrame:
    """The fast path's fitted rows (fit_status ok*) of `keys`, with snr, for choosing the Bagpipes subset."""
    if not lakehouse.exists("stellar_populations"):
        return pl.DataFrame()
    sp = lakehouse.read("stellar_populations", keys=keys)
    return sp.filter(pl.col("fit_status").str.starts_with("ok"))


def sample_rows(chosen: pl.DataFrame, results: list, method: str = "bagpipes") -> pl.DataFrame:
    """`stellar_population_samples` rows from BagpipesResults (same order as `chosen`)."""
    n = len(results)
    pct = {k: pl.Series(k, [r.percentiles.get(k, np.nan) for r in results], dtype=pl.Float64, nan_to_null=True)
           for k in RESULT_KEYS}
    samples = [np.asarray(r.samples, dtype=np.float32).reshape(-1, len(STELLAR_POP_PARAMS)) for r in results]
    ns = [s.shape[0] for s in samples]
    lists = {}
    for j, p in enumerate(STELLAR_POP_PARAMS):
        vals = np.concatenate([s[:, j] for s in samples]) if n else np.zeros(0, np.float32)
        offsets = np.concatenate([[0], np.cumsum(ns)]).astype(np.int32)
        lists[f"{p}_samples"] = pl.Series(f"{p}_samples", pa.ListArray.from_arrays(pa.array(offsets),
                                                                                  pa.array(vals)))
    out = chosen.select(*KEY_COLUMNS, "z", "snr").with_columns(
        *pct.values(), pl.lit(method).alias("method"),
        pl.Series("fit_status", [r.fit_status for r in results], dtype=pl.String),
        pl.Series("cost_s", [float(r.cost_s) for r in results], dtype=pl.Float64),
        pl.Series("n_samples", ns, dtype=pl.Int32), *lists.values())
    return out.select(STELLAR_POPULATION_SAMPLES.schema.names)


# ----------------------------------------------------------------------------- the fast model's files

def find_model(lakehouse: LakehouseResource, key: str) -> dict | None:
    """The record of a fast model already built for this settings key, if its file still exists."""
    return models.find_trained(lakehouse, key, MODEL_NAME)


def save_model(lakehouse: LakehouseResource, model, key: str, meta: dict) -> dict:
    """Write the model file (named by its content version) and the record that finds it by key; returns it."""
    path = lakehouse.artifact_dir("models") / f"{MODEL_NAME}-{model.version}.npz"
    if not path.exists():
        tmp = path.with_name(f"{MODEL_NAME}-new-{key}.npz")
        model.save(tmp)
        Path(tmp).replace(path)
    record = {"key": key, "version": model.version, "path": str(path), "meta": meta}
    lakehouse.artifact_dir(f"models/{MODEL_NAME}-trained")  # where models.update_record keeps records by key
    models.update_record(lakehouse, record, MODEL_NAME)
    return record


def publish_model(lakehouse: LakehouseResource, record: dict) -> Path:
    """Make a built fast model the current one (atomic pointer)."""
    return models.publish(lakehouse, record, MODEL_NAME)


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from desi_assets.science.stellar_populations.fast import FastModel

    return FastModel.load(path)


def load_model(lakehouse: LakehouseResource):
    """The published fast model (cached per process: files are immutable per version); a clear error if none."""
    return _load(lakehouse.current_model(MODEL_NAME)["path"])


def samples_of(rows: pl.DataFrame, i: int) -> dict[str, np.ndarray]:
    """Posterior samples of row i of a stellar_population_samples frame, per parameter."""
    return {p: np.asarray(rows[f"{p}_samples"][i], dtype=np.float64) for p in STELLAR_POP_PARAMS}



def read_samples(lakehouse: LakehouseResource, keys: Sequence[str] | None = None) -> pl.DataFrame:
    """stellar_population_samples without the sample lists (percentiles, status, cost, snr)."""
    cols = [c for c in STELLAR_POPULATION_SAMPLES.schema.names if not c.endswith("_samples")]
    return lakehouse.read("stellar_population_samples", keys=keys, columns=cols)
