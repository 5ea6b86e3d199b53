"""Discovery of new coadd files: a sensor (with a cursor) and a daily schedule for daemon-less users."""


import base64
import json
import zlib

import dagster as dg

from desi_assets.defs.partitions import coadds_partitions
from desi_assets.sources.archives import SpectraArchive
from desi_assets.sources.keys import parse_key

coadd_job = dg.define_asset_job(
    "coadd_job",
    selection=dg.AssetSelection.groups("ingest", "preprocess"),
    partitions_def=coadds_partitions,
    description="Ingest and preprocess coadd partitions.",
)


def encode_cursor(keys: set[str]) -> str:
    """Compact cursor holding every key ever requested (zlib + base64 JSON)."""
    return base64.b64encode(zlib.compress(json.dumps(sorted(keys)).encode())).decode()


def decode_cursor(cursor: str | None) -> set[str]:
    """Inverse of encode_cursor; an empty or missing cursor is the empty set."""
    if not cursor:
        return set()
    return set(json.loads(zlib.decompress(base64.b64decode(cursor))))


def discover(archive: SpectraArchive, known: set[str], log=None) -> list[str]:
    """Valid keys in the archive listing that are not yet known, in listing order; junk keys are never registered."""
    new = []
    for e in archive.list_entries():
        if e.key in known:
            continue
        try:
            parse_key(e.key)
        except ValueError as exc:
            if log is not None:
                log.warning(f"not registering {e.key!r}: {exc}")
            continue
        new.append(e.key)
    return new


@dg.sensor(job=coadd_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Lists the archive; adds a `coadds` partition and requests one run per new file.")
def new_coadds_sensor(context: dg.SensorEvaluationContext, archive: SpectraArchive) -> dg.SensorResult:
    """Request each newly listed coadd exactly once (cursor = every key requested so far)."""
    requested = decode_cursor(context.cursor)
    known = requested | set(context.instance.get_dynamic_partitions(coadds_partitions.name))
    new = discover(archive, known, context.log)
    if not new:
        return dg.SensorResult(skip_reason=f"no new coadds ({len(known)} known)")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=k) for k in new],
        dynamic_partitions_requests=[coadds_partitions.build_add_request(new)],
        cursor=encode_cursor(requested | set(new)),
    )


@dg.schedule(job=coadd_job, cron_schedule="0 6 * * *", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Daily discovery for users who keep the sensor daemon off.")
def daily_coadd_discovery(context: dg.ScheduleEvaluationContext, archive: SpectraArchive):
    """Add partitions for new files and request their runs (same discovery as the sensor)."""
    known = set(context.instance.get_dynamic_partitions(coadds_partitions.name))
    new = discover(archive, known, context.log)
    if not new:
        return dg.SkipReason(f"no new coadds ({len(known)} known)")
    context.instance.add_dynamic_partitions(coadds_partitions.name, new)
    return [dg.RunRequest(partition_key=k, run_key=f"daily-{k}") for k in new]
