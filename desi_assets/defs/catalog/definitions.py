import dagster as dg

from desi_assets.defs.catalog.assets import catalog_release, validated_catalog
from desi_assets.defs.catalog.config import CatalogConfig
from desi_assets.defs.partitions import coadds_partitions

catalog_job = dg.define_asset_job(
    "catalog_job", selection=dg.AssetSelection.assets(validated_catalog), partitions_def=coadds_partitions,
    description="Join every layer into the validated catalog, partition by partition, behind the GE gates.")
release_job = dg.define_asset_job(
    "release_job", selection=dg.AssetSelection.assets(catalog_release),
    description="Pin the current table versions as a named release (config: name, replace).")

defs = dg.Definitions(assets=[validated_catalog, catalog_release], jobs=[catalog_job, release_job],
                      resources={"catalog_config": CatalogConfig()})
