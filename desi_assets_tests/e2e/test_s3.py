"""The lakehouse on S3: ingest, training and anomaly scoring into s3://…, read back with Polars, re-run idempotently.

A local S3 server (`moto_server` from the `s3` extra, bound to 127.0.0.1) stands in for the cloud;
deltalake and Polars reach it through the standard AWS_* variables (STACK-NOTES, "Beyond one
machine"): no locking provider, commits are conditional writes. Delta tables live under
s3://bucket/lake/delta/…; model files and plots stay on the resource's local `artifacts_dir`.
Skipped where moto_server is not installed or does not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from desi_assets_tests.conftest import survey_keys

BUCKET = "desi-ard-test"
ROOT = f"s3://{BUCKET}/lake"
SERVER_START_S = 30.0
MOTO_SERVER = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
TABLES = ["targets", "spectra", "preprocessed_spectra", "anomaly_scores"]
S3_ENV = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_survey(tmp_path_factory) -> Path:
    """3 mock pixels at 25% of DESI density: enough QSOs (>= 10) for a balanced training set."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    root = tmp_path_factory.mktemp("s3survey")
    write_mock_survey(root, MockSurveyConfig(n_pixels=3, seed=7, spectra_scale=0.25))
    return root


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket, and the AWS_* environment pointing at it."""
    if not Path(MOTO_SERVER).exists():
        pytest.skip("moto_server not installed (pip install -e '.[s3]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"moto_server did not start: {log.read_text()[-1000:]}")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in zip(S3_ENV, [endpoint, "testing", "testing", "us-east-1", "true"]):
                mp.setenv(k, v)
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10).close()
            yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _s3_defs(survey: Path, artifacts: Path) -> dg.Definitions:
    """Every layer, with the lakehouse on S3 and its models/plots in a local artifacts dir."""
    from desi_assets.definitions import LAYERS
    from desi_assets.defs.resources import make_resources
    from desi_assets.storage.lakehouse import LakehouseResource

    resources = make_resources(ROOT, str(survey)) | {
        "lakehouse": LakehouseResource(root=ROOT, artifacts_dir=str(artifacts))}
    return dg.Definitions.merge(*LAYERS, dg.Definitions(resources=resources))


def _objects(endpoint: str) -> list[str]:
    """Keys of every object in the bucket (S3 ListObjects XML, first 1,000)."""
    import re

    with urllib.request.urlopen(f"{endpoint}/{BUCKET}?list-type=2", timeout=10) as r:
        return re.findall(r"<Key>([^<]+)</Key>", r.read().decode())


def test_ingest_and_scoring_on_s3_read_back_and_rerun_idempotently(s3_env, s3_survey, tmp_path):
    import torch

    from desi_assets.defs.anomalies.assets import anomaly_model, training_set
    from desi_assets.defs.anomalies.config import AnomalyConfig, InjectionConfig, ModelConfig, TrainingSetConfig
    from desi_assets.runner import register_partitions, run_partitioned
    from desi_assets.storage.lakehouse import LakehouseResource

    torch.set_num_threads(1)
    keys = survey_keys(s3_survey)
    defs = _s3_defs(s3_survey, tmp_path / "artifacts")
    cfg = AnomalyConfig(model=ModelConfig(epochs=3, patience=2, num_threads=1),
                        training_set=TrainingSetConfig(per_class=100), injection=InjectionConfig(per_kind=20))
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        register_partitions(inst, keys)
        assert not run_partitioned(defs, "coadd_job", keys, inst).failed
        res = dg.materialize([training_set, anomaly_model], instance=inst,
                             resources=dict(defs.resources) | {"anomaly_config": cfg})
        assert res.success
        assert not run_partitioned(defs, "anomaly_scores_job", keys, inst).failed

        # the tables are on the server, not on local disk, and Polars reads them with the AWS_* environment
        stored = _objects(s3_env)
        assert all(any(o.startswith(f"lake/delta/{t}/_delta_log/") for o in stored) for t in TABLES), stored[:20]
        assert not (Path.cwd() / "s3:").exists()
        frames = {t: pl.read_delta(f"{ROOT}/delta/{t}") for t in TABLES}
        counts = {t: df.height for t, df in frames.items()}
        usable = int(frames["targets"]["usable"].sum())
        assert counts["targets"] == counts["spectra"] > 0
        assert counts["preprocessed_spectra"] == counts["anomaly_scores"] == usable > 0
        assert set(frames["anomaly_scores"]["coadd_key"].unique()) == set(keys)
        assert frames["anomaly_scores"]["model_version"].null_count() == 0
        assert LakehouseResource(root=ROOT).read("targets", keys=[keys[0]]).height == \
            frames["targets"].filter(pl.col("coadd_key") == keys[0]).height
        # models and plots stayed in the local artifacts dir
        assert any((tmp_path / "artifacts" / "models").iterdir())

        # re-running one partition replaces its rows: every table's count is unchanged
        again = keys[1]
        assert not run_partitioned(defs, "coadd_job", [again], inst).failed
        assert not run_partitioned(defs, "anomaly_scores_job", [again], inst).failed
        after = {t: pl.read_delta(f"{ROOT}/delta/{t}").height for t in TABLES}
        assert after == counts
        per_key = pl.read_delta(f"{ROOT}/delta/targets").group_by("coadd_key").len()
        assert per_key.height == len(keys)

    # the same lakehouse through the resource's storage_options alone (no AWS_* in the environment)
    options = {k: os.environ[k] for k in S3_ENV}
    with pytest.MonkeyPatch.context() as mp:
        for k in S3_ENV:
            mp.delenv(k)
        lh = LakehouseResource(root=ROOT, storage_options=options, artifacts_dir=str(tmp_path / "artifacts"))
        part = lh.read("targets", keys=[again])
        assert lh.write_partitions("targets", part, [again]) == part.height
        assert lh.scan("targets").select(pl.len()).collect().item() == counts["targets"]
