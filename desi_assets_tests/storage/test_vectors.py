"""LanceDB vector store: idempotent partition writes, find_similar with filters, index choice by recall."""

import numpy as np
import polars as pl
import pytest

from desi_assets.storage import vectors as vs


def rows(key: str, ids: np.ndarray, seed: int, dim: int = 8):
    rng = np.random.default_rng(seed)
    n = len(ids)
    cat = pl.DataFrame({"targetid": ids, "coadd_key": [key] * n, "healpix": [7] * n, "survey": ["main"] * n,
                        "program": ["dark"] * n, "spectype": np.where(ids % 2 == 0, "GALAXY", "QSO"),
                        "z": (ids % 10) / 10.0})
    return vs.vector_rows(cat, rng.normal(size=(n, dim)), rng.normal(size=(n, vs.LATENT_DIM)), np.ones(n), "v1")


def test_partition_writes_are_idempotent_and_scoped(tmp_path):
    uri = vs.lance_uri(str(tmp_path))
    vs.write_partitions(uri, "t", rows("a", np.arange(0, 50), 0), ["a"])
    vs.write_partitions(uri, "t", rows("b", np.arange(100, 130), 1), ["b"])
    before_b = vs.read_vectors(uri, "t", where="coadd_key = 'b'").sort("targetid")
    vs.write_partitions(uri, "t", rows("a", np.arange(0, 50), 0), ["a"])  # same rows again: no change
    vs.write_partitions(uri, "t", rows("a", np.arange(0, 40), 2), ["a"])  # fewer rows, new vectors
    got = vs.read_vectors(uri, "t")
    assert got.group_by("coadd_key").len().sort("coadd_key")["len"].to_list() == [40, 30]
    assert got["targetid"].n_unique() == 70
    assert vs.read_vectors(uri, "t", where="coadd_key = 'b'").sort("targetid").equals(before_b)
    new_a = vs.read_vectors(uri, "t", ["targetid", "vector"], "coadd_key = 'a'").sort("targetid")
    np.testing.assert_allclose(np.stack(new_a["vector"].to_numpy()), np.stack(
        pl.from_arrow(rows("a", np.arange(0, 40), 2)).sort("targetid")["vector"].to_numpy()), rtol=1e-6)
    vs.write_partitions(uri, "t", rows("b", np.arange(0), 3), ["b"])  # partition now empty
    assert vs.read_vectors(uri, "t")["coadd_key"].unique().to_list() == ["a"]


def test_find_similar_filters_and_excludes_query(tmp_path):
    uri = vs.lance_uri(str(tmp_path))
    r = rows("a", np.arange(0, 60), 0)
    vs.write_partitions(uri, "t", r, ["a"])
    out = vs.find_similar(uri, "t", 4, k=5)
    assert out.height == 5 and 4 not in out["targetid"].to_list()
    assert out["distance"].is_sorted()
    assert {"spectype", "z", "coadd_key"} <= set(out.columns)
    f = vs.find_similar(uri, "t", 4, k=5, where="spectype = 'GALAXY' AND z < 0.5")
    assert (f["spectype"] == "GALAXY").all() and (f["z"] < 0.5).all()
    vec = np.asarray(pl.from_arrow(r).filter(pl.col("targetid") == 4)["vector"][0])
    assert vs.find_similar(uri, "t", vec, k=1)["targetid"][0] == 4  # a vector query finds itself
    lat = vs.find_similar(uri, "t", 4, k=3, column=vs.LATENT)
    assert lat.height == 3
    with pytest.raises(KeyError, match="no vector"):
        vs.find_similar(uri, "t", 999, k=3)
    with pytest.raises(FileNotFoundError, match="spectral_embeddings"):
        vs.find_similar(uri, "missing", 4)


def test_non_finite_vectors_refused():
    cat = pl.DataFrame({"targetid": [1], "coadd_key": ["a"], "healpix": [1], "survey": ["m"], "program": ["d"],
                        "spectype": ["QSO"], "z": [1.0]})
    with pytest.raises(ValueError, match="non-finite"):
        vs.vector_rows(cat, np.array([[np.nan, 1.0]]), None, np.ones(1), "v")


def test_choose_index_measures_recall(tmp_path):
    uri = vs.lance_uri(str(tmp_path))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 8))
    n = 3000
    ids = np.arange(n)
    cat = pl.DataFrame({"targetid": ids, "coadd_key": ["a"] * n, "healpix": [1] * n, "survey": ["m"] * n,
                        "program": ["d"] * n, "spectype": ["GALAXY"] * n, "z": np.zeros(n)})
    vecs = centres[ids % 8] + 0.3 * rng.normal(size=(n, 8))
    vs.write_partitions(uri, "t", vs.vector_rows(cat, vecs, None, np.ones(n), "v"), ["a"])
    tbl = vs.open_table(uri, "t")
    small = vs.choose_index(tbl, min_rows=10_000, n_queries=5)
    assert small["choice"] is None and "no index" in small["decision"]
    rep = vs.choose_index(tbl, min_rows=1000, n_queries=10,
                          candidates=[vs.IndexChoice("IVF_FLAT", 8, nprobes=8, refine_factor=None)])
    assert rep["tried"][0]["recall@10"] >= 0.95 and rep["choice"]["index_type"] == "IVF_FLAT"


def test_concurrent_partition_writes_all_land(tmp_path):
    """Parallel runs write different partitions of one table: every partition lands once."""
    from concurrent.futures import ThreadPoolExecutor

    uri = vs.lance_uri(str(tmp_path))
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda i: vs.write_partitions(uri, "t", rows(f"k{i}", np.arange(i * 100, i * 100 + 20), i),
                                                  [f"k{i}"]), range(8)))
    got = vs.read_vectors(uri, "t", ["coadd_key", "targetid"])
    assert got.height == 160 and got["coadd_key"].n_unique() == 8
