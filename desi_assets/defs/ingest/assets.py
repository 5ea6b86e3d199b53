"""raw_spectra (+ preprocessed_spectra): coadd (+ redrock) files -> `targets`, `spectra` Delta tables, one partition per file."""


import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa

from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.defs.preprocess.assets import (
    KEY_COLS,
    example_plot,
    preprocessed_rows,
    preprocessed_spectra,
    read_back_and_preprocess,
)
from desi_assets.plots import plot_spectra
from desi_assets.science.preprocess import bin_lsf
from desi_assets.science.wavelength import ARMS
from desi_assets.sources.archives import SpectraArchive
from desi_assets.sources.keys import parse_key
from desi_assets.sources.model import CoaddFile, QualityFlag
from desi_assets.sources.reader import read_coadd
from desi_assets.storage.arrays import to_list_array
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import SPECTRA, TARGETS


class IngestConfig(dg.Config):
    """Options for reading coadd files and writing their tables."""

    lsf_rows: int = 16  # RESOLUTION rows sampled per arm for the compact LSF
    make_plot: bool = True  # write a PNG of example spectra per run
    commit_spectra: int = 2048  # spectra buffered per Delta commit (~100 kB of memory each)


def _key_columns(coadd: CoaddFile) -> pl.DataFrame:
    t = coadd.targets
    hp = t["healpix"]
    return pl.DataFrame({
        "coadd_key": [coadd.coadd_key] * t.height,
        "survey": [coadd.survey] * t.height,
        "program": [coadd.program] * t.height,
        "healpix": hp,
        "hpxgroup": (hp // 100).fill_null(-1).cast(pl.Int32),
        "targetid": t["targetid"],
    }, schema_overrides={"survey": pl.String, "program": pl.String})


def targets_frame(coadd: CoaddFile) -> pl.DataFrame:
    """The `targets` rows of one file: key columns, reader columns, usability and provenance."""
    t = coadd.targets
    keep = [c for c in TARGETS.schema.names if c in t.columns and c not in {"healpix", "targetid"}]
    usable = (t["quality_flags"] & QualityFlag.unusable_mask()) == 0
    return pl.concat([_key_columns(coadd), t.select(keep)], how="horizontal").with_columns(
        usable=usable, source_path=pl.lit(coadd.path))


def spectra_frame(coadd: CoaddFile) -> pa.Table:
    """The `spectra` rows of one file as Arrow (list columns built without per-row Python)."""
    keys = _key_columns(coadd).to_arrow()
    cols, names = list(keys.columns), list(keys.column_names)
    for arm in ARMS:
        a = coadd.arms[arm]
        for what, arr in (("flux", a.flux), ("ivar", a.ivar), ("mask", a.mask)):
            cols.append(to_list_array(arr.astype(np.int32 if what == "mask" else np.float32, copy=False)))
            names.append(f"{what}_{arm}")
    lsf = bin_lsf({k: v.lsf_sigma for k, v in coadd.arms.items()})
    cols.append(to_list_array(np.broadcast_to(lsf, (coadd.nspec, lsf.size))))
    names.append("lsf_sigma")
    return pa.Table.from_arrays(cols, names=names)


def record_ingest_error(lakehouse: LakehouseResource, key: str, file: str, error_type: str, message: str) -> None:
    """Append one row to `ingest_errors` so that no failure is silent."""
    try:
        healpix = parse_key(key).healpix
    except ValueError:
        healpix = None
    lakehouse.append("ingest_errors", pl.DataFrame({
        "coadd_key": [key], "file": [file], "error_type": [error_type], "message": [message],
        "failed_at": [datetime.now(timezone.utc)], "hpxgroup": [healpix // 100 if healpix is not None else -1]}))


def _example_plot(lakehouse: LakehouseResource, coadd: CoaddFile, run_tag: str) -> str | None:
    t = coadd.targets
    good = np.flatnonzero((t["quality_flags"].to_numpy() & QualityFlag.unusable_mask()) == 0)[:3]
    if good.size == 0:
        return None
    wave = np.concatenate([coadd.arms[a].wave for a in ARMS])
    flux = np.concatenate([coadd.arms[a].flux[good] for a in ARMS], axis=1)
    labels = [f"TARGETID {t['targetid'][int(i)]}  {t['spectype'][int(i)]}  z={t['z'][int(i)]}" for i in good]
    path = lakehouse.artifact_dir("plots") / "raw_spectra" / f"{run_tag}.png"
    return str(plot_spectra(path, wave, flux, labels, f"raw spectra: {coadd.coadd_key}"))


class _WriteBuffer:
    """Rows of several files, committed together once they hold `limit` spectra (one commit per table)."""

    def __init__(self, lakehouse: LakehouseResource, limit: int):
        self.lakehouse, self.limit = lakehouse, limit
        self.keys: list[str] = []
        self.tables: dict[str, list] = {"targets": [], "spectra": [], "preprocessed_spectra": []}
        self.rows = 0

    def add(self, key: str, rows: int, **frames) -> None:
        self.keys.append(key)
        for name, frame in frames.items():
            self.tables[name].append(frame)
        self.rows += rows
        if self.rows >= self.limit:
            self.flush()

    def flush(self) -> None:
        for name, frames in self.tables.items():
            if frames:
                data = (pa.concat_tables(frames) if isinstance(frames[0], pa.Table) else pl.concat(frames))
                self.lakehouse.write_partitions(name, data, self.keys)
        self.keys, self.rows = [], 0
        self.tables = {k: [] for k in self.tables}


def _arm_arrays(coadd: CoaddFile) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {a: (coadd.arms[a].flux, coadd.arms[a].ivar, coadd.arms[a].mask) for a in ARMS}


raw_spectra_spec = dg.AssetSpec(
    "raw_spectra", group_name="ingest", kinds={"delta", "fits"},
    description="Reads each coadd (+ redrock) file and writes the `targets` and `spectra` Delta tables.")


@dg.multi_asset(
    name="coadd_ingest",
    specs=[raw_spectra_spec, preprocessed_spectra],
    partitions_def=coadds_partitions,
    backfill_policy=COADD_BACKFILL_POLICY,
    can_subset=True,
    description="Coadd files -> `targets`, `spectra` and `preprocessed_spectra`, in one pass over each file.",
)
def coadd_ingest(context: dg.AssetExecutionContext, config: IngestConfig, lakehouse: LakehouseResource,
                 archive: SpectraArchive):
    """Ingest and preprocess this run's partitions; failures go to `ingest_errors`.

    With both assets selected each file is read once and preprocessed from memory; with only
    `preprocessed_spectra` selected it is recomputed from the `spectra` table.
    """
    keys = list(context.partition_keys)
    for key in keys:
        parse_key(key)
    selected = context.selected_asset_keys
    want_raw = raw_spectra_spec.key in selected
    want_pre = preprocessed_spectra.key in selected
    tag = context.run_id[:8] + "-" + keys[0]
    if not want_raw:
        t0 = time.perf_counter()
        pre, excluded = read_back_and_preprocess(lakehouse, keys)
        lakehouse.write_partitions("preprocessed_spectra", pre, keys)
        yield _pre_result(lakehouse, config, pre.head(3), pre["norm"].to_numpy() if pre.height else np.zeros(0),
                          excluded, len(keys), time.perf_counter() - t0, tag)
        return

    t0 = time.perf_counter()
    buffer = _WriteBuffer(lakehouse, config.commit_spectra)
    n_rows = n_flagged = excluded = 0
    examples: pl.DataFrame | None = None  # first rows, for the plot
    norms: list[np.ndarray] = []
    failures: dict[str, str] = {}
    plot = None
    for i, key in enumerate(keys):
        source = key
        try:
            coadd_path, redrock_path = archive.fetch(key)
            source = str(coadd_path)
            coadd = read_coadd(coadd_path, redrock_path if redrock_path else None, lsf_rows=config.lsf_rows)
        except Exception as exc:  # every failure is recorded, never silent
            record_ingest_error(lakehouse, key, source, type(exc).__name__, str(exc))
            failures[key] = f"{type(exc).__name__}: {exc}"
            context.log.error(f"{key}: {failures[key]}")
            continue
        for w in coadd.warnings:
            context.log.warning(f"{key}: {w}")
        targets = targets_frame(coadd)
        frames = {"targets": targets, "spectra": spectra_frame(coadd)}
        if want_pre:
            pre, n_excl = preprocessed_rows(targets.select(KEY_COLS), _arm_arrays(coadd), targets["usable"].to_numpy())
            frames["preprocessed_spectra"] = pre
            examples = examples if examples is not None and examples.height else pre.head(3)
            norms.append(pre["norm"].to_numpy())
            excluded += n_excl
        buffer.add(key, coadd.nspec, **frames)
        n_rows += coadd.nspec
        n_flagged += int((~targets["usable"]).sum())
        if config.make_plot and plot is None:
            plot = _example_plot(lakehouse, coadd, tag)
        context.log.info(f"[{i + 1}/{len(keys)}] {key}: {coadd.nspec} spectra")
        del coadd, frames
    buffer.flush()
    seconds = time.perf_counter() - t0
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} files could not be ingested (see ingest_errors): "
                        + "; ".join(f"{k}: {v}" for k, v in failures.items()),
            metadata={"failed_keys": list(failures), "rows_written_for_other_keys": n_rows})
    meta = {
        "partitions": len(keys), "rows": n_rows, "flagged_unusable": n_flagged,
        "seconds": round(seconds, 3), "spectra_per_s": round(n_rows / seconds, 1) if seconds else 0.0,
        "targets_version": lakehouse.version("targets"), "spectra_version": lakehouse.version("spectra"),
    }
    if plot:
        meta["example_plot"] = dg.MetadataValue.path(plot)
    yield dg.MaterializeResult(asset_key=raw_spectra_spec.key, metadata=meta)
    if want_pre:
        yield _pre_result(lakehouse, config, examples if examples is not None else pl.DataFrame(),
                          np.concatenate(norms) if norms else np.zeros(0), excluded, len(keys), seconds, tag)


def _pre_result(lakehouse: LakehouseResource, config: IngestConfig, examples: pl.DataFrame, norms: np.ndarray,
                excluded: int, n_keys: int, seconds: float, tag: str) -> dg.MaterializeResult:
    rows = int(norms.size)
    meta = {
        "partitions": n_keys, "rows": rows, "excluded_unusable": excluded,
        "seconds": round(seconds, 3), "spectra_per_s": round(rows / seconds, 1) if seconds else 0.0,
        "median_norm": float(np.median(norms)) if rows else 0.0,
        "table_version": lakehouse.version("preprocessed_spectra"),
    }
    plot = example_plot(lakehouse, examples, tag) if config.make_plot else None
    if plot:
        meta["example_plot"] = dg.MetadataValue.path(plot)
    return dg.MaterializeResult(asset_key=preprocessed_spectra.key, metadata=meta)
