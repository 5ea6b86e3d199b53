"""validated_catalog behind its blocking GE gates, catalog_release, and their wiring into the Definitions."""

import dagster as dg
import polars as pl

from desi_assets.defs.catalog.assets import catalog_release, validated_catalog
from desi_assets.defs.catalog.config import CatalogConfig, check_descriptions
from desi_assets.storage import release
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource


def _run(assets, lake, instance, key=None):
    return dg.materialize(assets, partition_key=key, instance=instance, raise_on_error=False,
                          resources={"lakehouse": lake, "catalog_config": CatalogConfig(make_plot=True)})


def test_good_partition_lands_and_corrupted_one_is_stopped(tmp_path):
    lake = LakehouseResource(root=str(tmp_path / "lake"))
    keys = sc.write_synthetic(lake, [1000, 1001], per_pixel=12, layers=("spectral_indices", "cosmic_web"),
                              spectra=False)
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("coadds", keys)
    ok = _run([validated_catalog], lake, inst, keys[0])
    assert ok.success
    checks = {e.check_name: e.passed for e in ok.get_asset_check_evaluations()}
    assert set(checks) == set(check_descriptions(CatalogConfig())) and all(checks.values())
    meta = ok.get_asset_materialization_events()[0].materialization.metadata
    assert meta["rows"].value == 12 and meta["coverage"].data["spectral_indices"] == 1.0
    assert "stellar_populations" in meta["missing_columns"].data and "sky_map" in meta

    bad = lake.read("cosmic_web", keys=[keys[1]]).with_columns(web_class=pl.lit(7, pl.Int8))
    lake.write_partitions("cosmic_web", bad, [keys[1]])
    res = _run([validated_catalog], lake, inst, keys[1])
    assert not res.success  # blocking ERROR check fails the step
    failed = [e.check_name for e in res.get_asset_check_evaluations() if not e.passed]
    assert failed == ["catalog_physical_ranges"]
    assert lake.read("catalog")["coadd_key"].unique().to_list() == [keys[0]]  # the bad partition never landed


def test_check_descriptions_quote_the_config():
    d = check_descriptions(CatalogConfig(vdisp_range=[0.0, 450.0]))
    assert "450" in d["catalog_physical_ranges"]
    spec = {s.name: s for s in validated_catalog.check_specs}
    assert all(s.blocking for s in spec.values())
    assert spec["catalog_physical_ranges"].description == check_descriptions(CatalogConfig())["catalog_physical_ranges"]


def test_release_asset_pins_versions_and_keeps_an_existing_release(tmp_path):
    lake = LakehouseResource(root=str(tmp_path / "lake"))
    keys = sc.write_synthetic(lake, [1000], per_pixel=5, layers=(), spectra=False)
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("coadds", keys)
    assert _run([validated_catalog], lake, inst, keys[0]).success
    assert _run([catalog_release], lake, inst).success
    m = release.load_manifest(lake, "demo-v1")
    assert m["tables"]["catalog"]["rows"] == 5 and m["tables"]["targets"]["version"] == lake.version("targets") - 1
    assert m["checks"]["passed"] and "code_version" in m
    sc.write_synthetic(lake, [1000], per_pixel=6, layers=(), spectra=False)
    assert _run([catalog_release], lake, inst).success
    assert release.load_manifest(lake, "demo-v1")["tables"] == m["tables"]  # kept, not moved


def test_definitions_schedule_catalog_then_release():
    from desi_assets.definitions import PIPELINE_STAGES, defs

    names = [n for n, _ in PIPELINE_STAGES]
    assert names[-2:] == ["catalog_job", "release_job"]
    graph = defs.resolve_asset_graph()
    deps = {k.to_user_string() for k in graph.get(dg.AssetKey("validated_catalog")).parent_keys}
    assert {"raw_spectra", "anomaly_scores", "spectral_indices", "kinematics_and_lines", "cosmic_web"} <= deps
