"""Small PNG plots for asset metadata (matplotlib Agg; no Dagster)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def png_markdown(path: Path | str, width_px: int = 480, title: str = "") -> str:
    """Markdown with the PNG at `path` inline as base64, downsized to `width_px` pixels wide (tens of KB)."""
    import base64
    import io

    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.width > width_px:
            img = img.resize((width_px, max(1, round(img.height * width_px / img.width))), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{title or Path(path).stem}](data:image/png;base64,{data})"
