"""Lakehouse maintenance: compact small files and vacuum unreferenced ones, on a schedule."""


import dagster as dg
from deltalake import DeltaTable

from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.release import pinned_versions
from desi_assets.storage.tables import REGISTRY


class MaintenanceConfig(dg.Config):
    """Vacuum retention; Delta's default of 7 days protects readers of older versions."""

    retention_hours: int = 168


@dg.op(description="optimize.compact() then vacuum() every existing lakehouse table.")
def compact_and_vacuum(context: dg.OpExecutionContext, config: MaintenanceConfig,
                       lakehouse: LakehouseResource) -> dict:
    """Compact and vacuum each table; returns files removed per table."""
    removed = {}
    for name in REGISTRY:
        if not lakehouse.exists(name):
            continue
        dt = DeltaTable(lakehouse.table_uri(name), storage_options=lakehouse.storage_options or None)
        stats = dt.optimize.compact()
        pinned = pinned_versions(lakehouse, name)  # files of released versions are never vacuumed
        gone = dt.vacuum(retention_hours=config.retention_hours, dry_run=False,
                         enforce_retention_duration=config.retention_hours >= 168, keep_versions=pinned or None)
        removed[name] = len(gone)
        context.log.info(f"{name}: compacted {stats.get('numFilesRemoved', 0)} files, vacuumed {len(gone)}")
    return removed


@dg.job(description="Compact and vacuum all Delta tables.")
def lakehouse_maintenance_job():
    """Maintenance job."""
    compact_and_vacuum()


weekly_maintenance = dg.ScheduleDefinition(name="weekly_maintenance", job=lakehouse_maintenance_job, cron_schedule="0 3 * * 0",
                                           default_status=dg.DefaultScheduleStatus.STOPPED)
