"""Plots of the stellar-population layer (matplotlib Agg; no Dagster): truth vs p50, coverage, quenching diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from desi_assets.plots import save_figure

#: Axis label of each parameter in the space the validation compares it in.
LABELS = {"logmass": "log M* [M☉]", "sfr": "log SFR [M☉/yr]", "age_mw": "log age_mw [Gyr]",
          "dust_av": "A_V [mag]", "zmet": "log Z/Z☉"}
METHOD_COLORS = {"fast": "tab:blue", "bagpipes": "tab:red"}


def plot_truth_vs_p50(path: Path, points: dict[str, dict[str, dict[str, np.ndarray]]], title: str) -> Path:
    """One panel per parameter: p50 against truth with p16–p84 error bars, per method, 1:1 line.

    points[param][method] holds arrays 'truth', 'p16', 'p50', 'p84' (already in the compared space: dex or mag).
    """
    params = list(points)
    fig, axes = plt.subplots(1, max(len(params), 1), figsize=(3.1 * max(len(params), 1), 3.2), squeeze=False)
    for ax, param in zip(axes[0], params):
        lo, hi = np.inf, -np.inf
        for method, d in points[param].items():
            t, p50 = np.asarray(d["truth"], float), np.asarray(d["p50"], float)
            ok = np.isfinite(t) & np.isfinite(p50)
            if not ok.any():
                continue
            err = np.vstack([np.clip(p50 - np.asarray(d["p16"], float), 0, None),
                             np.clip(np.asarray(d["p84"], float) - p50, 0, None)])[:, ok]
            ax.errorbar(t[ok], p50[ok], yerr=np.nan_to_num(err), fmt="o", ms=2.5 if method == "fast" else 4,
                        lw=0.5, alpha=0.5 if method == "fast" else 0.9, color=METHOD_COLORS.get(method, "k"),
                        label=f"{method} ({ok.sum()})")
            lo, hi = min(lo, np.nanmin(t[ok]), np.nanmin(p50[ok])), max(hi, np.nanmax(t[ok]), np.nanmax(p50[ok]))
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        ax.set_xlabel(f"true {LABELS.get(param, param)}", fontsize=8)
        ax.set_ylabel(f"p50 {LABELS.get(param, param)}", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_coverage_histogram(path: Path, fractions: dict[str, dict[str, np.ndarray]], expected: np.ndarray,
                            edges: list[str], title: str) -> Path:
    """Where the truth falls among the posterior percentiles, per parameter and method: observed / expected.

    fractions[param][method] holds the fraction of truths in each interval between the percentiles named by
    edges (len(expected) intervals); a calibrated posterior gives 1 everywhere (axis clipped at 3).
    """
    params = list(fractions)
    fig, axes = plt.subplots(1, max(len(params), 1), figsize=(3.1 * max(len(params), 1), 3.0), squeeze=False,
                             sharey=True)
    x = np.arange(len(expected))
    for ax, param in zip(axes[0], params):
        methods = list(fractions[param])
        w = 0.8 / max(len(methods), 1)
        for i, method in enumerate(methods):
            f = np.asarray(fractions[param][method], float)
            ax.bar(x + (i - (len(methods) - 1) / 2) * w, f / expected, width=w,
                   color=METHOD_COLORS.get(method, "k"), alpha=0.8, label=method)
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_ylim(0, 3)  # bars above 3× the expected fraction are clipped
        ax.set_xticks(x)
        ax.set_xticklabels(edges, fontsize=6, rotation=45)
        ax.set_title(param, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("observed / expected fraction", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_quenching_diagram(path: Path, dn4000: np.ndarray, hdelta_a: np.ndarray, log_ssfr: np.ndarray,
                           flagged: np.ndarray | None, title: str) -> Path:
    """HδA (Å) against Dn4000 coloured by log sSFR (yr⁻¹); tension-flagged galaxies circled."""
    fig, ax = plt.subplots(figsize=(5.2, 3.9))
    ok = np.isfinite(dn4000) & np.isfinite(hdelta_a)
    c = np.where(np.isfinite(log_ssfr), log_ssfr, np.nan)[ok]
    sc = ax.scatter(dn4000[ok], hdelta_a[ok], c=c, s=6, cmap="coolwarm_r", vmin=-12.5, vmax=-8.5)
    fig.colorbar(sc, ax=ax, label="log sSFR [yr⁻¹] (p50)")
    if flagged is not None:
        f = ok & np.asarray(flagged, bool)
        ax.scatter(dn4000[f], hdelta_a[f], s=30, facecolors="none", edgecolors="k", lw=0.7,
                   label=f"tension flag ({f.sum()})")
        if f.any():
            ax.legend(fontsize=7, loc="upper right")
    ax.set_xlim(0.8, 2.4)
    ax.set_ylim(-6, 12)
    ax.set_xlabel("Dn4000")
    ax.set_ylabel("HδA [Å]")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_posterior_samples(path: Path, samples: list[dict[str, np.ndarray]], labels: list[str], title: str,
                           fast: list[dict[str, tuple[float, float, float]]] | None = None) -> Path:
    """Histograms of the posterior samples (rows: objects, up to 3; columns: parameters); fast p16/p50/p84 shaded."""
    n = max(min(len(samples), 3), 1)
    params = list(samples[0]) if samples else []
    fig, axes = plt.subplots(n, max(len(params), 1), figsize=(2.4 * max(len(params), 1), 1.8 * n + 0.5),
                             squeeze=False)
    for i, s in enumerate(samples[:3]):
        for j, p in enumerate(params):
            ax = axes[i, j]
            v = np.asarray(s[p], float)
            v = v[np.isfinite(v)]
            if v.size:
                ax.hist(v, bins=30, color=METHOD_COLORS["bagpipes"], alpha=0.7)
            if fast and i < len(fast) and p in fast[i] and np.all(np.isfinite(fast[i][p])):
                lo, mid, hi = fast[i][p]
                ax.axvspan(lo, hi, color=METHOD_COLORS["fast"], alpha=0.2)
                ax.axvline(mid, color=METHOD_COLORS["fast"], lw=1)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(p, fontsize=8)
        axes[i, 0].set_ylabel(labels[i] if i < len(labels) else "", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
