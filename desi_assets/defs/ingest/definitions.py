import dagster as dg

from desi_assets.defs.ingest.assets import coadd_ingest
from desi_assets.defs.ingest.sensors import coadd_job, daily_coadd_discovery, new_coadds_sensor

defs = dg.Definitions(assets=[coadd_ingest], jobs=[coadd_job], sensors=[new_coadds_sensor],
                      schedules=[daily_coadd_discovery])
