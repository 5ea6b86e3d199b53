import dagster as dg

from desi_assets.defs.cosmic_web.assets import cosmic_web, tidal_field
from desi_assets.defs.cosmic_web.config import CosmicWebConfig
from desi_assets.defs.cosmic_web.sensors import cosmic_web_job, cosmic_web_neighbours_sensor, tidal_field_job

defs = dg.Definitions(assets=[tidal_field, cosmic_web], jobs=[tidal_field_job, cosmic_web_job],
                      sensors=[cosmic_web_neighbours_sensor], resources={"cosmic_web_config": CosmicWebConfig()})
