"""The anomaly layer through Dagster: asset context, materialize, model versions, idempotency, blocking check.

One small mock (8 pixels at spectra_scale 0.2, ~1,000 spectra) is ingested, preprocessed, scored
and validated once per worker by the session fixture ``anomaly_lake`` (conftest.py).
"""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from desi_assets.defs.anomalies.assets import MODEL_CODE_VERSION, anomaly_model, anomaly_scores, training_set
from desi_assets.defs.anomalies.checks import ALL_CHECKS, training_class_balance
from desi_assets.defs.anomalies.config import AnomalyConfig, ModelConfig, ScoringConfig
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.science.anomaly import fitting, sampling
from desi_assets.science.anomaly.recovery import run_injection
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.models import MODEL_NAME, current_local_model, current_model
from desi_assets.storage.samples import training_fingerprint

CHECK_NAMES = {c.check_key.name for c in ALL_CHECKS}


@pytest.fixture(scope="module")
def lake(anomaly_lake) -> dict:
    return anomaly_lake


def _register(instance, keys):
    instance.add_dynamic_partitions(coadds_partitions.name, [k for k in keys if not instance.has_dynamic_partition(
        coadds_partitions.name, k)])


def _inline_png(value) -> bool:
    return "data:image/png;base64," in getattr(value, "value", value)


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
    # the localised score: finite, located inside the grid
    assert np.isfinite(scores["score_local"].to_numpy()).all() and scores["local_sigma"].min() > 0
    assert scores["local_wave"].is_between(3600, 9825).all() and (scores["arm_step_sigma"] >= 0).all()
    assert scores["local_width_bins"].is_in([1, 2, 3, 5, 8, 13]).all()
    # some flagged, not most: 1 of 1,599 on a 2-core AMD EPYC, at least 2 on earlier machines (float arithmetic)
    assert 0 < scores["is_anomaly_local"].sum() and scores["is_anomaly_local"].mean() < 0.2
    me, cal = current_local_model(lh)
    assert set(me.variance) == {"GALAXY", "QSO", "STAR"} and all(np.all(v >= 0) for v in me.variance.values())
    assert set(cal.box) == set(cal.step) == {"ALL", "GALAXY", "QSO", "STAR"}
    inj = lh.read("injection_results")
    assert set(inj["kind"].unique()) >= {"clean", "bal", "cosmic_ray"} and inj["model_version"].unique().to_list() == [
        version]
    # the training run: config values recorded, loss curve inline beside its full-size file
    meta = lake["model_meta"]
    assert meta["reused"] is False and meta["model_version"] == version
    assert meta["config"]["epochs"] == lake["config"].model.epochs == 20
    assert _inline_png(meta["loss_curve"]) and Path(meta["loss_curve_path"]).exists()


def test_rematerializing_with_unchanged_inputs_reuses_the_model(lake, instance, monkeypatch):
    """Same training-set content + config + code version: same model_version, and nothing is trained."""
    lh = LakehouseResource(root=lake["lake"])
    _, before = current_model(lh)

    def no_training(*args, **kwargs):
        raise AssertionError("anomaly_model retrained although its inputs did not change")

    monkeypatch.setattr(fitting, "fit_anomaly_model", no_training)
    res = dg.materialize([training_set, anomaly_model], instance=instance,
                         resources={"lakehouse": lh, "anomaly_config": lake["config"]})
    ev = res.asset_materializations_for_node("anomaly_model")[0]
    assert ev.metadata["model_version"].value == before and ev.metadata["reused"].value is True
    assert ev.tags["dagster/data_version"] == before  # Dagster's data version is the model version
    ts_ev = res.asset_materializations_for_node("training_set")[0]
    assert ts_ev.tags["dagster/data_version"] == training_fingerprint(lh.read("training_set"))
    assert current_model(lh)[1] == before
    # any change to what determines the model changes its key (so it would be retrained)
    fp = training_fingerprint(lh.read("training_set"))
    cfg = lake["config"]
    other = AnomalyConfig(model=ModelConfig(**(cfg.model.model_dump() | {"epochs": 21})))
    assert len({cfg.training_key(fp, MODEL_CODE_VERSION), other.training_key(fp, MODEL_CODE_VERSION),
                cfg.training_key(fp + "x", MODEL_CODE_VERSION), cfg.training_key(fp, MODEL_CODE_VERSION + "x")}) == 4


