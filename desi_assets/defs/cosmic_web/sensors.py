"""Staleness: when a pixel lands (raw_spectra materialized), re-materialise the survey tidal_field, then
re-request cosmic_web for the landed pixel and its buffer neighbours."""

import json

import dagster as dg

from desi_assets.cosmic_web_catalog import neighbour_keys
from desi_assets.defs.cosmic_web.config import CosmicWebConfig
from desi_assets.defs.partitions import coadds_partitions

cosmic_web_job = dg.define_asset_job(
    "cosmic_web_job", selection=dg.AssetSelection.assets("cosmic_web"), partitions_def=coadds_partitions,
    description="Cosmic-web environment of coadd partitions (pixel + buffer of neighbours, survey tidal_field).")
tidal_field_job = dg.define_asset_job(
    "tidal_field_job", selection=dg.AssetSelection.assets("tidal_field"),
    description="The survey-wide T-web field (δ, T_ij) that every cosmic_web partition samples.")

RAW = dg.AssetKey("raw_spectra")
COSMIC_WEB = dg.AssetKey("cosmic_web")
TIDAL_FIELD = dg.AssetKey("tidal_field")


def _cursor(text: str | None) -> dict:
    """{"raw": last raw_spectra storage id handled, "pending": keys awaiting the field, "since": landing id}."""
    if not text:
        return {"raw": None, "pending": [], "since": None}
    if text.isdigit():  # the cursor of the one-stage sensor
        return {"raw": int(text), "pending": [], "since": None}
    return json.loads(text)


@dg.sensor(jobs=[tidal_field_job, cosmic_web_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="After new raw_spectra materializations: first re-materialises the survey-wide tidal_field "
                       "(a new pixel changes δ and T_ij everywhere), and once it is newer than the landing, requests "
                       "cosmic_web for each landed pixel and every known pixel within the buffer radius, unless that "
                       "pixel's cosmic_web was already computed after the field (e.g. by the demo's own job). With "
                       "tidal_field: local it requests the partitions at once.")
def cosmic_web_neighbours_sensor(context: dg.SensorEvaluationContext,
                                 cosmic_web_config: CosmicWebConfig) -> dg.SensorResult:
    """Two stages held in a JSON cursor: landing → tidal_field run → cosmic_web runs of the affected pixels."""
    cur = _cursor(context.cursor)
    res = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, after_storage_id=cur["raw"]), limit=1000, ascending=True)
    if res.records:
        last = max(r.storage_id for r in res.records)
        landed = list(dict.fromkeys(r.partition_key for r in res.records if r.partition_key))
        known = context.instance.get_dynamic_partitions(coadds_partitions.name)
        keys = neighbour_keys(landed, known, cosmic_web_config.params())
        if cosmic_web_config.tidal_field == "survey" and cosmic_web_config.rerequest_all_on_new_field:
            keys = list(dict.fromkeys(keys + list(known)))
        cur = {"raw": last, "pending": list(dict.fromkeys(cur["pending"] + keys)), "since": last}
    if not cur["pending"]:
        return dg.SensorResult(skip_reason="no new raw_spectra partitions", cursor=json.dumps(cur))
    after = cur["since"]
    if cosmic_web_config.tidal_field == "survey":
        field = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TIDAL_FIELD, after_storage_id=cur["since"]), limit=1, ascending=False)
        if not field.records:  # the field predates the landing: recompute it first (run_key: once per landing)
            return dg.SensorResult(run_requests=[dg.RunRequest(job_name="tidal_field_job",
                                                               run_key=f"tidal-field-{cur['since']}")],
                                   cursor=json.dumps(cur))
        after = field.records[0].storage_id
    keys, cur = cur["pending"], {"raw": cur["raw"], "pending": [], "since": None}
    fresh = {r.partition_key for r in context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=COSMIC_WEB, asset_partitions=keys, after_storage_id=after),
        limit=len(keys) + 1).records}
    keys = [k for k in keys if k not in fresh]
    if not keys:
        return dg.SensorResult(skip_reason="every affected pixel's cosmic_web is newer than the landing and the field",
                               cursor=json.dumps(cur))
    return dg.SensorResult(run_requests=[dg.RunRequest(job_name="cosmic_web_job", partition_key=k,
                                                       run_key=f"cosmic-web-{k}-{after}") for k in keys],
                           cursor=json.dumps(cur))
