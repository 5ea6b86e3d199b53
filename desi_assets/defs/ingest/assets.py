"""raw_spectra: coadd (+ redrock) files -> `targets` and `spectra` Delta tables, one partition per file."""


import time
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa

from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
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
    """Options for reading coadd files."""

    lsf_rows: int = 16  # RESOLUTION rows sampled per arm for the compact LSF
    make_plot: bool = True  # write a PNG of example spectra per run


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


@dg.asset(
    partitions_def=coadds_partitions,
    backfill_policy=COADD_BACKFILL_POLICY,
    group_name="ingest",
    kinds={"delta", "fits"},
    description="Reads each coadd (+ redrock) file and writes the `targets` and `spectra` Delta tables.",
)
def raw_spectra(context: dg.AssetExecutionContext, config: IngestConfig, lakehouse: LakehouseResource,
                archive: SpectraArchive) -> dg.MaterializeResult:
    """Ingest the coadd files of this run's partitions; failures go to `ingest_errors`."""
    t0 = time.perf_counter()
    keys = list(context.partition_keys)
    n_rows = n_flagged = 0
    failures: dict[str, str] = {}
    plot = None
    for i, key in enumerate(keys):
        parse_key(key)
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
        lakehouse.write_partitions("targets", targets_frame(coadd), [key])
        lakehouse.write_partitions("spectra", spectra_frame(coadd), [key])
        n_rows += coadd.nspec
        n_flagged += int(((coadd.targets["quality_flags"] & QualityFlag.unusable_mask()) != 0).sum())
        if config.make_plot and plot is None:
            plot = _example_plot(lakehouse, coadd, context.run_id[:8] + "-" + key)
        context.log.info(f"[{i + 1}/{len(keys)}] {key}: {coadd.nspec} spectra")
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
    return dg.MaterializeResult(metadata=meta)
