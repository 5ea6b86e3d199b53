"""The stellar-population layer (wiring): fast model -> stellar_populations per partition; Bagpipes priority subset
-> stellar_population_samples; validation against the mock truth with its plots and checks."""

import dataclasses
import time

import dagster as dg
import numpy as np
import polars as pl

from desi_assets.defs.ingest.assets import raw_spectra_spec
from desi_assets.defs.metadata import median_metadata, plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.defs.preprocess.assets import preprocessed_spectra
from desi_assets.defs.stellar_populations.config import CHECK_NAMES, StellarPopulationsConfig, check_descriptions
from desi_assets.plots_stellar_populations import (
    plot_coverage_histogram,
    plot_posterior_samples,
    plot_quenching_diagram,
    plot_truth_vs_p50,
)
from desi_assets.science.stellar_populations import bagpipes_fit, fast
from desi_assets.science.stellar_populations import validation_frames as vf
from desi_assets.sources.archives import SpectraArchive
from desi_assets.storage import stellar_populations as store
from desi_assets.storage.lakehouse import LakehouseResource

#: Bump when what the model asset builds from the same settings changes (part of the model's reuse key).
MODEL_CODE_VERSION = "2"  # 2: the population prior (fast.FastSettings.prior)
GROUP = "stellar_populations"
#: A method's coverage histogram is drawn from at least this many galaxies.
MIN_PIT_GALAXIES = 10
CHECKS = check_descriptions(StellarPopulationsConfig())


def _counts(s: pl.Series) -> dg.MetadataValue:
    """Rows per status reason (the text before any ': detail')."""
    return dg.MetadataValue.json(dict(s.str.split(":").list.first().value_counts().iter_rows()))


@dg.asset(group_name=GROUP, kinds={"numpy"}, code_version=MODEL_CODE_VERSION,
          description="The fast path's model library (science.stellar_populations.fast): delayed-τ BC03 models, "
                      "PCA-compressed, with their g/r/z/W1/W2 fluxes; its calibration (χ² temperature, error floors) "
                      "is in the settings. Reused when a model for the same settings and code version exists; "
                      "published like anomaly_model.")
