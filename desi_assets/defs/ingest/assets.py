"""raw_spectra (+ preprocessed_spectra): coadd (+ redrock) files -> `targets`, `spectra` Delta tables, one partition per file.

The per-file work (and its failure boundary) is ``storage.ingest.ingest_file``; this asset only wires it to
Dagster. Each partition that landed is recorded by its own ``AssetMaterialization`` (per-partition rows plus
the batch's and the table's figures); partitions that did not land fail the run by name, so Dagster's
materialized partitions are exactly the lakehouse's.
"""

import dagster as dg

from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.defs.preprocess.assets import preprocessed_spectra
from desi_assets.sources.archives import SpectraArchive
from desi_assets.storage.ingest import (  # noqa: F401 - record_ingest_error: the CLI's import
    COMMIT_ORDER,
    DEFAULT_COMMIT_SPECTRA,
    DEFAULT_LSF_ROWS,
    PRE_TABLES,
    RAW_TABLES,
    BatchReport,
    FileOutcome,
    archive_loader,
    ingest_batch,
    lakehouse_loader,
    record_ingest_error,
)
from desi_assets.storage.lakehouse import LakehouseResource


class IngestConfig(dg.Config):
    """Options for reading coadd files and writing their tables."""

    lsf_per_target: bool = True  # each target's LSF from its own RESOLUTION row (false: one per file)
    lsf_rows: int = DEFAULT_LSF_ROWS  # rows sampled for the one-per-file LSF (0: the nominal DESI LSF)
    make_plot: bool = True  # write a PNG of example spectra per run
    commit_spectra: int = DEFAULT_COMMIT_SPECTRA  # spectra buffered per Delta commit (~100 kB of memory each)


raw_spectra_spec = dg.AssetSpec(
    "raw_spectra", group_name="ingest", kinds={"delta", "fits"}, skippable=True,
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
    """Ingest (and preprocess) this run's partitions: one event per landed partition; the others fail the run.

    With only `preprocessed_spectra` selected, the arrays are read back from `targets` + `spectra`.
    """
    keys = list(context.partition_keys)
    selected = context.selected_asset_keys
    want = {"raw": raw_spectra_spec.key in selected, "pre": preprocessed_spectra.key in selected}
    tables = [t for t in COMMIT_ORDER if (want["raw"] and t in RAW_TABLES) or (want["pre"] and t in PRE_TABLES)]

    def progress(i: int, o: FileOutcome) -> None:
        for w in o.warnings:
            context.log.warning(f"{o.key}: {w}")
        if o.ok:
            context.log.info(f"[{i + 1}/{len(keys)}] {o.key}: {o.spectra or o.preprocessed} spectra")
        else:
            context.log.error(f"{o.key}: {o.error}")

    load = (archive_loader(archive, config.lsf_rows, config.lsf_per_target) if want["raw"]
            else lakehouse_loader(lakehouse))
    tag = f"{context.run_id[:8]}-{keys[0]}" if config.make_plot and keys else None
    report = ingest_batch(keys, load, lakehouse, tables, config.commit_spectra, plot_tag=tag, on_file=progress)
    for spec, table, on in ((raw_spectra_spec, "targets", want["raw"]),
                            (preprocessed_spectra, "preprocessed_spectra", want["pre"])):
        for event in (_events(lakehouse, report, spec.key, table) if on else []):
            context.log_event(event)
    if report.failed:
        raise dg.Failure(
            description=f"{len(report.failed)} of {len(keys)} files could not be ingested (see ingest_errors); "
                        f"the other {len(report.good)} landed and are materialized: "
                        + "; ".join(f"{o.key}: {o.error}" for o in report.failed),
            metadata={"failed_keys": [o.key for o in report.failed], "landed_keys": [o.key for o in report.good]})
    yield from ()


def _events(lakehouse: LakehouseResource, report: BatchReport, asset_key: dg.AssetKey, table: str
            ) -> list[dg.AssetMaterialization]:
    """One materialization per landed partition: its rows, the batch's (batch_*) and the table's (table_*)."""
    raw = table == "targets"
    rows = sum(o.spectra if raw else o.preprocessed for o in report.good)
    batch = {"batch_partitions": len(report.outcomes), "batch_failed": len(report.failed), "batch_rows": rows,
             "batch_seconds": round(report.seconds, 3),
             "batch_spectra_per_s": round(rows / report.seconds, 1) if report.seconds else 0.0,
             "table_rows": lakehouse.row_count(table), "table_version": lakehouse.version(table)}
    if raw:
        batch["spectra_version"] = lakehouse.version("spectra")
    plot = plot_metadata(report.plots.get("spectra" if raw else "preprocessed_spectra"), "example_plot")
    events = []
    for i, o in enumerate(report.good):
        meta = ({"rows": o.spectra, "flagged_unusable": o.flagged_unusable, "source_path": o.source}
                if raw else {"rows": o.preprocessed, "excluded_unusable": o.excluded_unusable,
                             "median_norm": o.median_norm if o.median_norm is not None else float("nan")})
        if raw and o.quarantine:
            meta["quarantined"] = o.quarantine
        meta |= batch | (plot if i == len(report.good) - 1 else {})  # the plot on the latest event only
        events.append(dg.AssetMaterialization(asset_key, partition=o.key, metadata=meta))
    return events
