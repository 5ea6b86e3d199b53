"""Plot mock spectra of each class next to a real DESI (iron) spectrum, for eyeballing realism."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from astropy.io import fits  # noqa: E402
from scipy.ndimage import gaussian_filter1d  # noqa: E402

REAL_IRON = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "desi-real" / "iron" / "tiles" / \
    "cumulative" / "80613" / "20210324" / "coadd-4-80613-thru20210324.fits"
COLORS = {"B": "tab:blue", "R": "tab:red", "Z": "dimgray"}


def _read(path: Path, rows: list[int]):
    """Per arm (wave, flux, ivar) for the given rows of a coadd file."""
    out = {}
    with fits.open(path, memmap=True) as h:
        for a in "BRZ":
            out[a] = (np.asarray(h[f"{a}_WAVELENGTH"].data), np.asarray(h[f"{a}_FLUX"].data[rows], dtype=float),
                      np.asarray(h[f"{a}_IVAR"].data[rows], dtype=float))
    return out


def _panel(ax, arms, row, title, z=None):
    """Raw flux (light) + 3-pixel-smoothed flux per arm, y-range from percentiles."""
    allf = []
    for a, (w, f, iv) in arms.items():
        fl = f[row]
        good = iv[row] > 0
        ax.plot(w, np.where(good, fl, np.nan), color=COLORS[a], alpha=0.25, lw=0.4)
        sm = gaussian_filter1d(np.where(good, fl, 0.0), 3)
        ax.plot(w, np.where(good, sm, np.nan), color=COLORS[a], lw=0.7)
        allf.append(sm[good])
    allf = np.concatenate(allf) if allf else np.zeros(1)
    lo, hi = np.percentile(allf, [0.5, 99.7])
    pad = 0.15 * (hi - lo + 1e-3)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(3550, 9900)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(r"$F_\lambda$ [$10^{-17}$ erg/s/cm$^2$/Å]", fontsize=7)


def make_plots(survey_dir: Path, out_dir: Path, per_class: int = 2) -> list[Path]:
    """Write one PNG per class (BGS, LRG, ELG, QSO, STAR, anomalies) with the real iron spectrum on top."""
    survey_dir, out_dir = Path(survey_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truths = []
    for p in sorted(survey_dir.rglob("truth-*.parquet")):
        t = pl.read_parquet(p).with_row_index("row").with_columns(pl.lit(str(p)).alias("truth_path"))
        truths.append(t)
    truth = pl.concat(truths, how="diagonal_relaxed")
    real = _read(REAL_IRON, [0]) if REAL_IRON.exists() else None
    groups = {
        "bgs": pl.col("tracer") == "BGS", "lrg": pl.col("tracer") == "LRG", "elg": pl.col("tracer") == "ELG",
        "qso": (pl.col("tracer") == "QSO") & pl.col("anomaly_class").is_null(), "star": pl.col("tracer") == "MWS",
        "anomaly_bal": pl.col("anomaly_class") == "bal",
        "anomaly_extreme_emitter": pl.col("anomaly_class") == "extreme_emitter",
        "anomaly_instrumental": pl.col("anomaly_class").is_in(["dead_segment", "calibration_jump", "cosmic_ray"]),
    }
    written = []
    for name, cond in groups.items():
        sel = truth.filter(cond & (pl.col("anomaly_class").is_null() if not name.startswith("anomaly") else True))
        if sel.height == 0:
            continue
        sel = sel.sort("targetid").head(50).sample(min(per_class, sel.height), seed=1)
        fig, axes = plt.subplots(per_class + 1, 1, figsize=(11, 2.6 * (per_class + 1)), sharex=True)
        if real is not None:
            _panel(axes[0], real, 0, "REAL DESI iron tile 80613 (SV1 BGS emission-line galaxy, z=0.3687)")
        for k, r in enumerate(sel.iter_rows(named=True)):
            coadd = Path(r["truth_path"]).with_name(Path(r["truth_path"]).name.replace("truth-", "coadd-")
                                                    .replace(".parquet", ".fits"))
            arms = _read(coadd, [r["row"]])
            extra = f" anomaly={r['anomaly_class']} amp={r['anomaly_amplitude']:.3g}" if r["anomaly_class"] else ""
            sub = f" {r['subtype']}" if r.get("subtype") else ""
            _panel(axes[k + 1], arms, 0, f"MOCK {r['program']} {r['tracer']}{sub} {r['spectype']} "
                   f"z={r['z']:.4f} mag={r['mag_norm']:.2f}{extra}")
        axes[-1].set_xlabel("observed wavelength [Å] (vacuum)")
        fig.tight_layout()
        p = out_dir / f"mock_vs_real_{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


if __name__ == "__main__":
    import sys

    print(make_plots(Path(sys.argv[1]), Path(sys.argv[2])))
