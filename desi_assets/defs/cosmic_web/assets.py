"""cosmic_web: per-partition environment columns (kNN Σ5, T-web class, distance to filament) with a buffer."""

import time

import dagster as dg
import polars as pl

from desi_assets.cosmic_web_catalog import (TARGET_COLUMNS, environment_rows, partition_summary, region_of,
                                            with_survey_density)
from desi_assets.defs.cosmic_web.config import CosmicWebConfig, check_descriptions
from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.plots_cosmic_web import plot_web_slice
from desi_assets.storage.lakehouse import LakehouseResource

CHECKS = check_descriptions(CosmicWebConfig())


@dg.asset(partitions_def=coadds_partitions, deps=["raw_spectra"], group_name="cosmic_web", kinds={"delta", "numpy"},
          backfill_policy=COADD_BACKFILL_POLICY,
          check_specs=[dg.AssetCheckSpec(n, asset="cosmic_web", description=d, blocking=n.endswith("complete"))
                       for n, d in CHECKS.items()],
          description="Environment of every target of the pixel from its galaxies plus those of every pixel within "
                      "the buffer: D5/D10/SIGMA_5, T-web WEB_CLASS, DIST_FILAMENT, edge flag. Re-requested by "
                      "cosmic_web_neighbours_sensor when a neighbouring pixel lands.")
def cosmic_web(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, cosmic_web_config: CosmicWebConfig):
    """Read the pixel + buffer from `targets`, compute, write one row per own target."""
    cfg, params, t0 = cosmic_web_config, cosmic_web_config.params(), time.perf_counter()
    keys = list(context.partition_keys)
    # δ is normalised by the survey-wide n̄ of every landed target, as in the global run
    params = with_survey_density(lakehouse.scan("targets").select(TARGET_COLUMNS).collect(), params,
                                 tuple(cfg.spectypes), cfg.require_zwarn_zero)
    own = lakehouse.read("targets", keys=keys, columns=TARGET_COLUMNS)
    near = region_of(own["healpix"].drop_nulls().unique().to_numpy(), params).tolist()
    region = lakehouse.scan("targets").select(TARGET_COLUMNS).filter(
        pl.col("healpix").is_in(near) | pl.col("coadd_key").is_in(keys)).collect()
    rows, res = environment_rows(own, region, params, tuple(cfg.spectypes), cfg.require_zwarn_zero, cfg.make_plot)
    n = lakehouse.write_partitions("cosmic_web", rows, keys)
    s = partition_summary(rows, res)
    meta = {"partitions": len(keys), "rows": n, "region_rows": region.height, "region_pixels": len(near),
            **{k: v for k, v in s.items() if k != "complete"}, "seconds": round(time.perf_counter() - t0, 3),
            "mean_density_mpc3": params.mean_density_mpc3, "R_s_mpc": cfg.smoothing_mpc, "lambda_th": cfg.lambda_th, "buffer_mpc": cfg.buffer_mpc,
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
