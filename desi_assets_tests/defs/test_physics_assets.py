"""The physics multi-asset on a temporary lakehouse: both tables per partition, statuses, failed fits, metadata."""

import dagster as dg
import pytest

from desi_assets.defs.ingest.assets import coadd_ingest
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.physics.assets import physics
from desi_assets.defs.physics.config import PhysicsConfig
from desi_assets.defs.resources import make_resources
from desi_assets.science.physics import fit as fit_module
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import KINEMATICS_AND_LINES, SPECTRAL_INDICES
from desi_assets_tests.conftest import survey_keys

CONFIG = {"max_fits_per_partition": 2, "workers": 1, "snr_min": 0.5, "plot_fits": 1}


@pytest.fixture
def ingested(small_survey, lakehouse_root, instance):
    key = survey_keys(small_survey)[0]
    instance.add_dynamic_partitions(coadds_partitions.name, [key])
    res = make_resources(lakehouse_root, str(small_survey))
    dg.materialize([coadd_ingest], partition_key=key, resources=res, instance=instance)
    return key, res


def _run(key, res, instance, selection=None):
    return dg.materialize([physics], partition_key=key, resources=res, instance=instance, selection=selection,
                          run_config={"ops": {"physics": {"config": CONFIG}}})


def test_physics_writes_both_tables_with_statuses(ingested, lakehouse_root, instance):
    key, res = ingested
    result = _run(key, res, instance)
    mats = {m.asset_key.path[0]: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert set(mats) == {"kinematics_and_lines", "spectral_indices"}
    lh = LakehouseResource(root=lakehouse_root)
    t = lh.read("targets", keys=[key])
    k, i = lh.read("kinematics_and_lines", keys=[key]), lh.read("spectral_indices", keys=[key])
    assert k.height == i.height == t.height
    assert set(k.columns) == set(KINEMATICS_AND_LINES.schema.names)
    assert set(i.columns) == set(SPECTRAL_INDICES.schema.names)
    st = dict(zip(k["targetid"], k["status"]))
    for tid, spectype, zwarn in t.select("targetid", "spectype", "zwarn").iter_rows():
        if spectype != "GALAXY":
            assert st[tid] == "not_galaxy"
        elif zwarn != 0:
            assert st[tid] == "zwarn"
    assert (k["status"] == "ok").sum() <= 2 and mats["kinematics_and_lines"]["fitted_ok"].value == \
        (k["status"] == "ok").sum()
    ok = k.filter(status="ok")
    if ok.height:
        assert ok["vdisp"].null_count() == 0 and (ok["vdisp_floor"] == 70.0).all()
        assert "fits_plot" in mats["kinematics_and_lines"]
    assert i.filter(status="ok")["dn4000"].null_count() < i.filter(status="ok").height
    assert mats["spectral_indices"]["rows"].value == i.height


def test_a_failed_fit_is_a_status_not_a_failed_partition(ingested, lakehouse_root, instance, monkeypatch):
    key, res = ingested

    def boom(*a, **k):
        raise FloatingPointError("synthetic")

    monkeypatch.setattr(fit_module, "_fit", boom)
    result = _run(key, res, instance)
    assert result.success
    k = LakehouseResource(root=lakehouse_root).read("kinematics_and_lines", keys=[key])
    failed = k.filter(k["status"].str.starts_with("failed"))
    assert failed.height >= 1 and failed["status"][0] == "failed: FloatingPointError: synthetic"
    counts = next(m.materialization.metadata for m in result.get_asset_materialization_events()
                  if m.asset_key.path == ["kinematics_and_lines"])["status_counts"].value
    assert counts.get("failed: FloatingPointError") == failed.height


def test_config_defaults_are_demo_sized():
    cfg = PhysicsConfig()
    assert cfg.max_fits == 12 and PhysicsConfig(max_fits_per_partition=-1).max_fits is None
    assert cfg.fit_settings().vdisp_floor_kms == cfg.vdisp_floor_kms


def test_validation_asset_joins_the_mock_truth(ingested, lakehouse_root, instance, small_survey):
    from desi_assets.defs.physics.assets import physics_validation

    key, res = ingested
    _run(key, res, instance)
    result = dg.materialize([physics_validation], resources=res, instance=instance,
                            run_config={"ops": {"physics_validation": {"config": {}}}})
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["truth_rows"].value > 0 and md["fits_ok_with_truth"].value >= 1
    assert "bias_curves" in md


def test_definitions_wire_the_physics_jobs():
    from desi_assets.definitions import PIPELINE_STAGES, defs

    names = [j for j, _ in PIPELINE_STAGES]
    assert names.index("physics_job") > names.index("coadd_job")
    assert names.index("physics_validation_job") > names.index("physics_job")
    assert defs.resolve_job_def("physics_job").partitions_def is not None
