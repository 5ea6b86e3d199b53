"""Staleness: when a pixel lands (raw_spectra materialized), re-request cosmic_web for it and its buffer neighbours."""

import dagster as dg

from desi_assets.cosmic_web_catalog import neighbour_keys
from desi_assets.defs.cosmic_web.config import CosmicWebConfig
from desi_assets.defs.partitions import coadds_partitions

cosmic_web_job = dg.define_asset_job(
    "cosmic_web_job", selection=dg.AssetSelection.assets("cosmic_web"), partitions_def=coadds_partitions,
    description="Cosmic-web environment of coadd partitions (pixel + buffer of neighbours).")

RAW = dg.AssetKey("raw_spectra")
COSMIC_WEB = dg.AssetKey("cosmic_web")


@dg.sensor(job=cosmic_web_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="After new raw_spectra materializations, requests cosmic_web for each landed pixel and every "
                       "known pixel within the buffer radius (their environment changed), unless that pixel's "
                       "cosmic_web was already computed after the landing (e.g. by the demo's own job).")
def cosmic_web_neighbours_sensor(context: dg.SensorEvaluationContext,
                                 cosmic_web_config: CosmicWebConfig) -> dg.SensorResult:
    """Cursor = storage id of the last raw_spectra materialization handled."""
    after = int(context.cursor) if context.cursor else None
    res = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, after_storage_id=after), limit=1000, ascending=True)
    if not res.records:
        return dg.SensorResult(skip_reason="no new raw_spectra partitions")
    last = max(r.storage_id for r in res.records)
    landed = list(dict.fromkeys(r.partition_key for r in res.records if r.partition_key))
    known = context.instance.get_dynamic_partitions(coadds_partitions.name)
    keys = neighbour_keys(landed, known, cosmic_web_config.params())
    fresh = {r.partition_key for r in context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=COSMIC_WEB, asset_partitions=keys, after_storage_id=last),
        limit=len(keys) + 1).records} if keys else set()
    keys = [k for k in keys if k not in fresh]
    if not keys:
        return dg.SensorResult(skip_reason="every affected pixel's cosmic_web is newer than the landing",
                               cursor=str(last))
    return dg.SensorResult(run_requests=[dg.RunRequest(partition_key=k, run_key=f"cosmic-web-{k}-{last}")
                                         for k in keys], cursor=str(last))
