"""Releases: time travel after re-materialisation, survival of compaction + vacuum, FITS export with units."""

import polars as pl
import pytest
from astropy.table import Table
from deltalake import DeltaTable

import desi_assets.ard as ard
from desi_assets.defs.ops.maintenance import lakehouse_maintenance_job
from desi_assets.storage import catalog as cat
from desi_assets.storage import release
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource


def _build(lake, pixels, per_pixel, seed=0):
    keys = sc.write_synthetic(lake, pixels, per_pixel=per_pixel, layers=("spectral_indices",), seed=seed)
    for k in keys:
        lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, [k])), [k])
    return keys


@pytest.fixture
def released(tmp_path):
    lake = LakehouseResource(root=str(tmp_path / "lake"))
    _build(lake, [1000, 1001], 8)
    release.make_release(lake, "dr1-v1", run_checks=False)
    before = ard.connect(lake.root, release="dr1-v1").query().sort(["coadd_key", "targetid"])
    spec = ard.connect(lake.root, release="dr1-v1").get_spectrum(int(before["targetid"][0]))
    _build(lake, [1000, 1001, 1002], 11, seed=5)  # later re-materialisation: other rows, new partition
    return lake, before, spec


def test_release_reads_the_pinned_state_after_rematerialisation(released):
    lake, before, spec = released
    latest = ard.connect(lake.root).query()
    assert latest.height == 33
    db = ard.connect(lake.root, release="dr1-v1")
    again = db.query().sort(["coadd_key", "targetid"])
    assert again.equals(before) and again.height == 16
    s = db.get_spectrum(spec["targetid"])
    assert (s["arms"]["b"]["flux"] == spec["arms"]["b"]["flux"]).all()


def test_release_survives_compaction_and_vacuum(released):
    lake, before, spec = released
    res = lakehouse_maintenance_job.execute_in_process(
        resources={"lakehouse": lake}, run_config={"ops": {"compact_and_vacuum": {"config": {"retention_hours": 0}}}})
    assert res.success and sum(res.output_for_node("compact_and_vacuum").values()) > 0  # it did vacuum
    db = ard.connect(lake.root, release="dr1-v1")
    assert db.query().sort(["coadd_key", "targetid"]).equals(before)
    assert (db.get_spectrum(spec["targetid"])["arms"]["r"]["ivar"] == spec["arms"]["r"]["ivar"]).all()


def test_plain_vacuum_would_break_the_release(released):
    """Control: without keep_versions the same vacuum deletes files the release needs (the test above can fail)."""
    lake, before, _ = released
    dt = DeltaTable(lake.table_uri("catalog"))
    dt.optimize.compact()
    dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
    with pytest.raises(Exception):
        ard.connect(lake.root, release="dr1-v1").query()


def test_unknown_release_is_a_clear_error(released):
    lake, *_ = released
    with pytest.raises(ard.ArdError, match="no release 'nope'.*dr1-v1"):
        ard.connect(lake.root, release="nope")
    with pytest.raises(release.ReleaseError, match="invalid release name"):
        release.make_release(lake, "../x")


def test_fits_export_round_trip_with_units(released, tmp_path):
    lake, before, _ = released
    db = ard.connect(lake.root, release="dr1-v1")
    out = tmp_path / "cat.fits"
    n = ard.export(db, str(out), "fits", ["targetid", "ra", "dec", "z", "spectype", "dn4000", "vdisp", "primary"],
                   "dn4000 > 0")
    t = Table.read(out)
    assert n == len(t) == before.filter(pl.col("dn4000") > 0).height
    assert str(t["RA"].unit) == "deg" and str(t["VDISP"].unit) == "km / s" and t["DN4000"].unit is None
    exp = before.filter(pl.col("dn4000") > 0).sort("targetid")
    got = pl.from_pandas(t.to_pandas()).sort("TARGETID")
    assert got["TARGETID"].to_list() == exp["targetid"].to_list()
    assert got["DN4000"].to_list() == pytest.approx(exp["dn4000"].to_list())
    assert [s.decode() if isinstance(s, bytes) else s for s in got["SPECTYPE"]] == exp["spectype"].to_list()
    pq = tmp_path / "cat.parquet"
    ard.export(db, str(pq), "parquet", ["targetid", "z"], None)
    assert pl.read_parquet(pq).sort("targetid")["z"].to_list() == before.sort("targetid")["z"].to_list()
