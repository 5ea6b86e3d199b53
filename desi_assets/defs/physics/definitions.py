import dagster as dg

from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.physics.assets import physics, physics_validation

physics_job = dg.define_asset_job(
    "physics_job", selection=dg.AssetSelection.assets(physics), partitions_def=coadds_partitions,
    description="Spectral indices and pPXF kinematics + emission lines of coadd partitions.")
physics_validation_job = dg.define_asset_job(
    "physics_validation_job", selection=dg.AssetSelection.assets(physics_validation),
    description="Physics columns against the mock truth (bias and scatter vs S/N).")

defs = dg.Definitions(assets=[physics, physics_validation], jobs=[physics_job, physics_validation_job])
