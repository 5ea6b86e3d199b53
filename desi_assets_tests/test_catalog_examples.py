"""The three science-case examples run on a small synthetic lakehouse (parts whose layers are missing skip)."""

import numpy as np
import pytest

import desi_assets.ard as ard
from desi_assets.storage import catalog as cat
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource
from examples import green_pea_neighbours, green_valley_environment, red_misfits


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    lake = LakehouseResource(root=str(tmp_path_factory.mktemp("examples") / "lake"))
    keys = sc.write_synthetic(lake, [1000, 1001, 1002], per_pixel=40, spectra=True)
    _write_vectors(lake, keys)
    for k in keys:
        lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, [k])), [k])
    return lake.root


def _write_vectors(lake, keys):
    """Embeddings whose first axis is the [OIII] EW rank: strong emitters are each other's neighbours."""
    from desi_assets.storage import vectors as vs

    t = lake.read("targets", columns=[c for c in vs.CATALOG_COLUMNS if c != "model_version"])
    ew = lake.read("kinematics_and_lines", columns=["targetid", "ew_oiii_5007"])
    t = t.join(ew, on="targetid").sort("targetid")
    rng = np.random.default_rng(0)
    vec = np.column_stack([np.log1p(t["ew_oiii_5007"].to_numpy()), rng.normal(0, 0.05, (t.height, 7)) + 1.0])
    rows = vs.vector_rows(t, vec.astype(np.float32), None, np.zeros(t.height), "synthetic-1")
    vs.write_partitions(vs.lance_uri(lake.root), vs.table_name("synthetic-1"), rows, keys)
    lake.publish_model(vs.MODEL_POINTER, lake.artifact_dir("models") / "synthetic.pt", "synthetic-1", {})


def test_green_pea_neighbours(root, tmp_path, capsys):
    res = green_pea_neighbours.main(root, str(tmp_path), k=10)
    assert res["neighbours"] == 10
    everyone = np.median(ard.connect(root).query(columns=["ew_oiii_5007"])["ew_oiii_5007"].to_numpy())
    assert res["median_ew_oiii"] > everyone  # neighbours of the strongest emitter are strong emitters
    assert "no mock truth" in capsys.readouterr().out
    assert (tmp_path / "green_pea_seed.png").exists() and (tmp_path / "green_pea_neighbours.png").exists()


def test_catalog_carries_the_embedding_model_version(root):
    assert set(ard.connect(root).query(columns=["embedding_model_version"])["embedding_model_version"]) == {
        "synthetic-1"}


def test_find_similar_delegates_to_the_vector_store(root):
    db = ard.connect(root)
    tid = int(db.query(limit=1)["targetid"][0])
    nb = db.find_similar(targetid=tid, k=5)
    assert nb.height == 5 and tid not in nb["targetid"].to_list() and "distance" in nb.columns
    with pytest.raises(ard.ArdError, match="no vector"):
        db.find_similar(targetid=7, k=5)


def test_green_valley_environment(root, tmp_path, capsys):
    res = green_valley_environment.main(root, str(tmp_path))
    assert res["green_valley"] > 0 and res["compared"] == "hdelta_a"
    assert sum(r["n"] for r in res["by_web_class"]) == res["green_valley"]
    assert "stellar_populations not materialized" in capsys.readouterr().out
    assert (tmp_path / "green_valley_by_web_class.png").exists()


def test_red_misfits(root, tmp_path):
    res = red_misfits.main(root, str(tmp_path))
    assert res["kind"] == "index-against-lines" and 0 <= res["misfits"] <= res["red"]
    assert (tmp_path / "red_misfits_plane.png").exists()


def test_examples_skip_when_layers_are_missing(tmp_path, capsys):
    lake = LakehouseResource(root=str(tmp_path / "bare"))
    keys = sc.write_synthetic(lake, [1000], per_pixel=5, layers=(), spectra=False)
    lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, keys)), keys)
    assert green_valley_environment.main(lake.root, str(tmp_path)) == {"skipped": "dn4000/web_class"}
    assert red_misfits.main(lake.root, str(tmp_path)) == {"skipped": "dn4000"}
    assert green_pea_neighbours.main(lake.root, str(tmp_path)) == {"skipped": "ew_oiii_5007"}
    out = capsys.readouterr().out
    assert "skipping green valley by web_class: no values yet in dn4000, web_class" in out
