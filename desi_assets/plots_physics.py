"""Plots of the physics layer (matplotlib Agg; no Dagster): pPXF fits, index planes, validation curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from desi_assets.plots import save_figure


def plot_fits(path: Path, models: list[dict], labels: list[str], title: str) -> Path:
    """Up to 4 pPXF fits, one panel each: data (black), stellar model (red), gas model (blue); observed Å."""
    n = max(min(len(models), 4), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n + 0.4), squeeze=False)
    for i, m in enumerate(models[:4]):
        ax = axes[i, 0]
        ax.plot(m["wave"], m["data"], lw=0.5, color="k", label="data")
        ax.plot(m["wave"], m["stars"], lw=0.8, color="tab:red", label="stars")
        ax.plot(m["wave"], m["gas"], lw=0.8, color="tab:blue", label="gas")
        lo, hi = np.nanpercentile(m["data"], [0.5, 99.5])
        ax.set_ylim(min(lo, 0) - 0.1 * (hi - lo), hi + 0.2 * (hi - lo))
        ax.text(0.01, 0.85, labels[i], transform=ax.transAxes, fontsize=7)
        ax.set_ylabel("flux [1e-17]", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("observed wavelength [Å, vacuum]")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_index_plane(path: Path, dn4000: np.ndarray, hdelta_a: np.ndarray, title: str) -> Path:
    """HδA (Å) against Dn4000 for the measured rows."""
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ok = np.isfinite(dn4000) & np.isfinite(hdelta_a)
    ax.scatter(dn4000[ok], hdelta_a[ok], s=4, alpha=0.5, color="k")
    ax.set_xlim(0.8, 2.4)
    ax.set_ylim(-6, 12)
    ax.set_xlabel("Dn4000")
    ax.set_ylabel("HδA [Å]")
    ax.set_title(f"{title} ({int(ok.sum())} spectra)", fontsize=8)
    return save_figure(fig, path)


def plot_bias_curves(path: Path, curves: dict[str, dict[str, np.ndarray]], title: str,
                     xlabel: str = "continuum S/N per Å") -> Path:
    """Bias and scatter against S/N: curves[name] = {x, bias, scatter, n}; fractions (dimensionless)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, c in curves.items():
        axes[0].plot(c["x"], c["bias"], "o-", ms=3, label=name)
        axes[1].plot(c["x"], c["scatter"], "o-", ms=3, label=name)
    axes[0].axhspan(-0.05, 0.05, color="0.9")
    axes[0].axhline(0, color="0.5", lw=0.5)
    axes[1].axhline(0.15, color="0.5", lw=0.5, ls="--")
    for ax, lab in zip(axes, ("median (fit − true) / true", "scatter (1.4826 MAD)")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
