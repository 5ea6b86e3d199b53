"""Cosmic-web figures: a slice of δ with the skeleton and galaxies by class; Σ5 by web class (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from desi_assets.plots import save_figure

CLASS_COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:red")
CLASS_NAMES = ("void", "sheet", "filament", "knot")


def plot_web_slice(path: Path, sl: dict, title: str) -> Path:
    """log(1+δ) in a slab (grid frame x–z, Mpc), skeleton segments in black, galaxies coloured by web class."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    img = np.log10(np.clip(1 + sl["delta"], 1e-2, None))
    ax.imshow(img, origin="lower", extent=sl["extent"], cmap="Greys", aspect="auto", vmin=-1, vmax=1.2)
    for s in sl["segments_xz"]:
        ax.plot(s[:, 1], s[:, 0], color="k", lw=0.6)
    g, c = sl["galaxies_xz"], sl["galaxy_class"]
    if (c < 0).any():  # outside the field's window (or the lattice): no class
        ax.scatter(g[c < 0, 1], g[c < 0, 0], s=2, color="0.6", label="no class")
    for k in range(4):
        m = c == k
        ax.scatter(g[m, 1], g[m, 0], s=3, color=CLASS_COLORS[k], label=CLASS_NAMES[k])
    if len(g):
        pad = 20.0
        ax.set_xlim(g[:, 1].min() - pad, g[:, 1].max() + pad)
        ax.set_ylim(g[:, 0].min() - pad, g[:, 0].max() + pad)
    ax.set_xlabel("line of sight (grid z), Mpc")
    ax.set_ylabel("transverse (grid x), Mpc")
    ax.legend(fontsize=7, markerscale=3, loc="upper right")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=90)


def plot_sigma5_by_class(path: Path, sigma5: np.ndarray, classes: np.ndarray, title: str) -> Path:
    """Histograms of log10 Σ5 (Mpc⁻²) per web class."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ok = np.isfinite(sigma5) & (sigma5 > 0)
    bins = np.linspace(-3, 2, 41)
    for k in range(4):
        m = ok & (classes == k)
        if m.any():
            ax.hist(np.log10(sigma5[m]), bins=bins, histtype="step", color=CLASS_COLORS[k], density=True,
                    label=f"{CLASS_NAMES[k]} ({m.sum()})")
    ax.set_xlabel("log10 Σ5 [Mpc⁻²]")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=90)


def plot_calibration(path: Path, rows: list[dict], bands: dict[str, tuple[float, float]], title: str) -> Path:
    """Mock-truth accuracy (left) and volume fractions per class (right, shaded: published bands) against λ_th."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    mode = lambda r: r.get("tidal_field", "local")  # noqa: E731  (survey: the one survey-wide field)
    keys = sorted({(r["R_s"], r["tidal_radius"], mode(r)) for r in rows}, key=lambda k: (k[0], k[1] or 1e9, k[2]))
    for rs, rt, md in keys:
        sel = sorted((r for r in rows if (r["R_s"], r["tidal_radius"], mode(r)) == (rs, rt, md)),
                     key=lambda r: r["lambda_th"])
        th = [r["lambda_th"] for r in sel]
        label = f"R_s={rs:g}, " + ("survey field" if md == "survey" else f"r_t={'∞' if rt is None else f'{rt:g}'}")
        a1.plot(th, [r["accuracy"] for r in sel], marker="o", label=label)
        for k, name in enumerate(CLASS_NAMES):
            a2.plot(th, [r[f"vol_{name}"] for r in sel], color=CLASS_COLORS[k], alpha=0.4 + 0.6 * (rt is None),
                    ls="-" if rt is None else "--")
    for k, name in enumerate(CLASS_NAMES):
        lo, hi = bands[name]
        a2.axhspan(lo, hi, color=CLASS_COLORS[k], alpha=0.15, label=f"{name} (published)")
    a1.set(xlabel="λ_th", ylabel="galaxy accuracy vs mock truth")
    a2.set(xlabel="λ_th", ylabel="volume fraction (solid r_t=∞, dashed compact)")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
