"""Measure DESI per-arm noise curves from the real coadds in ../shared/data and write the mock's table.

One-off script (the product never reads ../shared): for each real spectrum with data, the per-pixel
noise σ = 1/√ivar (1e-17 erg/s/cm²/Å). The *shape* per arm is the median over all spectra of σ divided
by that spectrum's own arm median (41 spectra with data: QSO, galaxy and fibre-cut files); the *level* per arm
is the median over the dark-time spectra whose FIBERMAP gives COADD_EXPTIME, of σ·√(t/1000 s).
σ_cont is the running 20th percentile of the curve over 61 pixels (the noise between sky lines);
σ² − σ_cont² is the sky-line excess the mock uses for sky-subtraction residuals.

    .venv/bin/python tools/noise_curves.py   # writes desi_assets/sources/mock/data/noise_curves.npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import percentile_filter

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "desi-real"
OUT = ROOT / "desi_assets" / "sources" / "mock" / "data" / "noise_curves.npz"


def real_spectra(real: Path = REAL):
    """Yield (path, row, arm → σ array, exptime s or None, program) for every real row with data."""
    for p in sorted(real.rglob("*.fits")):
        if not (p.name.startswith("coadd") or p.name == "test_coadd.fits"):
            continue
        with fits.open(p) as h:
            names = {x.name for x in h}
            if not {"B_IVAR", "R_IVAR", "Z_IVAR"} <= names:
                continue
            iv = {a: np.asarray(h[f"{a.upper()}_IVAR"].data, dtype=np.float64) for a in "brz"}
            ext = None
            if "FIBERMAP" in names and "COADD_EXPTIME" in h["FIBERMAP"].columns.names:
                ext = np.asarray(h["FIBERMAP"].data["COADD_EXPTIME"], dtype=np.float64)
            prog = str(h[0].header.get("PROGRAM", "")).strip() or ("dark" if "dark" in str(p) else "")
            for j in range(iv["b"].shape[0]):
                if not all((iv[a][j] > 0).mean() > 0.5 for a in "brz"):
                    continue  # broken / unassigned fibre or an all-zero row
                sig = {a: np.where(iv[a][j] > 0, 1 / np.sqrt(np.where(iv[a][j] > 0, iv[a][j], 1)), np.nan)
                       for a in "brz"}
                t = float(ext[j]) if ext is not None and ext[j] > 0 else None
                yield p, j, sig, t, prog


def measure(real: Path = REAL) -> dict[str, np.ndarray]:
    """Per arm: median normalised shape × dark level per 1,000 s, and its continuum (σ between sky lines)."""
    rows = list(real_spectra(real))
    out: dict[str, np.ndarray] = {"n_shape": np.array(len(rows))}
    dark = [r for r in rows if r[3] is not None and "dark" in r[4]]
    out["n_level"] = np.array(len(dark))
    for a in "brz":
        shapes = np.array([r[2][a] / np.nanmedian(r[2][a]) for r in rows])
        shape = np.nanmedian(shapes, axis=0)
        level = np.median([np.nanmedian(r[2][a]) * np.sqrt(r[3] / 1000.0) for r in dark])
        sig = shape * level
        sig = np.where(np.isfinite(sig), sig, np.nanmedian(sig))
        cont = percentile_filter(sig, 20, size=61, mode="nearest")
        out[f"sigma_{a}"] = sig.astype(np.float32)
        out[f"sigma_cont_{a}"] = np.minimum(cont, sig).astype(np.float32)
    return out


def main() -> None:
    if not REAL.exists():
        raise SystemExit(f"{REAL} not found: the real DESI files are needed to measure the curves")
    t = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **t)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB) from {int(t['n_shape'])} spectra "
          f"(level from {int(t['n_level'])} dark spectra with COADD_EXPTIME)")
    for a in "brz":
        s = t[f"sigma_{a}"]
        print(f"  {a}: median σ per 1,000 s dark {np.median(s):.3f}, 5–95% {np.percentile(s, 5):.3f}–"
              f"{np.percentile(s, 95):.3f}")


if __name__ == "__main__":
    main()
