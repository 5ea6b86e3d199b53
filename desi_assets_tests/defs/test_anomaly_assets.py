"""The anomaly layer through Dagster: asset context, materialize, model versions, idempotency, blocking check.

One small mock (8 pixels at spectra_scale 0.2, ~1,000 spectra) is ingested, preprocessed, scored
and validated once per session by :func:`anomaly_lake` (cached, shared with test_anomaly_checks).
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from desi_assets.defs.anomalies import assets as anomaly_assets
from desi_assets.defs.anomalies.assets import (
    MODEL_NAME,
    ScoringConfig,
    anomaly_injection,
    anomaly_model,
    anomaly_scores,
    current_local_model,
    current_model,
    run_injection,
    training_set,
)
from desi_assets.defs.anomalies.checks import ALL_CHECKS, anomaly_summary, training_class_balance
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource

#: Small training run for tests (1 thread: 2 threads on a shared 2-core box are 5-10x slower).
TEST_MODEL_CONFIG = {"epochs": 20, "patience": 5, "num_threads": 1}
CHECK_NAMES = {c.check_key.name for c in ALL_CHECKS}


def materialize_anomaly_layer(root: Path, survey_config, model_config: dict | None = None,
                              training_config: dict | None = None, injection_config: dict | None = None) -> dict:
    """Write a mock under root, then run ingest, training, scoring and validation with all 9 checks.

    Returns survey/lake paths, partition keys, every check evaluation and the training wall time (s).
    """
    import time

    from desi_assets.definitions import build_defs
    from desi_assets.runner import register_partitions, run_partitioned
    from desi_assets.sources.mock import write_mock_survey
    from desi_assets_tests.conftest import survey_keys

    torch.set_num_threads(1)
    survey, lake = root / "survey", root / "lake"
    write_mock_survey(survey, survey_config)
    keys = survey_keys(survey)
    defs = build_defs(str(lake), str(survey))
    ops = {name: {"config": cfg} for name, cfg in (("anomaly_model", model_config), ("training_set", training_config),
                                                  ("anomaly_injection", injection_config)) if cfg}
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as inst:
        register_partitions(inst, keys)
        assert not run_partitioned(defs, "coadd_job", keys, inst).failed
        t0 = time.perf_counter()
        res = dg.materialize([training_set, anomaly_model, training_class_balance], instance=inst,
                             resources=defs.resources,
                             run_config={"ops": {k: v for k, v in ops.items() if k != "anomaly_injection"}})
        train_s = time.perf_counter() - t0
        evaluations = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert not run_partitioned(defs, "anomaly_scores_job", keys, inst).failed
        res = dg.materialize([anomaly_summary, anomaly_injection, *ALL_CHECKS[1:]], instance=inst,
                             resources=defs.resources,
                             run_config={"ops": {k: v for k, v in ops.items() if k == "anomaly_injection"}})
        evaluations |= {e.check_name: e for e in res.get_asset_check_evaluations()}
    return {"survey": survey, "lake": str(lake), "keys": keys, "evaluations": evaluations, "train_seconds": train_s}


@functools.lru_cache(maxsize=1)
def anomaly_lake() -> dict:
    """Mock survey + lakehouse with the whole anomaly layer materialized (built once per process)."""
    from desi_assets.sources.mock import MockSurveyConfig

    root = Path(tempfile.mkdtemp(prefix="desi-ard-anomaly-"))
    atexit.register(shutil.rmtree, root, True)
    built = materialize_anomaly_layer(root, MockSurveyConfig(n_pixels=8, seed=7, spectra_scale=0.2),
                                      model_config=TEST_MODEL_CONFIG, training_config={"per_class": 400},
                                      injection_config={"per_kind": 100})
    built["checks"] = {name: e.passed for name, e in built.pop("evaluations").items()}
    return built


@pytest.fixture(scope="module")
def lake() -> dict:
    return anomaly_lake()


def _register(instance, keys):
    instance.add_dynamic_partitions(coadds_partitions.name, [k for k in keys if not instance.has_dynamic_partition(
        coadds_partitions.name, k)])


def test_materialized_layer_records_model_version_and_runs_every_check(lake):
    lh = LakehouseResource(root=lake["lake"])
    _, version = current_model(lh)
    scores = lh.read("anomaly_scores")
    pre = lh.read("preprocessed_spectra", columns=["coadd_key", "targetid"])
    assert scores.height == pre.height > 500
    assert scores["model_version"].null_count() == 0 and scores["model_version"].unique().to_list() == [version]
    assert set(scores["coadd_key"].unique()) == set(lake["keys"])
    assert set(lake["checks"]) == CHECK_NAMES  # all nine controls ran in the materialize runs
    assert lake["checks"]["training_class_balance"]
    pointer = lh.current_model(MODEL_NAME)
    assert pointer["version"] == version and np.isfinite(pointer["noise_aware_threshold"])
    assert pointer["local_threshold"] > 1.0  # above the clean 90th percentile it is scaled by
    # the localised score: finite, located inside the grid, ~1% flagged like its calibration
    assert np.isfinite(scores["score_local"].to_numpy()).all() and scores["local_sigma"].min() > 0
    assert scores["local_wave"].is_between(3600, 9825).all() and (scores["arm_step_sigma"] >= 0).all()
    assert scores["local_width_bins"].is_in([1, 2, 3, 5, 8, 13]).all()
    assert 0.001 < scores["is_anomaly_local"].mean() < 0.2
    me, cal = current_local_model(lh)
    assert set(me.variance) == {"GALAXY", "QSO", "STAR"} and all(np.all(v >= 0) for v in me.variance.values())
    assert set(cal.box) == set(cal.step) == {"ALL", "GALAXY", "QSO", "STAR"}
    inj = lh.read("injection_results")
    assert set(inj["kind"].unique()) >= {"clean", "bal", "cosmic_ray"} and inj["model_version"].unique().to_list() == [
        version]


def test_anomaly_scores_with_asset_context_and_rematerialize(lake, instance):
    lh = LakehouseResource(root=lake["lake"])
    key = lake["keys"][0]
    _register(instance, lake["keys"])
    before = lh.read("anomaly_scores").height
    resources = {"lakehouse": lh}
    ctx = dg.build_asset_context(partition_key=key, resources=resources, instance=instance)
    out = anomaly_scores(ctx, ScoringConfig(make_plot=True, gallery_size=3))
    n_key = lh.read("preprocessed_spectra", keys=[key], columns=["targetid"]).height
    assert out.metadata["rows"] == n_key > 0
    for g in ("gallery", "gallery_local"):  # top anomalies by the seed score and by score_local, as PNGs
        png = Path(out.metadata[g].path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    _, version = current_model(lh)
    assert out.metadata["model_version"] == version
    part = lh.read("anomaly_scores", keys=[key])
    assert part.height == n_key and (part["model_version"] == version).all()
    # a second materialization of the same partition through Dagster keeps the row counts
    res = dg.materialize([anomaly_scores], partition_key=key, resources=resources, instance=instance,
                         run_config={"ops": {"anomaly_scores": {"config": {"make_plot": False}}}})
    assert res.success
    assert lh.read("anomaly_scores").height == before
    assert lh.read("anomaly_scores", keys=[key])["targetid"].sort().to_list() == part["targetid"].sort().to_list()


def _clone(src: str, dst: str, tables) -> LakehouseResource:
    """Copy some tables (and the model pointer) of one lakehouse into another."""
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


def biased_sample(ids: pl.DataFrame, per_class, val_fraction, seed, upsample=True) -> pl.DataFrame:
    """A 50/30/20 GALAXY/QSO/STAR sample (what a broken sampler would produce)."""
    n = 50
    parts = [ids.filter(pl.col("spectype") == c).head(k) for c, k in (("GALAXY", n), ("QSO", 30), ("STAR", 20))]
    return pl.concat(parts).with_columns(split=pl.lit("train"))


def test_blocking_class_balance_stops_training(lake, tmp_path, instance, monkeypatch):
    dst = str(tmp_path / "lake")
    _clone(lake["lake"], dst, ["targets", "preprocessed_spectra"])
    monkeypatch.setattr(anomaly_assets, "balanced_sample", biased_sample)
    res = dg.materialize([training_set, anomaly_model, training_class_balance], instance=instance,
                         resources={"lakehouse": LakehouseResource(root=dst)}, raise_on_error=False,
                         run_config={"ops": {"anomaly_model": {"config": TEST_MODEL_CONFIG}}})
    ev = res.get_asset_check_evaluations()
    assert len(ev) == 1 and not ev[0].passed
    assert ev[0].metadata["frac_galaxy"].value == pytest.approx(0.5)
    materialized = {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
    assert materialized == {"training_set"}  # anomaly_model did not run: the blocking check failed


REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "desi-real"


@pytest.mark.skipif(not REAL.exists(), reason="shared/data/desi-real not present")
def test_real_spectra_are_scored_or_excluded_with_a_reason(lake, tmp_path):
    """loa + iron + fuji coadds scored with the small-mock model: no crash, nobody silently dropped."""
    from desi_assets.definitions import build_defs
    from desi_assets.runner import register_partitions, run_partitioned
    from desi_assets.sources.archives import LocalArchive

    src = LakehouseResource(root=lake["lake"]).current_model(MODEL_NAME)
    seen = 0
    for prod in ("loa", "iron", "fuji"):
        if not (REAL / prod).exists():
            continue
        root = tmp_path / prod
        lh = LakehouseResource(root=str(root / "lake"))
        lh.publish_model(MODEL_NAME, Path(src["path"]), src["version"],
                         {k: v for k, v in src.items() if k not in ("name", "version", "path")})
        keys = [e.key for e in LocalArchive(root=str(REAL / prod)).list_entries()]
        defs = build_defs(str(root / "lake"), str(REAL / prod))
        (root / "dagster").mkdir(parents=True)
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as inst:
            register_partitions(inst, keys)
            run_partitioned(defs, "coadd_job", keys, inst)  # unreadable files go to ingest_errors
            ok = lh.read("targets")["coadd_key"].unique().to_list() if lh.exists("targets") else []
            if ok:
                assert not run_partitioned(defs, "anomaly_scores_job", ok, inst).failed
        if not ok:
            continue
        t = lh.read("targets", columns=["coadd_key", "targetid", "usable", "quality_reason"])
        s = lh.read("anomaly_scores", columns=["coadd_key", "targetid", "score", "score_noise_aware",
                                               "score_local", "model_version"])
        scored = t.join(s, on=["coadd_key", "targetid"], how="left")
        excluded = scored.filter(pl.col("score").is_null())
        assert (~excluded["usable"]).all() and (excluded["quality_reason"] != "OK").all(), excluded
        assert excluded["quality_reason"].null_count() == 0
        got = scored.filter(pl.col("score").is_not_null())
        assert got["usable"].all()
        assert np.isfinite(got["score"].to_numpy()).all() and np.isfinite(got["score_noise_aware"].to_numpy()).all()
        assert np.isfinite(got["score_local"].to_numpy()).all()
        assert (got["model_version"] == src["version"]).all()
        # injection/recovery runs on the usable real spectra only, with a finite score for every trial
        pre = lh.read("preprocessed_spectra", columns=["coadd_key", "targetid", "flux", "ivar", "masked_frac"]).join(
            lh.read("targets", columns=["coadd_key", "targetid", "spectype", "z"]), on=["coadd_key", "targetid"])
        assert set(pre["targetid"]) == set(got["targetid"])
        trials = run_injection(to_numpy_2d(pre["flux"]), to_numpy_2d(pre["ivar"]), pre["z"].fill_null(0.0).to_numpy(),
                               pre["spectype"].fill_null("").to_numpy(), current_model(lh)[0], 3, 0,
                               to_numpy_2d(pre["masked_frac"]), current_local_model(lh))
        assert trials.height == pre.height + 6 * 3  # clean rows + 3 trials per kind
        assert all(np.isfinite(trials[c].to_numpy()).all() for c in ("score", "score_noise_aware", "score_local"))
        seen += t.height
    assert seen > 0
