"""The one entry point: every layer's Definitions merged, with the shared resources."""

import warnings

import dagster as dg

from desi_assets.defs.anomalies.definitions import defs as anomaly_defs
from desi_assets.defs.catalog.definitions import defs as catalog_defs
from desi_assets.defs.cosmic_web.definitions import defs as cosmic_web_defs
from desi_assets.defs.embeddings.definitions import defs as embedding_defs
from desi_assets.defs.ingest.definitions import defs as ingest_defs
from desi_assets.defs.ops.definitions import defs as ops_defs
from desi_assets.defs.physics.definitions import defs as physics_defs
from desi_assets.defs.preprocess.definitions import defs as preprocess_defs
from desi_assets.defs.resources import make_resources
from desi_assets.defs.stellar_populations.definitions import defs as stellar_population_defs

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

LAYERS = [ingest_defs, preprocess_defs, anomaly_defs, cosmic_web_defs, embedding_defs, physics_defs,
          stellar_population_defs, catalog_defs, ops_defs]

#: The demo's order of jobs: (job name, partitioned over `coadds`).
PIPELINE_STAGES: list[tuple[str, bool]] = [
    ("coadd_job", True),
    ("tidal_field_job", False),  # the survey-wide T-web field every cosmic_web partition samples
    ("cosmic_web_job", True),
    ("physics_job", True),
    ("physics_validation_job", False),
    ("stellar_population_model_job", False),
    ("stellar_populations_job", True),  # after physics: the tension flag reads spectral_indices
    ("stellar_population_posteriors_job", True),  # Bagpipes on the small priority subset (config posteriors)
    ("stellar_population_validation_job", False),
    ("anomaly_models_job", False),
    ("embedding_model_job", False),
    ("spectral_embeddings_job", True),
    ("anomaly_scores_job", True),
    ("anomaly_validation_job", False),
    ("embedding_evaluation_job", False),
    ("catalog_job", True),  # after every layer: joins what exists, behind the GE gates
    ("release_job", False),  # pins the first release (ReleaseConfig.name, default demo-v1)
]


def build_defs(lakehouse_root: str | None = None, archive: str | None = None) -> dg.Definitions:
    """All layers with resources pointing at the given lakehouse root and archive."""
    return dg.Definitions.merge(*LAYERS, dg.Definitions(resources=make_resources(lakehouse_root, archive)))


def lineage_path(definitions: dg.Definitions | None = None) -> str:
    """UI path of the global asset lineage with every group (one per layer) expanded.

    Dagster 1.13 opens /asset-groups with the groups collapsed whenever there are several;
    the `expanded` query parameter opens them (group ids "global@global:{group}").
    """
    import urllib.parse

    graph = (definitions if definitions is not None else defs).resolve_asset_graph()
    groups = sorted({n.group_name for n in graph.asset_nodes if n.group_name})
    return "/asset-groups?expanded=" + urllib.parse.quote(",".join(f"global@global:{g}" for g in groups), safe="@:,")


defs = build_defs()
