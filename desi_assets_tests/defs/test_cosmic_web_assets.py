"""tidal_field and cosmic_web assets (temporary lakehouse), an empty pixel, the two-stage re-request sensor, the CLI."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from desi_assets.defs.cosmic_web.assets import cosmic_web, load_survey_field, tidal_field
from desi_assets.defs.cosmic_web.config import CosmicWebConfig
from desi_assets.defs.cosmic_web.sensors import cosmic_web_neighbours_sensor
from desi_assets.defs.ingest.assets import coadd_ingest
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.resources import make_resources
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import survey_keys


@pytest.fixture
def resources(small_survey, lakehouse_root):
    return make_resources(lakehouse_root, str(small_survey)) | {"cosmic_web_config": CosmicWebConfig()}


def test_cosmic_web_writes_one_row_per_target(small_survey, resources, lakehouse_root, instance):
    keys = survey_keys(small_survey)[:2]
    instance.add_dynamic_partitions(coadds_partitions.name, keys)
    for k in keys:
        dg.materialize([coadd_ingest], partition_key=k, resources=resources, instance=instance)
    lh = LakehouseResource(root=lakehouse_root)
    with pytest.raises(Exception, match="tidal_field"):  # a partition needs the survey field first
        dg.materialize([cosmic_web], partition_key=keys[0], resources=resources, instance=instance)
    fres = dg.materialize([tidal_field], resources=resources, instance=instance)
    fmeta = fres.get_asset_materialization_events()[0].materialization.metadata
    assert fmeta["stored_cells"].value > 0 and set(fmeta["volume_fractions"].value) == {
        "void", "sheet", "filament", "knot"}
    assert [c.passed for c in fres.get_asset_check_evaluations()] == [True]
    field = load_survey_field(lh)
    assert field.cells.size == fmeta["stored_cells"].value and field.mean_density_mpc3 > 0
    result = dg.materialize([cosmic_web], partition_key=keys[0], resources=resources, instance=instance)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["tidal_field_version"].value == fmeta["version"].value
    rows, targets = lh.read("cosmic_web"), lh.read("targets", keys=[keys[0]])
    assert rows["coadd_key"].unique().to_list() == [keys[0]] and rows.height == targets.height == meta["rows"].value
    assert sorted(rows["targetid"].to_list()) == sorted(targets["targetid"].to_list())
    gal = targets["spectype"].eq("GALAXY") & targets["zwarn"].eq(0)
    assert int((rows["status"] == "not_galaxy").sum()) == int((~gal).sum())
    assert meta["region_rows"].value > targets.height  # the buffer brought the neighbour pixel in
    assert set(meta["volume_fractions"].value) == {"void", "sheet", "filament", "knot"}
    assert "slice" in meta and meta["lambda_th"].value == CosmicWebConfig().lambda_th
    assert meta["mean_density_mpc3"].value == pytest.approx(field.mean_density_mpc3)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["cosmic_web_rows_complete"] and set(checks) == {
        "cosmic_web_rows_complete", "cosmic_web_valid_redshifts", "cosmic_web_edge_fraction"}
    ok = rows.filter(pl.col("status") == "ok")
    assert ok["edge"].all()  # a 4-pixel mock is all edge at the default buffer
    assert ok["d5_mpc"].drop_nulls().min() > 0
    # the partition's T-web values are the survey field's at its galaxies (sampled, not recomputed)
    from desi_assets.science.cosmic_web.coords import radecz_to_xyz

    cls = ok.filter(pl.col("web_class").is_not_null())
    d, _, _ = field.sample(radecz_to_xyz(*(cls[c].to_numpy() for c in ("target_ra", "target_dec", "z"))))
    assert cls.height > 0 and np.all(cls["delta"].to_numpy() < d) and np.all(d > -1)  # δ there minus its own cloud


def test_empty_pixel_writes_nothing_and_passes(resources, lakehouse_root, instance):
    key = "main-dark-4000"  # registered, never ingested
    instance.add_dynamic_partitions(coadds_partitions.name, [key])
    from desi_assets.storage.tables import table_spec

    LakehouseResource(root=lakehouse_root).append("targets", table_spec("targets").schema.empty_table())
    result = dg.materialize([cosmic_web], partition_key=key, resources=resources, instance=instance)
    assert result.get_asset_materialization_events()[0].materialization.metadata["rows"].value == 0


def test_landed_pixel_re_requests_its_neighbours(small_survey, instance):
    keys = survey_keys(small_survey)
    far = "main-dark-5"  # on the other side of the sky
    instance.add_dynamic_partitions(coadds_partitions.name, keys + [far])
    res = {"cosmic_web_config": CosmicWebConfig()}
    ctx = dg.build_sensor_context(instance=instance, resources=res)
    assert cosmic_web_neighbours_sensor(ctx).skip_reason
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_spectra", partition=keys[0]))
    ctx = dg.build_sensor_context(instance=instance, resources=res)
    first = cosmic_web_neighbours_sensor(ctx)
    # stage 1: the survey field is older than the landing, so it is recomputed first (once per landing)
    assert [(r.job_name, r.partition_key) for r in first.run_requests] == [("tidal_field_job", None)]
    wait = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=first.cursor))
    assert [r.run_key for r in wait.run_requests] == [first.run_requests[0].run_key]  # deduplicated by run_key
    # stage 2: once tidal_field is newer than the landing, the landed pixel and its neighbours are re-requested
    instance.report_runless_asset_event(dg.AssetMaterialization("tidal_field"))
    out = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=first.cursor))
    assert {r.job_name for r in out.run_requests} == {"cosmic_web_job"}
    requested = [r.partition_key for r in out.run_requests]
    assert requested[0] == keys[0] and set(requested) == set(keys)  # all 4 mock pixels lie within the buffer
    assert far not in requested
    # the cursor moves on: nothing new, nothing requested; a later landing triggers again
    again = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=out.cursor))
    assert again.skip_reason
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_spectra", partition=far))
    step = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=out.cursor))
    assert [r.job_name for r in step.run_requests] == ["tidal_field_job"]
    instance.report_runless_asset_event(dg.AssetMaterialization("tidal_field"))
    last = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=step.cursor))
    assert [r.partition_key for r in last.run_requests] == [far]
    # a pixel whose cosmic_web was computed after the field (a job ran it already) is not re-requested
    instance.report_runless_asset_event(dg.AssetMaterialization("cosmic_web", partition=far))
    fresh = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=res, cursor=step.cursor))
    assert not fresh.run_requests and "newer" in fresh.skip_reason.skip_message
    # optionally every known partition follows a new field (it moves a little everywhere)
    allcfg = {"cosmic_web_config": CosmicWebConfig(rerequest_all_on_new_field=True)}
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_spectra", partition=far))
    s1 = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=allcfg, cursor=last.cursor))
    instance.report_runless_asset_event(dg.AssetMaterialization("tidal_field"))
    s2 = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=allcfg, cursor=s1.cursor))
    assert {r.partition_key for r in s2.run_requests} == set(keys) | {far}
    last = s2
    # tidal_field: local needs no field: the partitions are requested at once
    loc = {"cosmic_web_config": CosmicWebConfig(tidal_field="local", buffer_mpc=51.0)}
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_spectra", partition=far))
    now = cosmic_web_neighbours_sensor(dg.build_sensor_context(instance=instance, resources=loc, cursor=last.cursor))
    assert [(r.job_name, r.partition_key) for r in now.run_requests] == [("cosmic_web_job", far)]


def test_cli_on_a_parquet_catalog_keeps_input_order(tmp_path):
    from desi_assets.cli import main
    from desi_assets.sources.mock.positions import PositionsMockConfig, write_positions_mock

    cat, axes = write_positions_mock(tmp_path / "mock.parquet", PositionsMockConfig(radius_deg=3.0, zmin=0.05,
                                                                                     zmax=0.12, density_mpc3=3e-3))
    assert axes.exists()
    out = tmp_path / "out.parquet"
    assert main(["cosmic-web", "--catalog", str(cat), "--out", str(out), "--id-col", "targetid",
                 "--tracer-zmin", "0.05", "--tracer-zmax", "0.12"]) == 0
    src, got = pl.read_parquet(cat), pl.read_parquet(out)
    assert got["targetid"].to_list() == src["targetid"].to_list()
    assert {"d5_mpc", "d10_mpc", "sigma_5", "web_class", "dist_filament_mpc", "edge"} <= set(got.columns)
    assert np.isfinite(got["d5_mpc"].drop_nulls().to_numpy()).all() and got["web_class"].drop_nulls().len() > 0
    # --partition-nside: pixel by pixel with buffers, the same columns and values as the one-run catalog
    part = tmp_path / "part.parquet"
    assert main(["cosmic-web", "--catalog", str(cat), "--out", str(part), "--id-col", "targetid",
                 "--tracer-zmin", "0.05", "--tracer-zmax", "0.12", "--partition-nside", "16"]) == 0
    gp = pl.read_parquet(part)
    assert gp.columns == got.columns and gp["targetid"].to_list() == src["targetid"].to_list()
    for col in ("d5_mpc", "web_class", "edge"):
        assert gp[col].to_list() == got[col].to_list(), col


def test_survey_density_counts_unique_galaxies_over_the_footprint_volume():
    import healpy as hp

    from dataclasses import replace

    from desi_assets.cosmic_web_catalog import with_survey_density
    from desi_assets.science.cosmic_web import CosmicWebParams

    params = CosmicWebParams(footprint_nside=64, tracer_zmin=0.1, tracer_zmax=0.2)
    ra, dec = hp.pix2ang(64, np.array([100, 100, 100, 101, 101]), nest=True, lonlat=True)
    t = pl.DataFrame({"coadd_key": ["a", "a", "b", "c", "d"], "targetid": [1, 1, 2, 3, 4],
                      "target_ra": ra, "target_dec": dec, "z": [0.15, 0.15, 0.15, 0.15, 0.3],
                      "zwarn": [0, 0, 0, 0, 0], "spectype": ["GALAXY", "GALAXY", "STAR", "GALAXY", "GALAXY"],
                      "healpix": [100, 100, 100, 101, 101]})
    got = with_survey_density(t, params).mean_density_mpc3
    chi_lo, chi_hi = params.chi_range()
    vol = 2 * hp.nside2pixarea(64) / 3 * (chi_hi**3 - chi_lo**3)
    assert got == pytest.approx(2 / vol)  # targets 1 (once) and 3: the star and the z = 0.3 galaxy do not count
    assert with_survey_density(t, replace(params, mean_density_mpc3=1e-3)).mean_density_mpc3 == 1e-3
