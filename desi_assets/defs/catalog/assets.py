"""validated_catalog (partitioned) and catalog_release: thin wiring over storage.catalog / storage.release."""

import time

import dagster as dg

from desi_assets.defs.catalog.config import CatalogConfig, check_descriptions
from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.plots_catalog import plot_sky_map
from desi_assets.storage import catalog, release
from desi_assets.storage.lakehouse import LakehouseResource

#: Assets whose tables the catalog joins (lineage in the UI).
UPSTREAM = ["raw_spectra", "anomaly_scores", "spectral_indices", "kinematics_and_lines", "stellar_populations",
            "cosmic_web", "spectral_embeddings"]
CHECKS = check_descriptions(CatalogConfig())


@dg.asset(partitions_def=coadds_partitions, backfill_policy=COADD_BACKFILL_POLICY, group_name="catalog",
          deps=UPSTREAM, kinds={"delta"}, key="validated_catalog",
          check_specs=[dg.AssetCheckSpec(n, asset="validated_catalog", description=d, blocking=True)
                       for n, d in CHECKS.items()],
          description="One row per (coadd_key, targetid): targets joined with every layer present, primary flag, "
                      "per-layer quality flags. A partition failing any GE gate is not written.")
def validated_catalog(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                      catalog_config: CatalogConfig) -> dg.MaterializeResult:
    """Join, gate and write each partition of the run; gates fail -> that partition stays out of `catalog`."""
    cfg, t0, keys = catalog_config, time.perf_counter(), list(context.partition_keys)
    results, written, rejected, cov, missing = {g: [] for g in CHECKS}, 0, {}, {}, {}
    for key in keys:
        join = catalog.join_partitions(lakehouse, [key], cfg.masked_frac_max, cfg.snr_min, cfg.limits())
        rows = catalog.to_catalog_rows(join)
        outcomes = catalog.evaluate_gates(rows, lakehouse.read("targets", keys=[key], columns=["targetid"]).height,
                                          cfg.limits())
        for o in outcomes:
            results[o.gate].append((key, o))
        bad = [o.gate for o in outcomes if not o.passed]
        if bad:
            rejected[key] = bad
            continue
        n = lakehouse.write_partitions("catalog", rows, [key])
        written += n
        cov = {layer: cov.get(layer, 0.0) + f * n for layer, f in join.coverage().items()}
        missing = join.missing_columns
    cov = {layer: round(v / max(written, 1), 4) for layer, v in cov.items()}
    meta = {"rows": written, "partitions": len(keys), "partitions_written": len(keys) - len(rejected),
            "rejected": dg.MetadataValue.json(rejected), "coverage": dg.MetadataValue.json(cov), "missing_columns": dg.MetadataValue.json(missing),
        "seconds": round(time.perf_counter() - t0, 2), "table_version": lakehouse.version("catalog")}
    if cfg.make_plot and lakehouse.exists("catalog"):
        sky = lakehouse.read("catalog", columns=["ra", "dec"])
        path = lakehouse.artifact_dir("plots") / "catalog" / f"sky-{context.run_id[:8]}.png"
        meta |= plot_metadata(plot_sky_map(path, catalog.sky_counts(sky["ra"].to_numpy(), sky["dec"].to_numpy()),
                                           f"catalog: {sky.height} targets"), "sky_map")
    checks = []
    for gate, per_key in results.items():
        failed = {k: o.failures for k, o in per_key if not o.passed}
        checks.append(dg.AssetCheckResult(check_name=gate, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
                                          metadata={"partitions_failed": len(failed),
                                                    "partitions_checked": len(per_key),
                                                    "rule": CHECKS[gate], "failed_partitions": dg.MetadataValue.json(
                                              failed), "config_used": dg.MetadataValue.json(cfg.limits().__dict__),
                                              "statistics": dg.MetadataValue.json(
                                                  {k: o.statistics for k, o in per_key[:5]})}))
    return dg.MaterializeResult(metadata=meta, check_results=checks)


class ReleaseConfig(dg.Config):
    """Name of the release to make; an existing release of that name is kept unless replace is set."""

    name: str = "demo-v1"
    replace: bool = False


@dg.asset(group_name="catalog", deps=[validated_catalog], kinds={"delta"},
          description="Pins the current Delta version of every table as a named release and writes its manifest "
                      "(table versions, model versions, code version, row counts, catalog gate results).")
def catalog_release(context: dg.AssetExecutionContext, config: ReleaseConfig, lakehouse: LakehouseResource,
                    catalog_config: CatalogConfig) -> dg.MaterializeResult:
    """Make (or keep) the release `config.name`."""
    m, made = release.make_release(lakehouse, config.name, catalog_config.limits(), replace=config.replace)
    context.log.info(f"release {config.name}: {'made' if made else 'exists, kept (set replace to move it)'}")
    return dg.MaterializeResult(metadata={
        "release": config.name, "made": made, "tables": dg.MetadataValue.json(m["tables"]),
        "models": dg.MetadataValue.json(m["models"]), "code_version": m["code_version"],
        "catalog_gates_passed": m["checks"]["passed"], "manifest": dg.MetadataValue.path(m["path"])})
