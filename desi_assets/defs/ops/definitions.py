import dagster as dg

from desi_assets.defs.ops.maintenance import lakehouse_maintenance_job, weekly_maintenance

defs = dg.Definitions(jobs=[lakehouse_maintenance_job], schedules=[weekly_maintenance])