def test_anomaly_scores_with_asset_context_and_rematerialize(lake, instance):
    lh = LakehouseResource(root=lake["lake"])
    key = lake["keys"][0]
    _register(instance, lake["keys"])
    before = lh.read("anomaly_scores").height
    # a non-default threshold set on the one config resource reaches the asset
    cfg = AnomalyConfig(scoring=ScoringConfig(threshold=2.5, make_plot=True, gallery_size=3))
    ctx = dg.build_asset_context(partition_key=key, resources={"lakehouse": lh, "anomaly_config": cfg},
                                 instance=instance)
    out = anomaly_scores(ctx)
    n_key = lh.read("preprocessed_spectra", keys=[key], columns=["targetid"]).height
    assert out.metadata["batch_rows"] == n_key > 0 and out.metadata["batch_partitions"] == 1
    assert out.metadata["table_rows"] == before and out.metadata["table_partitions"] == len(lake["keys"])
    assert out.metadata["threshold"] == 2.5 and out.metadata["config"].value["threshold"] == 2.5
    part = lh.read("anomaly_scores", keys=[key])
    assert (part["is_anomaly"] == (part["score"] > 2.5)).all()
    assert out.metadata["batch_anomalies"] == int((part["score"] > 2.5).sum())
    for g in ("gallery", "gallery_local"):  # top anomalies by the seed score and by score_local, inline + PNG
        assert _inline_png(out.metadata[g])
        png = Path(out.metadata[f"{g}_path"].path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    _, version = current_model(lh)
    assert out.metadata["model_version"] == version
    assert part.height == n_key and (part["model_version"] == version).all()
    # a second materialization of the same partition through Dagster keeps the row counts (default threshold)
    res = dg.materialize([anomaly_scores], partition_key=key, instance=instance,
                         resources={"lakehouse": lh, "anomaly_config": AnomalyConfig()},
                         run_config={"resources": {"anomaly_config": {"config": {"scoring": {"make_plot": False}}}}})
    assert res.success
    assert lh.read("anomaly_scores").height == before
    again = lh.read("anomaly_scores", keys=[key])
    assert again["targetid"].sort().to_list() == part["targetid"].sort().to_list()
    assert (again["is_anomaly"] == (again["score"] > 5.0)).all()


def biased_sample(ids: pl.DataFrame, per_class, val_fraction, seed, upsample=True) -> pl.DataFrame:
    """A 50/30/20 GALAXY/QSO/STAR sample (what a broken sampler would produce)."""
    n = 50
    parts = [ids.filter(pl.col("spectype") == c).head(k) for c, k in (("GALAXY", n), ("QSO", 30), ("STAR", 20))]
    return pl.concat(parts).with_columns(split=pl.lit("train"))


def test_blocking_class_balance_stops_training(lake, tmp_path, instance, monkeypatch, clone_lake):
    dst = str(tmp_path / "lake")
    clone_lake(lake["lake"], dst, ["targets", "preprocessed_spectra"])
    monkeypatch.setattr(sampling, "balanced_sample", biased_sample)
    res = dg.materialize([training_set, anomaly_model, training_class_balance], instance=instance,
                         resources={"lakehouse": LakehouseResource(root=dst), "anomaly_config": lake["config"]},
                         raise_on_error=False)
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
        assert trials.height == pre.height + 6 * 3 * (pre.height > 0)  # clean rows + 3 per kind (none: no hosts)
        assert all(np.isfinite(trials[c].to_numpy()).all() for c in ("score", "score_noise_aware", "score_local"))
        seen += t.height
    assert seen > 0
