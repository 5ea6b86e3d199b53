"""Small PNG plots for asset metadata (matplotlib Agg; no Dagster)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 80) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns its path."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_spectra(path: Path, wave: np.ndarray, flux: np.ndarray, labels: list[str], title: str,
                 ylabel: str = "flux [1e-17 erg/s/cm²/Å]", model: np.ndarray | None = None,
                 spans: list[tuple[float, float]] | None = None) -> Path:
    """Plot up to 4 spectra (rows of flux on one wavelength grid in Å) stacked, one panel each; spans shaded (Å)."""
    n = min(len(flux), 4)
    fig, axes = plt.subplots(max(n, 1), 1, figsize=(9, 1.8 * max(n, 1) + 0.4), sharex=True, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.plot(wave, flux[i], lw=0.5, color="k")
        if model is not None:
            ax.plot(wave, model[i], lw=0.8, color="tab:red", alpha=0.8)
        if spans is not None and np.all(np.isfinite(spans[i])):
            ax.axvspan(*spans[i], color="tab:orange", alpha=0.25, lw=0)
        lo, hi = np.nanpercentile(flux[i], [1, 99]) if np.isfinite(flux[i]).any() else (0, 1)
        pad = 0.15 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
        ax.text(0.01, 0.85, labels[i], transform=ax.transAxes, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=7)
    axes[-1, 0].set_xlabel("observed wavelength [Å, vacuum]")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def png_markdown(path: Path | str, width_px: int = 480, title: str = "") -> str:
    """Markdown image of the PNG at `path` as a base64 data: URI, at most `width_px` wide, 256 colours (~10-30 KB).

    Dagster's UI renders it (its sanitizer allows data: image sources) in the metadata entry's
    "[Show Markdown]" dialog; Markdown over 1,000 characters is never drawn in the table itself.
    """
    import base64
    import io

    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.width > width_px:
            img = img.resize((width_px, max(1, round(img.height * width_px / img.width))), Image.LANCZOS)
        # an adaptive 256-colour palette: plots lose nothing visible and shrink 3-4x against RGB
        img = img.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    alt = (title or Path(path).stem).replace("[", "(").replace("]", ")")
    return f"![{alt}](data:image/png;base64,{data})"


def plot_loss_curve(history: list[tuple[int, float, float]], path: str | Path) -> str:
    """Write a PNG of train/val MSE (normalised flux², log y) against epoch; return the path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if history:
        ep, tr, va = (np.asarray(c, dtype=float) for c in zip(*history))
        ax.plot(ep, tr, "o-", ms=3, label="train MSE")
        ax.plot(ep, va, "s-", ms=3, label="val MSE")
        best = int(ep[int(np.argmin(va))])
        ax.axvline(best, color="grey", ls=":", label=f"best epoch {best}")
        if np.all(np.concatenate([tr, va]) > 0):
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (normalised flux²)")
    ax.set_title("BigAE training loss")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return str(path)


def plot_completeness(report: dict, path: str | Path) -> str:
    """PNG of injection recovery vs amplitude (one panel per kind, amplitude in that kind's units); return path."""
    from matplotlib.figure import Figure

    kinds = [k for k in report if k != "overall" and "completeness" in report[k]]
    ncol = 3
    nrow = max(1, int(np.ceil(len(kinds) / ncol)))
    fig = Figure(figsize=(4 * ncol, 3 * nrow), dpi=100)
    for i, k in enumerate(kinds):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        c = report[k]["completeness"]
        ax.plot(c["amplitude"], c["recovery"], "o-")
        ax.axhline(0.5, color="grey", ls=":")
        if np.isfinite(report[k].get("amplitude_50", np.nan)):
            ax.axvline(report[k]["amplitude_50"], color="r", ls="--")
        if c["amplitude"] and min(c["amplitude"]) > 0:
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{k} (AUC {report[k]['auc']:.2f})", fontsize=9)
        ax.set_xlabel(report[k].get("amplitude_unit", "amplitude")[:40], fontsize=7)
        ax.set_ylabel("recovery")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return str(p)


def plot_anomaly_gallery(path: Path, scored, flux: np.ndarray, recon: np.ndarray, n: int, title: str,
                         by: str = "score") -> Path:
    """Top-n rows of a scored frame by column `by`, with reconstructions; for score_local the feature is shaded (Å)."""
    from desi_assets.science.wavelength import BIN_WIDTH_A, binned_wavelength

    col = lambda name: scored[name].to_numpy()  # noqa: E731
    order = np.argsort(-np.nan_to_num(col(by), nan=-np.inf))[:n]
    tid = col("targetid")
    if by == "score_local":
        wave, width = col("local_wave"), col("local_width_bins")
        labels = [f"TARGETID {tid[i]}  score_local {col('score_local')[i]:.1f}  ({col('local_sigma')[i]:.0f}σ at "
                  f"{wave[i]:.0f} Å, {width[i]} bins; arm step {col('arm_step_sigma')[i]:.1f}σ)" for i in order]
        half = width[order] * (BIN_WIDTH_A / 2)
        spans = list(zip(wave[order] - half, wave[order] + half))
    else:
        labels = [f"TARGETID {tid[i]}  score {col('score')[i]:.1f}  {col('category')[i]} / {col('dominance')[i]}"
                  for i in order]
        spans = None
    return plot_spectra(path, binned_wavelength(), flux[order], labels, title, ylabel="normalised flux",
                        model=recon[order], spans=spans)
