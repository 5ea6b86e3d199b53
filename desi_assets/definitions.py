"""The one entry point: every layer's Definitions merged, with the shared resources."""

import warnings

import dagster as dg

from desi_assets.defs.anomalies.definitions import defs as anomaly_defs
from desi_assets.defs.ingest.definitions import defs as ingest_defs
from desi_assets.defs.ops.definitions import defs as ops_defs
from desi_assets.defs.preprocess.definitions import defs as preprocess_defs
from desi_assets.defs.resources import make_resources

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

LAYERS = [ingest_defs, preprocess_defs, anomaly_defs, ops_defs]

#: The demo's order of jobs: (job name, partitioned over `coadds`).
PIPELINE_STAGES: list[tuple[str, bool]] = [
    ("coadd_job", True),
    ("anomaly_models_job", False),
    ("anomaly_scores_job", True),
    ("anomaly_validation_job", False),
]


def build_defs(lakehouse_root: str | None = None, archive: str | None = None) -> dg.Definitions:
    """All layers with resources pointing at the given lakehouse root and archive."""
    return dg.Definitions.merge(*LAYERS, dg.Definitions(resources=make_resources(lakehouse_root, archive)))


defs = build_defs()
