"""The embedding layer's ceiling: the same SpectrumTransformer trained end to end on the labels (class and
redshift), next to the frozen vectors' probes, on one held-out fold of the rows `embedding_evaluation` scores.

If even the supervised encoder misses a target, self-supervised vectors with a probe cannot reach it at this
data size, architecture and training budget. Needs a lakehouse where `make demo` has run:

    .venv/bin/python bench/embedding_ceiling.py --lakehouse lakehouse [--seconds 600] [--train-fraction 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import polars as pl
import torch

from desi_assets.science.embeddings import evaluate as ev
from desi_assets.science.embeddings.model import ARCHS
from desi_assets.science.embeddings.tokens import tokenize_desi
from desi_assets.science.embeddings.train import TrainSettings, predict_supervised, train_supervised
from desi_assets.storage import vectors as vs
from desi_assets.storage.lakehouse import LakehouseResource

#: (metric key, label, target on the mock from issue 12; None = no target).
ROWS = [("balanced_accuracy", "balanced accuracy", "≥ 0.95"), ("recall_GALAXY", "recall GALAXY", "≥ 0.97"),
        ("recall_QSO", "recall QSO", "≥ 0.90"), ("recall_STAR", "recall STAR", "≥ 0.98"),
        ("nmad_GALAXY", "GALAXY z NMAD", "≤ 0.003"), ("eta_GALAXY", "GALAXY z η", "≤ 0.01"),
        ("nmad_GALAXY_low_snr", "GALAXY z NMAD, low-S/N third", "≤ 0.01"),
        ("eta_GALAXY_low_snr", "GALAXY z η, low-S/N third", "≤ 0.03"),
        ("nmad_QSO", "QSO z NMAD", "≤ 0.01"), ("eta_QSO", "QSO z η", "≤ 0.05"),
        ("purity", "10-NN purity (within the test fold)", "≥ 0.95"),
        ("purity_QSO", "10-NN purity QSO (within the test fold)", "≥ 0.85")]


def aligned_arms(lh: LakehouseResource, ids: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Native per-arm (flux, ivar, mask) in the row order of ids (coadd_key, targetid)."""
    cat, arms = vs.read_native_spectra(lh, None, ids)
    order = ids.with_row_index("i").join(cat.select("coadd_key", "targetid").with_row_index("j"),
                                         on=["coadd_key", "targetid"], how="left").sort("i")["j"]
    if order.null_count():
        raise SystemExit(f"{order.null_count()} evaluated rows have no native spectrum in the lakehouse")
    j = order.to_numpy()
    return {a: tuple(x[j] for x in v) for a, v in arms.items()}


def scores(labels: np.ndarray, z: np.ndarray, snr: np.ndarray, test: np.ndarray, cls: np.ndarray,
           zp: np.ndarray, vectors: np.ndarray) -> dict[str, float]:
    """Class and redshift scores of one split's predictions on its test rows; 10-NN purity among the test vectors."""
    return (ev.class_scores(labels[test], cls) | ev.redshift_scores(z[test], zp, labels[test], snr[test])
            | ev.neighbour_purity(np.asarray(vectors, np.float64), labels[test], z[test]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lakehouse", default="lakehouse")
    p.add_argument("--arch", default="small", choices=sorted(ARCHS))
    p.add_argument("--width", type=int, default=0, help="override the architecture's width (0 = as shipped)")
    p.add_argument("--seconds", type=float, default=600.0, help="wall-clock cap on the supervised training (s)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-fraction", type=float, default=1.0, help="share of the training folds used")
    p.add_argument("--folds", type=int, default=5, help="the first of this many folds is the test set")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    lh = LakehouseResource(root=a.lakehouse)
    uri, name, _ = vs.current_table(lh)
    data = vs.evaluation_inputs(lh, uri, name, 0, a.seed)
    n = len(data.z)
    test = np.sort(ev.kfold_indices(n, a.folds, a.seed)[0])
    train = np.setdiff1d(np.arange(n), test)
    if a.train_fraction < 1.0:
        train = np.sort(np.random.default_rng(a.seed).choice(train, int(round(a.train_fraction * train.size)),
                                                             replace=False))
    print(f"{name}: {n} evaluated rows; supervised on {train.size}, test fold {test.size} "
          f"({', '.join(f'{c} {int((data.spectype[test] == c).sum())}' for c in ev.CLASSES)})", flush=True)

    cols: dict[str, dict[str, float]] = {}
    reps = {"transformer (frozen)": data.transformer, "BigAE latent (frozen)": data.latent,
            "raw 496 (frozen)": data.flux}
    for rep, x in reps.items():
        if x is None:
            continue
        t0 = time.perf_counter()
        r = ev.fit_predict(np.asarray(x, np.float64), data.spectype, data.z, train, test, a.seed)
        cols[rep] = scores(data.spectype, data.z, data.snr, test, r.probe_class, r.z_pred, np.asarray(x)[test])
        print(f"  probes on {rep}: {time.perf_counter() - t0:.1f} s", flush=True)

    arch = dataclasses.replace(ARCHS[a.arch], **({"width": a.width} if a.width else {}))
    threads = a.threads or torch.get_num_threads()
    t0 = time.perf_counter()
    tok = tokenize_desi(aligned_arms(lh, data.ids), arch.patch)
    print(f"  native spectra read and tokenised: {time.perf_counter() - t0:.1f} s", flush=True)
    codes = np.searchsorted(ev.CLASSES, data.spectype)
    settings = TrainSettings(epochs=a.epochs, lr=a.lr, max_seconds=a.seconds, seed=a.seed, device=a.device,
                             num_threads=threads)
    res = train_supervised(tok.rows(train), codes[train], data.z[train], arch, settings,
                           n_classes=len(ev.CLASSES),
                           progress=lambda e, loss: print(f"  supervised epoch {e}: loss {loss:.4f}", flush=True))
    code, zp, vec = predict_supervised(res, tok.rows(test))
    cls = np.where(code >= 0, np.array(ev.CLASSES)[np.clip(code, 0, None)], "REFUSED")
    label = (f"transformer width {arch.width}, supervised ({len(res.history)} epochs, {res.seconds:.0f} s, "
             f"{threads} threads)")
    cols[label] = scores(data.spectype, data.z, data.snr, test, cls, zp, vec)

    names = list(cols)
    print("\n| metric | " + " | ".join(names) + " | target |")
    print("|---|" + "---|" * (len(names) + 1))
    for key, text, target in ROWS:
        print(f"| {text} | " + " | ".join(f"{cols[c].get(key, float('nan')):.4f}" for c in names) + f" | {target} |")
    print(f"\nsupervised training stopped by the time cap: {res.stopped_by_time}; "
          f"loss by epoch: {', '.join(f'{loss:.3f}' for _, loss in res.history)}")


if __name__ == "__main__":
    main()
