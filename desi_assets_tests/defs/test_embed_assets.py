"""The embedding layer through Dagster on a temporary lakehouse: train, embed (idempotent), index, evaluate,
find_similar from Python and the CLI; the real DESI spectra embed or are refused with a reason."""

import functools
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from desi_assets.defs.embeddings.assets import embedding_evaluation, embedding_index, embedding_model, \
    spectral_embeddings
from desi_assets.storage import vectors as vs
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import DESI_REAL

#: Tiny training for tests: a few hundred spectra, 2 epochs, 2-fold evaluation.
TEST_CONFIG = {"max_train_spectra": 80, "epochs": 1, "num_threads": 1, "eval_folds": 2, "index_queries": 5}


@functools.lru_cache(maxsize=1)
def embed_lake() -> dict:
    """A small mock (4 pixels at spectra_scale 0.2) ingested, sampled, then embedded through Dagster (cached)."""
    from desi_assets.definitions import build_defs
    from desi_assets.runner import register_partitions, run_partitioned
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey
    from desi_assets_tests.conftest import survey_keys

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="embed-lake-"))
    survey, lake = root / "survey", root / "lake"
    write_mock_survey(survey, MockSurveyConfig(n_pixels=4, seed=7, spectra_scale=0.2))
    keys = survey_keys(survey)
    defs = build_defs(str(lake), str(survey))
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as inst:
        register_partitions(inst, keys)
        assert not run_partitioned(defs, "coadd_job", keys, inst).failed
        cfg = {"ops": {"embedding_model": {"config": TEST_CONFIG}}}
        from desi_assets.defs.anomalies.assets import training_set

        res = dg.materialize([training_set, embedding_model], instance=inst,
                             resources=defs.resources, run_config=cfg)
        assert res.success
        model_meta = res.asset_materializations_for_node("embedding_model")[0].metadata
        emb = dg.materialize([spectral_embeddings], instance=inst, resources=defs.resources,
                             tags={"dagster/asset_partition_range_start": keys[0],
                                   "dagster/asset_partition_range_end": keys[-1]},
                             run_config={"ops": {"spectral_embeddings": {"config": TEST_CONFIG}}})
        assert emb.success
    return {"root": root, "lake": str(lake), "keys": keys, "model_meta": model_meta, "resources": defs.resources}


@pytest.fixture(scope="module")
def lake():
    d = embed_lake()
    yield d
    shutil.rmtree(d["root"], ignore_errors=True)
    embed_lake.cache_clear()


def test_embedding_model_metadata(lake):
    m = lake["model_meta"]
    assert m["parameters"].value > 10_000 and m["training_seconds"].value > 0
    assert m["training_set_version"].value is not None
    assert "data:image/png;base64," in m["loss_curve"].value  # inline loss curve
    assert Path(m["path"].path).exists() and m["model_version"].value in m["path"].path
    pointer = LakehouseResource(root=lake["lake"]).current_model(vs.MODEL_POINTER)
    assert pointer["version"] == m["model_version"].value


def test_spectral_embeddings_rows_and_idempotent_rematerialize(lake, instance):
    lh = LakehouseResource(root=lake["lake"])
    uri, name, _ = vs.current_table(lh)
    rows = vs.read_vectors(uri, name, ["coadd_key", "targetid", "vector", "spectype", "model_version"])
    n_pre = lh.read("preprocessed_spectra", columns=["targetid"]).height
    assert rows.height == n_pre > 100  # one row per usable spectrum (mock spectra are all embeddable)
    assert rows.select("coadd_key", "targetid").is_unique().all()
    assert np.isfinite(np.stack(rows["vector"].to_numpy())).all()
    key = lake["keys"][0]
    instance.add_dynamic_partitions("coadds", lake["keys"])
    before = rows.filter(rows["coadd_key"] != key).sort("targetid")
    ctx = dg.build_asset_context(partition_key=key, resources={"lakehouse": lh}, instance=instance)
    out = spectral_embeddings(ctx, vs_config())
    assert out.metadata["batch_rows"] == lh.read("preprocessed_spectra", keys=[key], columns=["targetid"]).height
    again = vs.read_vectors(uri, name, ["coadd_key", "targetid", "vector", "spectype", "model_version"])
    assert again.height == rows.height
    assert again.filter(again["coadd_key"] != key).sort("targetid").equals(before)  # other partitions untouched


def vs_config():
    from desi_assets.defs.embeddings.config import EmbeddingConfig

    return EmbeddingConfig(**TEST_CONFIG)


def test_index_and_evaluation_assets(lake, instance):
    res = dg.materialize([embedding_index, embedding_evaluation], instance=instance, resources=lake["resources"],
                         run_config={"ops": {k: {"config": TEST_CONFIG} for k in ("embedding_index",
                                                                                  "embedding_evaluation")}})
    assert res.success
    idx = res.asset_materializations_for_node("embedding_index")[0].metadata
    assert "no index" in idx["decision"].value  # a demo-sized table is scanned exactly
    ev = res.asset_materializations_for_node("embedding_evaluation")[0].metadata
    scores = ev["scores"].value
    assert set(scores) == {"transformer", "bigae_latent", "raw_flux_496", "pca32_flux"} or \
        set(scores) == {"transformer", "raw_flux_496", "pca32_flux"}
    acc = scores["transformer"]["all"]["probe_accuracy"]["mean"]
    assert 0.3 < acc <= 1.0
    assert "| probe accuracy |" in ev["summary"].value
    assert "data:image/png;base64," in ev["map"].value


def test_find_similar_python_and_cli(lake, capsys):
    from desi_assets.cli import main

    lh = LakehouseResource(root=lake["lake"])
    uri, name, _ = vs.current_table(lh)
    tid = int(vs.read_vectors(uri, name, ["targetid"])["targetid"][0])
    out = vs.find_similar_in_lakehouse(lh, tid, k=5, where="spectype = 'GALAXY'")
    assert out.height == 5 and (out["spectype"] == "GALAXY").all() and tid not in out["targetid"].to_list()
    assert main(["similar", str(tid), "-k", "3", "--lakehouse", lake["lake"]]) == 0
    printed = capsys.readouterr().out
    assert "distance" in printed and "spectype" in printed
    assert main(["similar", "12345", "--lakehouse", lake["lake"]]) == 1


@pytest.mark.skipif(not DESI_REAL.exists(), reason="../shared/data/desi-real not present")
def test_real_desi_spectra_embed_or_refuse(lake):
    """Every real coadd in desi-real: usable spectra get a finite vector, broken fibres a refusal reason."""
    from desi_assets.science.embeddings.train import embed_arms
    from desi_assets.sources.reader import read_coadd

    model, _ = vs.load_current_model(LakehouseResource(root=lake["lake"]))
    embedded, refused = 0, []
    for path in sorted(DESI_REAL.rglob("coadd-*.fits")):
        cf = read_coadd(path, require_all_arms=False)
        arms = {a: (d.flux, d.ivar, d.mask) for a, d in cf.arms.items()}
        vec, chi2, codes = embed_arms(model, arms)
        assert np.isfinite(vec).all()
        assert np.isfinite(chi2[codes == 0]).all()
        embedded += int((codes == 0).sum())
        refused += [int(c) for c in codes if c]
    assert embedded >= 10  # the iron galaxy, the loa emitter, the fuji QSOs
    assert refused and all(c in (1, 2, 3) for c in refused)  # the broken fuji fibres (all-zero flux and ivar)
