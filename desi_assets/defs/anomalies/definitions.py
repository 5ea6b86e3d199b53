import dagster as dg

from desi_assets.defs.anomalies.assets import anomaly_injection, anomaly_model, anomaly_scores, training_set
from desi_assets.defs.anomalies.checks import anomaly_summary, build_checks
from desi_assets.defs.anomalies.config import AnomalyConfig
from desi_assets.defs.partitions import coadds_partitions

anomaly_models_job = dg.define_asset_job(
    "anomaly_models_job", selection=dg.AssetSelection.assets(training_set, anomaly_model),
    description="Sample the class-balanced training set and train the anomaly model.")
anomaly_scores_job = dg.define_asset_job(
    "anomaly_scores_job", selection=dg.AssetSelection.assets(anomaly_scores), partitions_def=coadds_partitions,
    description="Score coadd partitions with the current anomaly model.")
anomaly_validation_job = dg.define_asset_job(
    "anomaly_validation_job", selection=dg.AssetSelection.assets(anomaly_summary, anomaly_injection),
    description="Cross-partition summary, bias controls and injection/recovery.")


def build_anomaly_defs(config: AnomalyConfig | None = None) -> dg.Definitions:
    """The anomaly layer with one `anomaly_config` resource; check descriptions quote the same config."""
    config = config or AnomalyConfig()
    return dg.Definitions(
        assets=[training_set, anomaly_model, anomaly_scores, anomaly_summary, anomaly_injection],
        asset_checks=build_checks(config),
        jobs=[anomaly_models_job, anomaly_scores_job, anomaly_validation_job],
        resources={"anomaly_config": config},
    )


defs = build_anomaly_defs()
