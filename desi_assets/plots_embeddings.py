"""Plots of the embedding layer (matplotlib Agg; no Dagster): loss curve, 2-D map, evaluation bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CLASS_COLOURS = {"GALAXY": "tab:blue", "QSO": "tab:red", "STAR": "tab:green"}


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_embedding_loss(history: list[tuple[int, float, float]], path: Path | str) -> Path:
    """Train/val masked-reconstruction loss (χ² per pixel, log y) against epoch."""
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if history:
        ep, tr, va = (np.asarray(c, float) for c in zip(*history))
        ax.plot(ep, tr, "o-", ms=3, label="train")
        ax.plot(ep, va, "s-", ms=3, label="val (fixed masks)")
        if np.all(np.concatenate([tr, va]) > 0):
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Σ m (y − ŷ)² ivar / Σ m")
    ax.set_title("SpectrumTransformer masked reconstruction")
    ax.legend()
    return _save(fig, path)


def plot_embedding_map(xy: np.ndarray, spectype: np.ndarray, z: np.ndarray, path: Path | str,
                       title: str = "embedding PCA") -> Path:
    """Two panels of a 2-D map (e.g. PCA) of the vectors: coloured by class and by redshift."""
    fig = Figure(figsize=(10, 4.2), dpi=90)
    FigureCanvasAgg(fig)
    a1, a2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for c, col in CLASS_COLOURS.items():
        sel = spectype == c
        a1.scatter(xy[sel, 0], xy[sel, 1], s=3, c=col, label=f"{c} ({sel.sum()})", alpha=0.6, lw=0)
    a1.legend(markerscale=4, fontsize=8)
    a1.set_title(f"{title}: class")
    sc = a2.scatter(xy[:, 0], xy[:, 1], s=3, c=np.log1p(z), cmap="viridis", lw=0)
    fig.colorbar(sc, ax=a2, label="log(1+z)")
    a2.set_title(f"{title}: redshift")
    for a in (a1, a2):
        a.set_xlabel("PC1")
        a.set_ylabel("PC2")
    return _save(fig, path)


def plot_evaluation_bars(scores: dict[str, dict[str, float]], metrics: list[str], path: Path | str) -> Path:
    """Grouped bars of metrics (fold means with std error bars) for each representation."""
    fig = Figure(figsize=(10, 4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = list(scores)
    w = 0.8 / max(len(names), 1)
    x = np.arange(len(metrics))
    for i, n in enumerate(names):
        m = [scores[n].get(k, {}).get("mean", np.nan) for k in metrics]
        s = [scores[n].get(k, {}).get("std", 0.0) for k in metrics]
        ax.bar(x + i * w, m, w, yerr=s, label=n)
    ax.set_xticks(x + 0.4 - w / 2, metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("5-fold CV on frozen vectors")
    return _save(fig, path)
