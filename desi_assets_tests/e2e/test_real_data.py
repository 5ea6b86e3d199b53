"""Ingesting the real DESI files in shared/data through the CLI: every usable spectrum lands, every problem is recorded."""

import polars as pl
import pytest

from desi_assets.cli import UNKEYED, main
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import DESI_REAL

pytestmark = pytest.mark.skipif(not DESI_REAL.exists(), reason="shared/data/desi-real not present")

# production -> {partition key: (rows in targets, usable rows)}
EXPECTED = {
    "iron": {"tile-80613-4": (1, 1)},
    "loa": {"special-dark-27247": (1, 1)},
    "fuji": None,  # checked below from the files themselves
}


@pytest.fixture
def ingest(tmp_path, monkeypatch):
    def run(production: str):
        lake = tmp_path / production
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / f"dagster-{production}"))
        rc = main(["ingest", "--archive", str(DESI_REAL / production), "--lakehouse", str(lake), "--batch", "4"])
        return rc, LakehouseResource(root=str(lake))
    return run


@pytest.mark.parametrize("production", ["iron", "loa"])
def test_real_healpix_and_tile_coadds_land(ingest, production):
    rc, lh = ingest(production)
    assert rc == 0
    t = lh.read("targets")
    got = {k: (g.height, int(g["usable"].sum())) for k, g in t.group_by("coadd_key", maintain_order=True)
           for k in [k[0]]}
    assert got == EXPECTED[production]
    pre = lh.read("preprocessed_spectra")
    assert pre.height == int(t["usable"].sum())
    if production == "iron":
        assert t["z"][0] == pytest.approx(0.3687, abs=1e-3)
        assert t["healpix"][0] is not None  # derived from TARGET_RA/DEC for a tile coadd
        # Legacy Surveys DR9 photometry and its ivars, as in the file's FIBERMAP (nanomaggy, nanomaggy⁻²)
        row = t.row(0, named=True)
        want = {"flux_w1": 7.0080523, "flux_w2": 6.4403596, "flux_ivar_g": 537.6269, "flux_ivar_r": 177.3541,
                "flux_ivar_z": 54.752712, "flux_ivar_w1": 3.9439182, "flux_ivar_w2": 0.95099264}
        assert {k: row[k] for k in want} == pytest.approx(want, rel=1e-6)
        assert all(t.schema[k] == pl.Float32 for k in want)


def test_real_bad_fibres_are_flagged_not_lost(ingest):
    rc, lh = ingest("fuji")
    t = lh.read("targets")
    # every row of every readable fuji file is in targets: none silently dropped
    assert t.filter(pl.col("coadd_key") == "sv3-dark-26065").height == 5
    # a trimmed FIBERMAP (TARGETID only) gives null photometry, a full one gives values
    trimmed = t.filter(pl.col("coadd_key") == "sv3-dark-9144")
    assert trimmed.height == 2 and trimmed["flux_ivar_w1"].null_count() == 2 and trimmed["flux_w2"].null_count() == 2
    assert t.filter(pl.col("coadd_key") == "sv3-dark-26065")["flux_ivar_g"].null_count() == 0
    broken = t.filter(~pl.col("usable"))
    assert broken.height > 0 and (broken["quality_reason"] != "OK").all()
    # unusable rows never reach preprocessing; usable ones all do
    pre = lh.read("preprocessed_spectra")
    assert pre.height == int(t["usable"].sum())
    assert set(pre["targetid"].to_list()) <= set(t.filter("usable")["targetid"].to_list())


def test_real_unusable_files_are_recorded(ingest):
    rc, lh = ingest("everest")  # test_coadd.fits: no FIBERMAP, not a DESI coadd name
    errors = lh.read("ingest_errors")
    assert errors.height >= 1
    assert (errors["coadd_key"] == UNKEYED).any() or (errors["error_type"] == "MissingHDUError").any()
    assert errors["message"].str.contains("test_coadd").any() or errors["file"].str.contains("test_coadd").any()
