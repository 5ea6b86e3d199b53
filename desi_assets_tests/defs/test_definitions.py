"""The whole Definitions object loads, with every layer's assets, checks, jobs, sensor and schedules."""

import dagster as dg

from desi_assets.definitions import PIPELINE_STAGES, defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_spectra", "preprocessed_spectra", "training_set", "anomaly_model", "anomaly_scores",
            "anomaly_summary", "anomaly_injection"} <= keys
    for job, _ in PIPELINE_STAGES:
        assert defs.resolve_job_def(job)
    assert defs.resolve_sensor_def("new_coadds_sensor")
    assert defs.resolve_schedule_def("daily_coadd_discovery")
    assert defs.resolve_schedule_def("weekly_maintenance")
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"training_class_balance", "wavelength_invariance", "flux_scale_invariance", "noise_level",
            "sky_position", "fiber_number", "observation_date", "b_band_dominance", "injection_recovery"} <= checks
    assert set(defs.resources) >= {"lakehouse", "archive"}
