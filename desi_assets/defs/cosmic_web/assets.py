"""tidal_field (survey-wide δ and T_ij, once) and cosmic_web (per partition: kNN Σ5, T-web class, filaments)."""

import shutil
import time

from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl

from desi_assets.cosmic_web_catalog import (TARGET_COLUMNS, environment_rows, partition_summary, region_filter,
                                            targets_survey_field, with_survey_density)
from desi_assets.defs.cosmic_web.config import CosmicWebConfig, check_descriptions, field_check_descriptions
from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.plots_cosmic_web import plot_web_slice
from desi_assets.science.cosmic_web import SurveyField
from desi_assets.storage.lakehouse import LakehouseResource

CHECKS = check_descriptions(CosmicWebConfig())
FIELD_CHECKS = field_check_descriptions(CosmicWebConfig())
#: Model name of the survey field (lakehouse.publish_model pointer under artifacts/models).
FIELD_MODEL = "tidal_field"
KEEP_FIELD_VERSIONS = 2  # the current field and the one before (a running partition may still read it)


@dg.asset(deps=["raw_spectra"], group_name="cosmic_web", kinds={"numpy"},
          check_specs=[dg.AssetCheckSpec(n, asset="tidal_field", description=d) for n, d in FIELD_CHECKS.items()],
          description="Survey-wide T-web field, computed once over every landed target: δ (CIC, randoms-normalised, "
                      "survey n̄, Gaussian R_s) and the tidal tensor by FFT over one lattice (cell_mpc) covering "
                      "the whole survey, stored compactly (footprint cells, float32, memory-mappable .npy). Every "
                      "cosmic_web partition samples it, so WEB_CLASS is identical partitioned or global. "
                      "Re-materialised by cosmic_web_neighbours_sensor when a pixel lands, before the partitions.")
def tidal_field(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, cosmic_web_config: CosmicWebConfig):
    """Read every target, build the field, save it under artifacts/models/tidal_field/, publish the pointer."""
    cfg, params, t0 = cosmic_web_config, cosmic_web_config.params(), time.perf_counter()
    targets = lakehouse.scan("targets").select(TARGET_COLUMNS).collect() if lakehouse.exists("targets") else None
    if targets is None:
        from desi_assets.storage.tables import table_spec

        targets = pl.from_arrow(table_spec("targets").schema.empty_table()).select(TARGET_COLUMNS)
    field = targets_survey_field(targets, params, tuple(cfg.spectypes), cfg.require_zwarn_zero)
    version = f"{time.strftime('%Y%m%dT%H%M%S')}-{context.run_id[:8]}"
    base = lakehouse.artifact_dir("models") / FIELD_MODEL
    path = field.save(base / version)
    fractions = {k: round(v, 4) for k, v in field.volume_fractions(cfg.lambda_th, cfg.window_min).items()}
    meta = {"lattice_shape": list(field.lattice.shape), "cell_mpc": field.lattice.cell,
            "lattice_cells": int(np.prod(field.lattice.shape)), "stored_cells": int(field.cells.size),
            "stored_mb": round(field.nbytes / 2**20, 2), "tracers": int(field.settings.get("tracers", 0)),
            "targets": targets.height, "mean_density_mpc3": field.mean_density_mpc3,
            "volume_fractions": fractions, "R_s_mpc": cfg.smoothing_mpc, "lambda_th": cfg.lambda_th,
            "path": str(path), "version": version}
    lakehouse.publish_model(FIELD_MODEL, path, version, meta)
    old = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
    for p in old[:-KEEP_FIELD_VERSIONS]:
        shutil.rmtree(p, ignore_errors=True)
    meta["seconds"] = round(time.perf_counter() - t0, 3)
    return dg.MaterializeResult(metadata=meta, check_results=[
        dg.AssetCheckResult(check_name="tidal_field_covers_tracers", severity=dg.AssetCheckSeverity.WARN,
                            passed=bool(field.cells.size > 0 or meta["tracers"] == 0),
                            metadata={"stored_cells": meta["stored_cells"], "tracers": meta["tracers"]})])


def load_survey_field(lakehouse: LakehouseResource) -> SurveyField:
    """The current `tidal_field` (memory-mapped); a clear error when it was never materialized."""
    return SurveyField.load(lakehouse.current_model(FIELD_MODEL)["path"])


