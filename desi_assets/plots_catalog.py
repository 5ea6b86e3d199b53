"""Figures of the catalog layer and the `ard` API: HEALPix sky map, spectrum with models and lines, quenching plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

#: Main lines marked on spectra: label -> vacuum rest wavelength (Å).
MAIN_LINES = {"[OII]": 3728.5, "CaK": 3934.8, "CaH": 3969.6, "Hδ": 4102.9, "Hγ": 4341.7, "Hβ": 4862.7,
              "[OIII]": 5008.2, "Mgb": 5176.7, "NaD": 5895.6, "Hα": 6564.6, "[NII]": 6585.3, "[SII]": 6725.0,
              "Lyα": 1215.7, "CIV": 1549.1, "CIII]": 1908.7, "MgII": 2799.1}


def plot_sky_map(path: Path, counts: np.ndarray, title: str) -> str:
    """Mollweide map of targets per HEALPix pixel (RING counts from storage.catalog.sky_counts); returns path."""
    import healpy as hp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nside = hp.npix2nside(counts.size)
    ipix = np.nonzero(counts)[0]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(projection="mollweide")
    if ipix.size:
        theta, phi = hp.pix2ang(nside, ipix)
        ra = np.degrees(phi)
        x = -np.radians(np.where(ra > 180, ra - 360, ra))  # east to the left, as on the sky
        y = np.radians(90 - np.degrees(theta))
        sc = ax.scatter(x, y, c=np.log10(counts[ipix]), s=4, cmap="viridis", marker="s")
        fig.colorbar(sc, ax=ax, orientation="horizontal", fraction=0.05, pad=0.08, label="log10 targets / pixel")
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    ax.set_title(f"{title} (nside {nside})", fontsize=9)
    fig.savefig(path, dpi=100)
    return str(path)


def plot_spectrum(spectrum: dict, show_model: bool = True, path: Path | str | None = None) -> Figure:
    """Flux per arm (1e-17 erg/s/cm²/Å) against observed Å, models overlaid, main lines at the object's z."""
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    colors = {"b": "tab:blue", "r": "tab:red", "z": "tab:brown"}
    hi = []
    for arm, a in spectrum["arms"].items():
        good = (a["ivar"] > 0) & (a["mask"] == 0)
        f = np.where(good, a["flux"], np.nan)
        ax.plot(a["wave"], f, lw=0.4, color=colors.get(arm, "k"), label=f"{arm} arm")
        if good.any():
            hi.append(np.nanpercentile(f, 99.5))
    if show_model:
        for name, (wave, flux) in spectrum.get("models", {}).items():
            ax.plot(wave, flux, lw=1.0, color="k", alpha=0.8, label=name)
    z = spectrum.get("z")
    if z is not None and np.isfinite(z):
        lo_w = min(a["wave"][0] for a in spectrum["arms"].values())
        hi_w = max(a["wave"][-1] for a in spectrum["arms"].values())
        for label, rest in MAIN_LINES.items():
            obs = rest * (1 + z)
            if lo_w <= obs <= hi_w:
                ax.axvline(obs, color="grey", lw=0.6, ls=":")
                ax.text(obs, 1.0, label, transform=ax.get_xaxis_transform(), rotation=90, fontsize=7, va="top")
    if hi:
        ax.set_ylim(top=1.2 * max(hi))
    ax.set_xlabel("observed wavelength (Å, vacuum)")
    ax.set_ylabel("flux (1e-17 erg/s/cm²/Å)")
    ax.set_title(f"TARGETID {spectrum['targetid']}  {spectrum.get('spectype') or ''}  z = {z if z is None else f'{z:.4f}'}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def quenching_diagram(dn4000: np.ndarray, hdelta_a: np.ndarray, color: np.ndarray | None = None,
                      color_label: str = "", path: Path | str | None = None, title: str = "") -> Figure:
    """HδA (Å) against Dn4000: the quenching plane (Kauffmann+03); optional colour coding."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    sc = ax.scatter(dn4000, hdelta_a, s=6, alpha=0.7, **({"c": color, "cmap": "coolwarm"} if color is not None
                                                        else {"color": "k"}))
    if color is not None:
        fig.colorbar(sc, ax=ax, label=color_label)
    ax.set_xlabel("Dn4000")
    ax.set_ylabel("HδA (Å)")
    ax.set_title(title or f"quenching diagram ({len(dn4000)} objects)", fontsize=9)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
