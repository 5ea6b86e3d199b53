"""Shared fixtures: a small mock DESI survey (written once per session) and temporary lakehouses."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DESI_REAL = SHARED_DATA / "desi-real"


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """4 mock pixels at 10% of DESI density (~200 spectra), seed 7."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    root = tmp_path_factory.mktemp("survey")
    write_mock_survey(root, MockSurveyConfig(n_pixels=4, seed=7, spectra_scale=0.1))
    return root


@pytest.fixture
def survey_copy(small_survey, tmp_path) -> Path:
    """A private copy of the small survey that a test may damage."""
    dst = tmp_path / "archive"
    shutil.copytree(small_survey, dst)
    return dst


@pytest.fixture
def lakehouse_root(tmp_path) -> str:
    """An empty lakehouse root."""
    return str(tmp_path / "lakehouse")


@pytest.fixture
def instance(tmp_path):
    """A persistent Dagster instance in a temp dir (multiprocess runs need one)."""
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def survey_keys(root: Path) -> list[str]:
    """Partition keys of every coadd under root, in archive order."""
    from desi_assets.sources.archives import LocalArchive

    return [e.key for e in LocalArchive(root=str(root)).list_entries()]


# ------------------------------------------------------------------ the anomaly layer, built once per worker
def materialize_anomaly_layer(root: Path, survey_config, anomaly_config=None) -> dict:
    """Write a mock under root, then run ingest, training, scoring and validation with all 9 checks.

    Returns survey/lake paths, partition keys, every check evaluation, the training wall time (s),
    the AnomalyConfig used and the training run's anomaly_model materialization metadata.
    """
    import time

    import torch

    from desi_assets.definitions import build_defs
    from desi_assets.defs.anomalies.assets import anomaly_injection, anomaly_model, training_set
    from desi_assets.defs.anomalies.checks import ALL_CHECKS, anomaly_summary, training_class_balance
    from desi_assets.defs.anomalies.config import AnomalyConfig
    from desi_assets.runner import register_partitions, run_partitioned
    from desi_assets.sources.mock import write_mock_survey

    torch.set_num_threads(1)
    cfg = anomaly_config or AnomalyConfig()
    survey, lake = root / "survey", root / "lake"
    write_mock_survey(survey, survey_config)
    keys = survey_keys(survey)
    defs = build_defs(str(lake), str(survey))
    resources = dict(defs.resources) | {"anomaly_config": cfg}
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as inst:
        register_partitions(inst, keys)
        assert not run_partitioned(defs, "coadd_job", keys, inst).failed
        t0 = time.perf_counter()
        res = dg.materialize([training_set, anomaly_model, training_class_balance], instance=inst, resources=resources)
        train_s = time.perf_counter() - t0
        model_meta = {k: getattr(v, "value", v) for k, v in
                      res.asset_materializations_for_node("anomaly_model")[0].metadata.items()}
        evaluations = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert not run_partitioned(defs, "anomaly_scores_job", keys, inst).failed
        res = dg.materialize([anomaly_summary, anomaly_injection, *ALL_CHECKS[1:]], instance=inst, resources=resources)
        evaluations |= {e.check_name: e for e in res.get_asset_check_evaluations()}
    return {"survey": survey, "lake": str(lake), "keys": keys, "evaluations": evaluations, "train_seconds": train_s,
            "config": cfg, "model_meta": model_meta}


def small_anomaly_config():
    """A short training run for tests (1 thread: 2 threads on a shared 2-core box are 5-10x slower)."""
    from desi_assets.defs.anomalies.config import AnomalyConfig, InjectionConfig, ModelConfig, TrainingSetConfig

    return AnomalyConfig(model=ModelConfig(epochs=20, patience=5, num_threads=1),
                         training_set=TrainingSetConfig(per_class=400), injection=InjectionConfig(per_kind=100))


@pytest.fixture(scope="session")
def anomaly_lake(tmp_path_factory) -> dict:
    """Small mock (8 pixels at scale 0.3, ~1,500 spectra) with the whole anomaly layer materialized, once per worker."""
    from desi_assets.sources.mock import MockSurveyConfig

    built = materialize_anomaly_layer(tmp_path_factory.mktemp("anomaly"),
                                      MockSurveyConfig(n_pixels=8, seed=7, spectra_scale=0.3), small_anomaly_config())
    built["checks"] = {name: e.passed for name, e in built.pop("evaluations").items()}
    return built


@pytest.fixture
def clone_lake():
    """clone(src_root, dst_root, tables): copy some tables (and the model pointer) of a lakehouse into another."""
    from desi_assets.storage.lakehouse import LakehouseResource
    from desi_assets.storage.models import MODEL_NAME

    def clone(src: str, dst: str, tables):
        a, b = LakehouseResource(root=src), LakehouseResource(root=dst)
        for t in tables:
            df = a.read(t)
            if t in ("training_set", "injection_results"):
                b.overwrite(t, df)
            else:
                b.write_partitions(t, df, df["coadd_key"].unique().to_list())
        p = a.current_model(MODEL_NAME)
        b.publish_model(MODEL_NAME, Path(p["path"]), p["version"], {k: v for k, v in p.items()
                                                                     if k not in ("name", "version", "path")})
        return b
    return clone


@pytest.fixture
def build_anomaly_layer():
    """materialize_anomaly_layer(root, survey_config, anomaly_config=None), for tests that build their own layer."""
    return materialize_anomaly_layer
