"""The anomaly layer: training_set -> anomaly_model -> anomaly_scores, plus injection/recovery (wiring only)."""

import json
import time

import dagster as dg
import polars as pl

from desi_assets.defs.anomalies.config import AnomalyConfig
from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.defs.preprocess.assets import preprocessed_spectra
from desi_assets.plots import plot_anomaly_gallery, plot_completeness, plot_loss_curve
from desi_assets.science.anomaly import catalog, fitting, recovery, sampling
from desi_assets.science.torch_models import count_parameters
from desi_assets.storage import models, samples
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource

#: Bump when what an asset computes from the same inputs and config changes (Dagster code versions).
TRAINING_SET_CODE_VERSION = "1"
MODEL_CODE_VERSION = "3"  # 3: masked-bin training, model-error profile, local calibration


@dg.asset(group_name="anomalies", kinds={"delta"}, deps=[preprocessed_spectra], code_version=TRAINING_SET_CODE_VERSION,
          description="Class-balanced (GALAXY/QSO/STAR) training sample across all partitions, with a val split.")
def training_set(context: dg.AssetExecutionContext, anomaly_config: AnomalyConfig,
                 lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Sample equal numbers of each redrock class from usable, ZWARN==0 spectra; data version = content hash."""
    cfg = anomaly_config.training_set
    ids = samples.candidates(lakehouse)
    try:
        chosen = sampling.balanced_sample(ids, cfg.per_class, cfg.val_fraction, cfg.seed, cfg.upsample)
    except ValueError as e:
        raise dg.Failure(str(e)) from e
    ts = samples.with_spectra(lakehouse, chosen)
    lakehouse.overwrite("training_set", ts)
    fingerprint = samples.training_fingerprint(ts)
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "rows": ts.height, "per_class": dict(ts.group_by("spectype").len().iter_rows()),
        "val_rows": int((ts["split"] == "val").sum()), "unique_spectra": ts.select(samples.IDS).n_unique(),
        "candidates": ids.height, "table_version": lakehouse.version("training_set"), "content_hash": fingerprint,
        "config": dg.MetadataValue.json(cfg.model_dump())})


@dg.asset(group_name="anomalies", kinds={"pytorch"}, deps=[training_set], code_version=MODEL_CODE_VERSION,
          description="BigAE autoencoder (496-512-256-128 and mirror) trained with MSE and early stopping; reused "
                      "when a model for the same training-set content, config and code version exists.")
def anomaly_model(context: dg.AssetExecutionContext, anomaly_config: AnomalyConfig,
                  lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Train BigAE (or reuse the one trained on this exact training set and config), publish it."""
    cfg = anomaly_config.model
    ts = lakehouse.read("training_set")
    key = anomaly_config.training_key(samples.training_fingerprint(ts), MODEL_CODE_VERSION)
    record = models.find_trained(lakehouse, key)
    reused = record is not None
    if not reused:
        arrays, tc = samples.training_arrays(ts), cfg.train_config()
        fitted = fitting.fit_anomaly_model(arrays, tc, cfg.calibration_fpr, lambda e, tr, va:
                                           context.log.info(f"epoch {e}: train MSE {tr:.5f}, val MSE {va:.5f}"))
        meta = {"training_set_version": lakehouse.version("training_set"), "training_key": key,
                "best_epoch": fitted.best_epoch, "val_mse": min(h[2] for h in fitted.history),
                "device": str(tc.resolved_device()), "calibration_fpr": cfg.calibration_fpr, **fitted.calibrated,
                "parameters": count_parameters(fitted.model), "train_rows": int((~arrays.val).sum()),
                "val_rows": int(arrays.val.sum()), "seconds": round(fitted.seconds, 1)}
        record = models.save_trained(lakehouse, fitted, meta, key)
        record["loss_curve"] = plot_loss_curve(fitted.history, lakehouse.artifact_dir("plots") / "anomaly_model"
                                               / f"loss-{record['version']}.png")
        models.update_record(lakehouse, record)
    context.log.info(f"{'reused' if reused else 'trained'} model {record['version']} (training key {key})")
    models.publish(lakehouse, record)
    return dg.MaterializeResult(data_version=dg.DataVersion(record["version"]), metadata={
        "model_version": record["version"], "path": dg.MetadataValue.path(record["path"]), "reused": reused,
        **record["meta"], "config": dg.MetadataValue.json(cfg.model_dump()),
        **plot_metadata(record.get("loss_curve"), "loss_curve")})


@dg.asset(partitions_def=coadds_partitions, backfill_policy=COADD_BACKFILL_POLICY, group_name="anomalies",
          deps=[preprocessed_spectra, anomaly_model], kinds={"delta", "pytorch"},
          automation_condition=dg.AutomationCondition.eager(),
          description="Per-arm residual scores rB, rR, rZ, the seed score and category, and a noise-aware chi2 score. "
                      "Eager: new preprocessed partitions (from the sensor) are scored when the automation daemon runs.")
def anomaly_scores(context: dg.AssetExecutionContext, anomaly_config: AnomalyConfig,
                   lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Score this run's partitions (a batch) with the current anomaly model; metadata: batch_* and table_*."""
    t0 = time.perf_counter()
    keys, cfg = list(context.partition_keys), anomaly_config.scoring
    m = models.load_published(lakehouse)
    thr = cfg.thresholds(m.meta)
    out, recon, flux = catalog.score_frame(samples.scoring_rows(lakehouse, keys), m.net, m.version, thr, m.local)
    lakehouse.write_partitions("anomaly_scores", out, keys)
    seconds = time.perf_counter() - t0
    meta = {"batch_partitions": len(keys), **{f"batch_{k}": v for k, v in catalog.anomaly_counts(out).items()},
            "batch_median_score": float(out["score"].median()) if out.height else 0.0,
            **{f"table_{k}": v for k, v in samples.score_totals(lakehouse).items()},
            "model_version": m.version, "threshold": thr.seed, "noise_aware_threshold": thr.noise_aware,
            "local_threshold": thr.local, "config": dg.MetadataValue.json(cfg.model_dump()),
            "seconds": round(seconds, 3), "spectra_per_s": round(out.height / seconds, 1) if seconds else 0.0}
    if cfg.make_plot and out.height:
        plots = lakehouse.artifact_dir("plots") / "anomaly_scores"
        for by, name in (("score", "gallery"), ("score_local", "gallery_local")):
            png = plot_anomaly_gallery(plots / f"{keys[0]}{'' if by == 'score' else '-' + by}.png", out, flux, recon,
                                       cfg.gallery_size, f"top anomalies by {by}: {keys[0]}", by=by)
            meta |= plot_metadata(png, name)
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name="anomalies", kinds={"delta"}, deps=[anomaly_model, training_set],
          description="Injects BAL troughs, strong lines, dead segments, calibration jumps, cosmic rays and broad "
                      "Balmer lines into held-out normal spectra and measures recovery for every score.")
def anomaly_injection(context: dg.AssetExecutionContext, anomaly_config: AnomalyConfig,
                      lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Injection/recovery on the validation split of the training set."""
    cfg, m = anomaly_config.injection, models.load_published(lakehouse)
    thr = anomaly_config.scoring.thresholds(m.meta)
    val = samples.validation_split(lakehouse)
    trials = recovery.run_injection(to_numpy_2d(val["flux"]), to_numpy_2d(val["ivar"]), val["z"].to_numpy(),
                                    val["spectype"].to_numpy(), m.net, cfg.per_kind, cfg.seed,
                                    to_numpy_2d(val["masked_frac"]), m.local)
    trials = trials.with_columns(targetid=val["targetid"].gather(trials["row"]), model_version=pl.lit(m.version))
    lakehouse.overwrite("injection_results", trials.drop("row", "snr"))
    reports = recovery.injection_reports(trials, thr, cfg.max_fpr)
    plots = lakehouse.artifact_dir("plots") / "anomaly_injection"
    plots.mkdir(parents=True, exist_ok=True)
    meta = {"trials": trials.height, "model_version": m.version, "config": dg.MetadataValue.json(cfg.model_dump()),
            "thresholds": dg.MetadataValue.json(thr._asdict()),
            "noise_limited_ceiling": dg.MetadataValue.json(recovery.noise_limited_ceiling(trials))}
    for name, rep in reports.items():
        meta |= plot_metadata(plot_completeness(rep, plots / f"completeness-{name}-{m.version}.png"),
                              f"completeness_{name}")
        meta[f"recovery_at_fpr1_{name}"] = rep["overall"]["recovery_at_fpr1"]
        meta[f"auc_{name}"] = rep["overall"]["auc"]
        meta[f"summary_{name}"] = dg.MetadataValue.json(recovery.summarise(rep))
    (plots / f"report-{m.version}.json").write_text(json.dumps(reports, default=float, indent=1))
    return dg.MaterializeResult(metadata=meta)
