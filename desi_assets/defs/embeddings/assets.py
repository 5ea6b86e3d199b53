"""The embedding layer: embedding_model -> spectral_embeddings (LanceDB) -> embedding_index, embedding_evaluation."""

import json
import os
import time
from dataclasses import asdict

import dagster as dg
import numpy as np
import polars as pl

from desi_assets.defs.embeddings.config import EmbeddingConfig
from desi_assets.defs.metadata import plot_metadata
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.plots_embeddings import plot_embedding_loss, plot_embedding_map, plot_evaluation_bars
from desi_assets.science.embeddings import evaluate as ev
from desi_assets.science.embeddings.model import ARCHS, ArchConfig, save_model
from desi_assets.science.embeddings.tokens import REFUSALS, grid_shifts, tokenize_desi
from desi_assets.science.embeddings.train import TrainSettings, embed_arms, train_embedder
from desi_assets.science.torch_models import count_parameters, default_threads
from desi_assets.storage import vectors as vs
from desi_assets.storage.lakehouse import LakehouseResource


def _settings(config: EmbeddingConfig) -> tuple[ArchConfig, TrainSettings]:
    """Architecture and training settings from the layer config."""
    import dataclasses

    if config.arch not in ARCHS:
        raise dg.Failure(f"unknown arch {config.arch!r}; known: {sorted(ARCHS)}")
    threads = config.num_threads or default_threads()
    try:
        arch = dataclasses.replace(ARCHS[config.arch], pooling=config.pooling)
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    return arch, TrainSettings(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               mask_ratio=config.mask_ratio, patience=config.patience,
                               max_seconds=config.max_train_seconds or float("inf"), seed=config.seed,
                               device=config.device, num_threads=threads)


@dg.asset(group_name="embeddings", kinds={"pytorch"}, deps=["training_set"],
          description="SpectrumTransformer on native b/r/z patches, masked-reconstruction trained, versioned file.")