def stellar_population_model(context: dg.AssetExecutionContext, stellar_populations_config: StellarPopulationsConfig,
                             lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Build (or reuse) the fast model for these settings and make it the current one."""
    cfg, t0 = stellar_populations_config, time.perf_counter()
    key = cfg.model_key(MODEL_CODE_VERSION)
    record = store.find_model(lakehouse, key)
    reused = record is not None
    if not reused:
        model = fast.build_fast_model(cfg.model.settings())
        record = store.save_model(lakehouse, model, key, {"settings_key": key,
                                                          "build_seconds": round(time.perf_counter() - t0, 2)})
    store.publish_model(lakehouse, record)
    model = store.load_model(lakehouse)
    context.log.info(f"{'reused' if reused else 'built'} fast model {record['version']} (settings key {key})")
    plot = plot_quenching_diagram(
        lakehouse.artifact_dir("plots") / GROUP / f"model-{record['version']}.png", model.index_table[:, 0],
        model.index_table[:, 1], vf.log_ssfr(np.log10(model.params["live_frac"]), model.params["sfr_per_msun"]),
        None, f"model library: {model.n_models} models") if cfg.make_plot else None
    return dg.MaterializeResult(data_version=dg.DataVersion(record["version"]), metadata={
        "model_version": record["version"], "reused": reused, "path": dg.MetadataValue.path(record["path"]),
        "settings_key": key, "seconds": round(time.perf_counter() - t0, 2), **record["meta"],
        "settings": dg.MetadataValue.json(dataclasses.asdict(cfg.model.settings())),
        "n_models": model.n_models, "calibration": dg.MetadataValue.json(model.calibration)}
        | plot_metadata(plot, "library_index_plane"))


@dg.asset(partitions_def=coadds_partitions, backfill_policy=COADD_BACKFILL_POLICY, group_name=GROUP,
          deps=[raw_spectra_spec, preprocessed_spectra, "spectral_indices", "kinematics_and_lines",
                stellar_population_model], kinds={"delta", "numpy"},
          description="Fast-path posteriors (p2.5/p16/p50/p84/p97.5 of logmass, SFR, age_mw, A_V, Z) of every GALAXY "
                      "ZWARN = 0 spectrum with its fit_status and cost; other targets get their skip reason, like "
                      "kinematics_and_lines. tension_flag: the posterior age against the Dn4000/HδA age.")
def stellar_populations(context: dg.AssetExecutionContext, stellar_populations_config: StellarPopulationsConfig,
                        lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Fit this run's partitions with the published fast model; a bad row is a status, never a failed partition."""
    cfg, keys, t0 = stellar_populations_config, list(context.partition_keys), time.perf_counter()
    model, frames, fit_s, n_fit = store.load_model(lakehouse), [], 0.0, 0
    for key in keys:
        inp = store.fit_inputs(lakehouse, [key])
        t1 = time.perf_counter()
        res, age, flag = {}, np.zeros(0), np.zeros(0, bool)
        if inp.eligible.any():
            res = fast.fit_fast(model, inp.flux, inp.ivar, inp.z, inp.phot, inp.phot_ivar)
            dn, hd, dne, hde = (inp.rows.filter(pl.Series(inp.eligible))[c].fill_null(np.nan).to_numpy()
                                for c in ("dn4000_used", "hdelta_a_used", "dn4000_used_err", "hdelta_a_used_err"))
            age = fast.dn4000_hdelta_age(dn, hd, model=model)
            flag = fast.tension_flag(res["age_mw_p50"], res["age_mw_p16"], res["age_mw_p84"], dn, hd, model=model,
                                     nsigma=cfg.tension_nsigma, max_locus_distance=cfg.tension_max_locus_distance,
                                     dn4000_err=dne, hdelta_a_err=hde)
        fit_s, n_fit = fit_s + time.perf_counter() - t1, n_fit + int(inp.eligible.sum())
        frames.append(store.population_rows(inp, res, age, flag, model.version))
    rows = pl.concat(frames)
    lakehouse.write_partitions("stellar_populations", rows, keys)
    ok = rows.filter(pl.col("fit_status").str.starts_with("ok"))
    meta = {"partitions": len(keys), "rows": rows.height, "fitted_ok": ok.height, "eligible": n_fit,
            "status_counts": _counts(rows["fit_status"]), "fit_seconds": round(fit_s, 3),
            "seconds_per_galaxy": round(fit_s / n_fit, 5) if n_fit else None,
            "median_logmass_p50": median_metadata(ok, "logmass_p50"), "median_age_mw_p50_gyr": median_metadata(ok, "age_mw_p50"),
            "tension_flagged": int(ok["tension_flag"].fill_null(False).sum()), "model_version": model.version,
            "seconds": round(time.perf_counter() - t0, 2), "table_version": lakehouse.version("stellar_populations")}
    if cfg.make_plot and ok.height:
        png = plot_quenching_diagram(
            lakehouse.artifact_dir("plots") / GROUP / f"{context.run_id[:8]}-{keys[0]}.png",
            ok["dn4000_used"].fill_null(np.nan).to_numpy(), ok["hdelta_a_used"].fill_null(np.nan).to_numpy(),
            vf.log_ssfr(ok["logmass_p50"].fill_null(np.nan).to_numpy(), ok["sfr_p50"].fill_null(np.nan).to_numpy()),
            ok["tension_flag"].fill_null(False).to_numpy(), f"fast path: {keys[0]} ({ok.height} galaxies)")
        meta |= plot_metadata(png, "quenching_diagram")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(partitions_def=coadds_partitions, backfill_policy=COADD_BACKFILL_POLICY, group_name=GROUP,
          deps=[stellar_populations], kinds={"delta", "bagpipes"},
          description="Bagpipes (nautilus; delayed-τ SFH, Calzetti dust, nebular emission) on spectrum + photometry "
                      "for the priority subset: the brightest posteriors.per_partition galaxies by S/N in the chosen "
                      "partitions (demo: 1 in each of the first 2). Percentiles and samples go to "
                      "stellar_population_samples; partitions outside the subset are left as they are.")
def stellar_population_posteriors(context: dg.AssetExecutionContext,
                                  stellar_populations_config: StellarPopulationsConfig,
                                  lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Fit the subset of this run's partitions in Bagpipes worker processes; failures are a fit_status."""
    pc, keys, t0 = stellar_populations_config.posteriors, list(context.partition_keys), time.perf_counter()
    chosen_keys = pc.chosen(keys, list(context.instance.get_dynamic_partitions(coadds_partitions.name)))
    cand = store.priority_rows(lakehouse, chosen_keys) if chosen_keys else pl.DataFrame()
    picks = [c[bagpipes_fit.select_priority(c["snr"].fill_null(np.nan).to_numpy(), pc.per_partition)]
             for c in (cand.filter(pl.col("coadd_key") == k) for k in chosen_keys) if c.height]
    meta = {"partitions": len(keys), "subset_partitions": len(chosen_keys), "per_partition": pc.per_partition}
    if not picks:
        return dg.MaterializeResult(metadata=meta | {"rows": 0, "note": "no partition of this run is in the subset"
                                                      if not chosen_keys else "no fitted galaxy to refit"})
    chosen = pl.concat(picks)
    results = bagpipes_fit.fit_bagpipes_many(store.galaxy_inputs(lakehouse, chosen), pc.settings(),
                                             pc.worker_count(chosen.height))
    rows = store.sample_rows(chosen, results)
    lakehouse.write_partitions("stellar_population_samples", rows, chosen_keys)
    cost = rows["cost_s"].drop_nulls()
    meta |= {"rows": rows.height, "status_counts": _counts(rows["fit_status"]),
             "median_cost_s": round(float(cost.median()), 1) if cost.len() else None,
             "seconds": round(time.perf_counter() - t0, 1), "settings": dg.MetadataValue.json(pc.model_dump()),
             "table_version": lakehouse.version("stellar_population_samples")}
    if stellar_populations_config.make_plot:
        fast_pct = [{p: tuple(chosen[f"{p}_{q}"][i] for q in ("p16", "p50", "p84")) for p in vf.TRUTH_COLUMNS}
                    for i in range(min(chosen.height, 3))]
        png = plot_posterior_samples(lakehouse.artifact_dir("plots") / GROUP / f"posteriors-{context.run_id[:8]}.png",
                                     [store.samples_of(rows, i) for i in range(min(rows.height, 3))],
                                     [f"{t} {s}" for t, s in zip(rows["targetid"], rows["fit_status"])],
                                     "Bagpipes samples (red) and fast p16–p84 (blue)", fast_pct)
        meta |= plot_metadata(png, "posteriors")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, kinds={"python"}, deps=[stellar_populations, stellar_population_posteriors],
          check_specs=[dg.AssetCheckSpec(n, asset="stellar_population_validation", description=CHECKS[n],
                                         blocking=False) for n in CHECK_NAMES],
          description="Against the mock truth (truth-*.parquet beside the coadds; a no-op on real archives): bias and "
                      "scatter of p50 vs S/N per parameter and method, coverage of [p16, p84] and [p2.5, p97.5], fast "
                      "vs Bagpipes on the shared subset, and the tension flag's completeness and purity for the "
                      "frosted and quenched mock galaxies.")
def stellar_population_validation(context: dg.AssetExecutionContext,
                                  stellar_populations_config: StellarPopulationsConfig,
                                  lakehouse: LakehouseResource, archive: SpectraArchive) -> dg.MaterializeResult:
    """Join both methods to the truth, summarise, plot, and judge the fast path against the config's targets."""
    cfg, v = stellar_populations_config, stellar_populations_config.validation
    truth = vf.read_truth(getattr(archive, "root", None))
    if truth is None or not lakehouse.exists("stellar_populations"):
        return dg.MaterializeResult(metadata={"truth_rows": 0, "note": "no mock truth in this archive"},
                                    check_results=[dg.AssetCheckResult(check_name=n, passed=True, severity=dg.
                                                   AssetCheckSeverity.WARN, metadata={"skipped": "no mock truth"})
                                                   for n in CHECK_NAMES])
    ok = pl.col("fit_status").str.starts_with("ok")
    sp = lakehouse.read("stellar_populations").filter(ok)
    bp = store.read_samples(lakehouse).filter(ok) if lakehouse.exists("stellar_population_samples") else sp.clear()
    methods = {"fast": sp.join(truth, on="targetid", how="inner")}
    methods |= {"bagpipes": bp.join(truth, on="targetid", how="inner")} if bp.height else {}
    summary = {m: vf.method_summary(d, v.snr_min, v.snr_edges) for m, d in methods.items()}
    flagged = methods["fast"].filter(pl.col("tension_flag").is_not_null())
    tension = vf.tension_scores(flagged["tension_flag"].to_list(), flagged["sfh_kind"].to_numpy())
    outcomes = vf.check_outcomes(summary["fast"][0], v.max_logmass_scatter_dex, v.max_logmass_bias_dex,
                                 v.max_age_scatter_dex, v.coverage_target, v.coverage_tol, v.min_galaxies)
    f = summary["fast"][0]
    meta = {"truth_rows": truth.height, "fast_galaxies": methods["fast"].height,
            "bagpipes_galaxies": methods["bagpipes"].height if "bagpipes" in methods else 0,
            **{f"fast_{p}_{k}": _round(f[p][k]) for p in f for k in ("bias", "scatter", "coverage_68", "coverage_95",
                                                                        "coverage_68_all", "coverage_95_all")},
            "tension_completeness": _round(tension["completeness"]), "tension_purity": _round(tension["purity"]),
            "numbers": _json({m: s[0] for m, s in summary.items()}),
            "bias_vs_snr": _json({m: s[1] for m, s in summary.items()}),
            "fast_vs_bagpipes": _json(vf.agreement(sp, bp) if bp.height else {}), "tension_flag": _json(tension),
            "config": dg.MetadataValue.json(v.model_dump())}
    if cfg.make_plot:
        meta |= _validation_plots(lakehouse.artifact_dir("plots") / "stellar_population_validation" /
                                  context.run_id[:8], methods, sp)
    return dg.MaterializeResult(metadata=meta, check_results=[dg.AssetCheckResult(
        check_name=n, passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={
            **{k: _round(x) if not isinstance(x, list) else _json(x) for k, x in figs.items()}, "rule": CHECKS[n],
            "config_used": dg.MetadataValue.json(v.model_dump())}) for n, (passed, figs) in outcomes.items()])


def _validation_plots(prefix, methods: dict[str, pl.DataFrame], sp: pl.DataFrame) -> dict:
    """The three validation figures (truth vs p50, coverage histogram, quenching diagram) as metadata."""
    pts = {p: {m: vf.points(d, p) for m, d in methods.items()} for p in vf.TRUTH_COLUMNS}
    pit = {p: {m: vf.pit_fractions(x) for m, x in d.items() if np.isfinite(x["truth"]).sum() >= MIN_PIT_GALAXIES}
           for p, d in pts.items()}
    arr = {c: sp[c].fill_null(np.nan).to_numpy() for c in ("dn4000_used", "hdelta_a_used", "logmass_p50", "sfr_p50")}
    return (plot_metadata(plot_truth_vs_p50(prefix.with_name(f"truth-{prefix.name}.png"), pts,
                                            "p50 (p16–p84) against the mock truth"), "truth_vs_p50")
            | plot_metadata(plot_coverage_histogram(prefix.with_name(f"coverage-{prefix.name}.png"), pit,
                                                    vf.PIT_EXPECTED, vf.PIT_EDGES,
                                                    "truth among the posterior percentiles (1 = calibrated)"),
                            "coverage_histogram")
            | plot_metadata(plot_quenching_diagram(prefix.with_name(f"quenching-{prefix.name}.png"),
                                                   arr["dn4000_used"], arr["hdelta_a_used"],
                                                   vf.log_ssfr(arr["logmass_p50"], arr["sfr_p50"]),
                                                   sp["tension_flag"].fill_null(False).to_numpy(),
                                                   f"quenching diagram, fast path ({sp.height} galaxies)"),
                            "quenching_diagram"))


def _round(x):
    return round(float(x), 4) if x is not None and np.isfinite(float(x)) else None


def _json(obj) -> dg.MetadataValue:
    return dg.MetadataValue.json(_jsonable(obj))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else round(float(obj), 5)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
