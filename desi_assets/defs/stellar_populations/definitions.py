import dagster as dg

from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.stellar_populations.assets import (
    stellar_population_model,
    stellar_population_posteriors,
    stellar_population_validation,
    stellar_populations,
)
from desi_assets.defs.stellar_populations.config import StellarPopulationsConfig

stellar_population_model_job = dg.define_asset_job(
    "stellar_population_model_job", selection=dg.AssetSelection.assets(stellar_population_model),
    description="Build (or reuse) and publish the fast path's model.")
stellar_populations_job = dg.define_asset_job(
    "stellar_populations_job", selection=dg.AssetSelection.assets(stellar_populations),
    partitions_def=coadds_partitions, description="Fast-path stellar populations of coadd partitions.")
stellar_population_posteriors_job = dg.define_asset_job(
    "stellar_population_posteriors_job", selection=dg.AssetSelection.assets(stellar_population_posteriors),
    partitions_def=coadds_partitions,
    description="Bagpipes posteriors of the priority subset (config posteriors: per_partition, partitions).")
stellar_population_validation_job = dg.define_asset_job(
    "stellar_population_validation_job", selection=dg.AssetSelection.assets(stellar_population_validation),
    description="Both paths against the mock truth: bias, scatter, coverage, agreement, tension flag; checks.")


def build_stellar_population_defs(config: StellarPopulationsConfig | None = None) -> dg.Definitions:
    """The layer with one `stellar_populations_config` resource (the checks read it)."""
    return dg.Definitions(
        assets=[stellar_population_model, stellar_populations, stellar_population_posteriors,
                stellar_population_validation],
        jobs=[stellar_population_model_job, stellar_populations_job, stellar_population_posteriors_job,
              stellar_population_validation_job],
        resources={"stellar_populations_config": config or StellarPopulationsConfig()})


defs = build_stellar_population_defs()
