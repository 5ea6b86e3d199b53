"""The three science-case examples run on a small synthetic lakehouse (parts whose layers are missing skip)."""

import pytest

from desi_assets.storage import catalog as cat
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource
from examples import green_pea_neighbours, green_valley_environment, red_misfits


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    lake = LakehouseResource(root=str(tmp_path_factory.mktemp("examples") / "lake"))
    keys = sc.write_synthetic(lake, [1000, 1001, 1002], per_pixel=40, spectra=True)
    for k in keys:
        lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, [k])), [k])
    return lake.root


def test_green_pea_neighbours(root, tmp_path, capsys):
    res = green_pea_neighbours.main(root, str(tmp_path))
    assert res["seed"] and res["skipped"] == "embeddings"  # no vectors in this lakehouse: said, not crashed
    assert "skipping the neighbour search" in capsys.readouterr().out
    assert (tmp_path / "green_pea_seed.png").exists()


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
