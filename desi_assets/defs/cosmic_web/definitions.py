import dagster as dg

from desi_assets.defs.cosmic_web.assets import cosmic_web
from desi_assets.defs.cosmic_web.config import CosmicWebConfig
from desi_assets.defs.cosmic_web.sensors import cosmic_web_job, cosmic_web_neighbours_sensor

defs = dg.Definitions(assets=[cosmic_web], jobs=[cosmic_web_job], sensors=[cosmic_web_neighbours_sensor],
                      resources={"cosmic_web_config": CosmicWebConfig()})
