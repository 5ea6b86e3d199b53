"""The ard consumer API and its CLI: queries (seed syntax, Polars, SQL), cone, spectra, plots, clear errors."""

import healpy as hp
import numpy as np
import polars as pl
import pytest

import desi_assets.ard as ard
from desi_assets.cli import main
from desi_assets.storage import catalog as cat
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource

PIXELS = [1000, 1001, 1003, 2500]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    lake = LakehouseResource(root=str(tmp_path_factory.mktemp("ard") / "lake"))
    keys = sc.write_synthetic(lake, PIXELS, per_pixel=25)
    for k in keys:
        lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, [k])), [k])
    return lake.root


@pytest.fixture
def db(root):
    return ard.connect(root)


def test_seed_syntax_polars_and_sql_agree(db):
    full = db.query()
    assert full.height == 100
    a = db.query("dn4000 > 1.5 and web_class == 0 and snr_median > 3", columns=["targetid"])
    b = db.query((pl.col("dn4000") > 1.5) & (pl.col("web_class") == 0) & (pl.col("snr_median") > 3),
                 columns=["targetid"])
    c = db.query("SELECT targetid FROM catalog WHERE dn4000 > 1.5 AND web_class = 0 AND snr_median > 3")
    want = full.filter((pl.col("dn4000") > 1.5) & (pl.col("web_class") == 0) & (pl.col("snr_median") > 3))
    assert 0 < a.height < 100
    assert sorted(a["targetid"]) == sorted(b["targetid"]) == sorted(c["targetid"]) == sorted(want["targetid"])
    assert db.query("z > 0.1", limit=3).height == 3
    assert isinstance(db.query("z > 0.1", lazy=True), pl.LazyFrame)


def test_healpix_filter_prunes_to_its_group_and_keeps_the_answer(db):
    got = db.query("healpix == 2500")
    assert got.height == 25 and set(got["hpxgroup"]) == {25}
    assert db.query("healpix in (1000, 1003)").height == 50


def test_cone_matches_brute_force(db):
    full = db.query()
    ra0, dec0 = hp.pix2ang(64, 1001, nest=True, lonlat=True)
    r = 0.6
    got = db.cone(ra0, dec0, r)
    v0 = hp.ang2vec(ra0, dec0, lonlat=True)
    sep = np.degrees(np.arccos(np.clip(hp.ang2vec(full["ra"].to_numpy(), full["dec"].to_numpy(), lonlat=True) @ v0,
                                       -1, 1)))
    assert 0 < got.height < full.height
    assert sorted(got["targetid"]) == sorted(full.filter(pl.Series(sep <= r))["targetid"])
    assert (np.diff(got["separation_deg"].to_numpy()) >= 0).all()


@pytest.mark.parametrize("expr, msg", [("z >> 2", "cannot parse expression"),
                                       ("zz > 1", r"unknown column\(s\) 'zz' \(did you mean z"),
                                       ("logmas_p50 > 11", "did you mean logmass_p50")])
def test_bad_expressions_and_unknown_columns_are_clear(db, expr, msg):
    with pytest.raises(ard.ArdError, match=msg):
        db.query(expr)


def test_unknown_columns_selection_and_sql_table(db):
    with pytest.raises(ard.ArdError, match="unknown column"):
        db.query("z > 0", columns=["targetid", "nope"])
    with pytest.raises(ard.ArdError, match="unknown table"):
        db.query("SELECT * FROM nothing")


def test_get_spectrum_returns_the_stored_arrays(db, root):
    tid = int(db.query(limit=1)["targetid"][0])
    s = db.get_spectrum(tid)
    stored = LakehouseResource(root=root).read("spectra").filter(pl.col("targetid") == tid)
    for arm, n in (("b", 2751), ("r", 2326), ("z", 2881)):
        a = s["arms"][arm]
        assert a["wave"].size == a["flux"].size == a["ivar"].size == a["mask"].size == n
        assert np.array_equal(a["flux"], np.asarray(stored[f"flux_{arm}"][0], np.float32))
    assert s["arms"]["b"]["wave"][0] == 3600.0 and s["coadd_key"] == stored["coadd_key"][0]


def test_unknown_targetid_is_clear(db):
    with pytest.raises(ard.ArdError, match="unknown TARGETID 42"):
        db.get_spectrum(42)


def test_find_similar_without_vectors_is_clear(db):
    with pytest.raises(ard.ArdError, match="no embedding vectors"):
        db.find_similar(targetid=int(db.query(limit=1)["targetid"][0]))
    with pytest.raises(ard.ArdError, match="exactly one"):
        db.find_similar()


def test_plots(db, tmp_path):
    tid = int(db.query(limit=1)["targetid"][0])
    fig = ard.plot_spectrum(tid, show_model=True, path=tmp_path / "s.png", db=db)
    assert (tmp_path / "s.png").stat().st_size > 10_000 and len(fig.axes[0].lines) >= 3
    fig = ard.quenching_diagram(db.query("dn4000 > 0"), path=tmp_path / "q.png", color="web_class")
    assert (tmp_path / "q.png").exists() and len(fig.axes) == 2
    with pytest.raises(ard.ArdError, match="needs columns"):
        ard.quenching_diagram(db.query(columns=["targetid"]))


def test_describe_has_units(db):
    d = db.describe()
    assert d.filter(pl.col("column") == "vdisp")["unit"][0] == "km/s"


def test_cli_query_spectrum_release_export(root, tmp_path, capsys):
    assert main(["query", "z > 0.3", "--columns", "targetid,z", "--format", "csv", "--lakehouse", root]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "targetid,z" and len(lines) > 2
    assert main(["query", "zz > 1", "--lakehouse", root]) == 1
    assert "unknown column" in capsys.readouterr().out
    out = tmp_path / "q.parquet"
    assert main(["query", "z > 0.3", "--format", "parquet", "--out", str(out), "--lakehouse", root]) == 0
    assert pl.read_parquet(out).height == len(lines) - 1
    tid = str(ard.connect(root).query(limit=1)["targetid"][0])
    assert main(["spectrum", tid, "--png", str(tmp_path / "s.png"), "--lakehouse", root]) == 0
    assert "b: 2751 px" in capsys.readouterr().out and (tmp_path / "s.png").exists()
    assert main(["spectrum", "12", "--lakehouse", root]) == 1
    assert "unknown TARGETID 12" in capsys.readouterr().out
    assert main(["release", "t-1", "--no-checks", "--lakehouse", root]) == 0
    assert main(["export", "--release", "t-1", "--format", "fits", "--columns", "targetid,ra", "--where",
                 "z > 0.3", "--out", str(tmp_path / "e.fits"), "--lakehouse", root]) == 0
    assert main(["export", "--release", "none", "--out", str(tmp_path / "e.fits"), "--lakehouse", root]) == 1