def embedding_model(context: dg.AssetExecutionContext, config: EmbeddingConfig,
                    lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Train on the training_set's class-balanced train split (native spectra), early-stop on its val split."""
    ts_version = lakehouse.version("training_set")
    ids = lakehouse.read("training_set", columns=["coadd_key", "targetid", "spectype", "split"]).unique(
        ["coadd_key", "targetid"])
    train_ids, val_ids = vs.balanced_ids(ids, config.max_train_spectra, config.seed)
    arch, settings = _settings(config)
    _, tr_arms = vs.read_native_spectra(lakehouse, None, train_ids)
    _, va_arms = vs.read_native_spectra(lakehouse, None, val_ids)
    try:
        shifts = grid_shifts(arch.patch, config.train_grid_shifts)
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    views = [tokenize_desi(tr_arms, arch.patch, s) for s in shifts]
    result = train_embedder(views, tokenize_desi(va_arms, arch.patch), arch, settings,
                            lambda e, t, v: context.log.info(f"epoch {e}: train {t:.4f}, val {v:.4f}"))
    meta = {"training_set_version": ts_version, "best_epoch": result.best_epoch, "train_rows": train_ids.height,
            "val_loss": min(h[2] for h in result.history), "seconds": round(result.seconds, 1),
            "device": str(settings.resolved_device()), "stopped_by_time": result.stopped_by_time,
            "train_grid_shifts_px": shifts}
    models = lakehouse.artifact_dir("models")
    version = save_model(result.model, models / "embedding_model-new.pt", meta)
    path = models / f"embedding_model-{version}.pt"
    (models / "embedding_model-new.pt").replace(path)
    train_ids.write_parquet(models / f"embedding_model-{version}-train_ids.parquet")
    lakehouse.publish_model(vs.MODEL_POINTER, path, version, meta)
    curve = plot_embedding_loss(result.history, lakehouse.artifact_dir("plots") / "embeddings" / f"loss-{version}.png")
    return dg.MaterializeResult(metadata={
        "model_version": version, "path": dg.MetadataValue.path(str(path)), "arch": json.dumps(asdict(arch)),
        "parameters": count_parameters(result.model), "training_seconds": meta["seconds"],
        "training_set_version": ts_version, "train_rows": train_ids.height, "val_rows": val_ids.height,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "val_loss": meta["val_loss"],
        "device": meta["device"], "stopped_by_time": result.stopped_by_time} | plot_metadata(curve, "loss_curve"))


@dg.asset(group_name="embeddings", kinds={"lancedb"}, partitions_def=coadds_partitions,
          backfill_policy=COADD_BACKFILL_POLICY, deps=[embedding_model, "preprocessed_spectra", "anomaly_model"],
          description="One LanceDB row per usable spectrum: catalogue, transformer vector, BigAE 128-d latent.")
def spectral_embeddings(context: dg.AssetExecutionContext, config: EmbeddingConfig,
                        lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Embed the partitions' native spectra; replace their rows in the model version's table (merge_insert)."""
    keys = list(context.partition_keys)
    t0 = time.perf_counter()
    model, version = vs.load_current_model(lakehouse)
    cat, arms = vs.read_native_spectra(lakehouse, keys)
    vec, chi2, refused = embed_arms(model, arms, batch_size=config.embed_batch)
    ok = refused == 0
    latent = vs.bigae_latents(lakehouse, keys, cat)
    rows = vs.vector_rows(cat.filter(pl.Series(ok)), vec[ok], None if latent is None else latent[ok], chi2[ok],
                          version)
    n = vs.write_partitions(vs.lance_uri(lakehouse.root), vs.table_name(version), rows, keys,
                            dict(lakehouse.storage_options) or None)
    codes, counts = np.unique(refused[~ok], return_counts=True)
    return dg.MaterializeResult(metadata={
        "batch_rows": n, "batch_partitions": len(keys), "refused": int((~ok).sum()),
        "refused_reasons": {REFUSALS[int(c)]: int(k) for c, k in zip(codes, counts)},
        "model_version": version, "table": vs.table_name(version), "seconds": round(time.perf_counter() - t0, 2),
        "spectra_per_s": round(len(refused) / max(time.perf_counter() - t0, 1e-9), 1),
        "median_recon_chi2": float(np.median(chi2[ok])) if ok.any() else None})


@dg.asset(group_name="embeddings", kinds={"lancedb"}, deps=[spectral_embeddings],
          description="ANN index on the vectors, its type and parameters chosen by measured recall@10 and latency.")
def embedding_index(context: dg.AssetExecutionContext, config: EmbeddingConfig,
                    lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """No index below index_min_rows (exact scan); else the fastest candidate reaching index_target_recall."""
    uri, name, _ = vs.current_table(lakehouse)
    report = vs.choose_index(vs.open_table(uri, name, dict(lakehouse.storage_options) or None),
                             config.index_min_rows, config.index_target_recall, config.index_queries, config.seed)
    lakehouse.publish_model(vs.INDEX_POINTER, lakehouse.artifact_dir("models") / f"{name}.index", name,
                            {"table": name, **report})
    return dg.MaterializeResult(metadata={k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                          for k, v in report.items()})


@dg.asset(group_name="embeddings", kinds={"sklearn"}, deps=[spectral_embeddings],
          description="5-fold CV on frozen vectors: transformer vs BigAE latent, raw 496-bin flux and its PCA-32.")
def embedding_evaluation(context: dg.AssetExecutionContext, config: EmbeddingConfig,
                         lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Linear-probe class, MLP redshift, 10-NN purity per representation; 2-D PCA map of the vectors."""
    uri, name, _ = vs.current_table(lakehouse)
    data = vs.evaluation_inputs(lakehouse, uri, name, config.eval_max_rows, config.seed)
    probe = ev.ProbeSettings(tuple(config.eval_probe_cs), config.eval_probe_balanced)
    t0 = time.perf_counter()
    jobs = config.eval_jobs or os.cpu_count() or 1
    scores, purity, xy = ev.evaluate_representations(data, config.eval_folds, config.eval_pca_dims, config.seed, probe,
                                                     jobs)
    plots = lakehouse.artifact_dir("plots") / "embeddings"
    pmap = plot_embedding_map(xy, data.spectype, data.z, plots / f"map-{name}.png")
    bars = plot_evaluation_bars({k: v["all"] for k, v in scores.items()},
                                ["probe_accuracy", "probe_balanced_accuracy", "probe_recall_QSO",
                                 "knn_balanced_accuracy"], plots / f"eval-{name}.png")
    table = ev.markdown_table(scores, purity)
    return dg.MaterializeResult(metadata={
        "rows": len(data.z), "unseen_rows": int(data.unseen.sum()), "table": name,
        "seconds": round(time.perf_counter() - t0, 1), "jobs": jobs,
        "probe": f"logistic regression, C {list(probe.cs)}, class weights {'balanced' if probe.balanced else 'none'}",
        "summary": dg.MetadataValue.md(table), "scores": dg.MetadataValue.json(scores),
        "purity": dg.MetadataValue.json(purity)} | plot_metadata(pmap, "map") | plot_metadata(bars, "scores_plot"))