@dg.asset(partitions_def=coadds_partitions, deps=["raw_spectra", "tidal_field"], group_name="cosmic_web",
          kinds={"delta", "numpy"},
          backfill_policy=COADD_BACKFILL_POLICY,
          check_specs=[dg.AssetCheckSpec(n, asset="cosmic_web", description=d, blocking=n.endswith("complete"))
                       for n, d in CHECKS.items()],
          description="Environment of every target of the pixel from its galaxies plus those of every pixel within "
                      "the buffer: D5/D10/SIGMA_5, DIST_FILAMENT, edge flag; T-web delta/lambda/WEB_CLASS "
                      "sampled from the survey-wide tidal_field (tidal_field: survey) or from the pixel + buffer "
                      "(local). Re-requested by cosmic_web_neighbours_sensor when a neighbouring pixel lands, "
                      "after tidal_field is re-materialised.")
def cosmic_web(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, cosmic_web_config: CosmicWebConfig):
    """Read the pixel + buffer from `targets`, compute, write one row per own target."""
    cfg, params, t0 = cosmic_web_config, cosmic_web_config.params(), time.perf_counter()
    keys = list(context.partition_keys)
    own = lakehouse.read("targets", keys=keys, columns=TARGET_COLUMNS)
    field, field_meta = None, {}
    if cfg.tidal_field == "survey" and own.height:  # δ, T_ij (and their n̄) from the one survey field
        pointer = lakehouse.current_model(FIELD_MODEL)
        field = SurveyField.load(pointer["path"])
        params = replace(params, mean_density_mpc3=params.mean_density_mpc3 or field.mean_density_mpc3 or None)
        field_meta = {"tidal_field_version": pointer["version"]}
    elif cfg.tidal_field != "survey":  # δ normalised by the survey-wide n̄ of every landed target
        params = with_survey_density(lakehouse.scan("targets").select(TARGET_COLUMNS).collect(), params,
                                     tuple(cfg.spectypes), cfg.require_zwarn_zero)
    in_region, near = region_filter(own, keys, params)
    region = lakehouse.scan("targets").select(TARGET_COLUMNS).filter(in_region).collect()
    rows, res = environment_rows(own, region, params, tuple(cfg.spectypes), cfg.require_zwarn_zero, cfg.make_plot,
                                 field=field)
    n = lakehouse.write_partitions("cosmic_web", rows, keys)
    s = partition_summary(rows, res)
    meta = {"partitions": len(keys), "rows": n, "region_rows": region.height, "region_pixels": len(near),
            **{k: v for k, v in s.items() if k != "complete"}, "seconds": round(time.perf_counter() - t0, 3),
            "mean_density_mpc3": params.mean_density_mpc3, "R_s_mpc": cfg.smoothing_mpc, "lambda_th": cfg.lambda_th,
            "buffer_mpc": cfg.buffer_mpc, "tidal_field": cfg.tidal_field, **field_meta,
            "table_version": lakehouse.version("cosmic_web")}
    if cfg.make_plot and "slice" in res.extra:
        path = lakehouse.artifact_dir("plots") / "cosmic_web" / f"{context.run_id[:8]}-{keys[0]}.png"
        meta |= plot_metadata(plot_web_slice(path, res.extra["slice"], f"cosmic_web {keys[0]}: δ, skeleton, class "
                                             f"(R_s={cfg.smoothing_mpc:g} Mpc, λ_th={cfg.lambda_th:g})"), "slice")
    warn = dg.AssetCheckSeverity.WARN
    return dg.MaterializeResult(metadata=meta, check_results=[
        dg.AssetCheckResult(check_name="cosmic_web_rows_complete", passed=s["complete"] and rows.height == own.height,
                            metadata={"rows": rows.height, "targets": own.height}),
        dg.AssetCheckResult(check_name="cosmic_web_valid_redshifts", severity=warn,
                            passed=s["invalid_fraction"] <= cfg.max_invalid_fraction,
                            metadata={"invalid_fraction": s["invalid_fraction"], "max": cfg.max_invalid_fraction}),
        dg.AssetCheckResult(check_name="cosmic_web_edge_fraction", severity=warn,
                            passed=s["edge_fraction"] <= cfg.max_edge_fraction,
                            metadata={"edge_fraction": s["edge_fraction"], "max": cfg.max_edge_fraction,
                                      "buffer_mpc": cfg.buffer_mpc})])
