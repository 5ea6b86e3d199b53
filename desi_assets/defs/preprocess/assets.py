"""preprocessed_spectra: the seed's 496-bin normalised spectra for usable targets.

The asset is computed by the ``coadd_ingest`` multi-asset (``defs/ingest/assets.py``) from the
arrays just read, so a backfill never reads ``spectra`` back; materialized on its own it reads
``spectra`` (``preprocess_partition``). This module holds its spec and the table-building code.
"""


import dagster as dg
import numpy as np
import polars as pl

from desi_assets.plots import plot_spectra
from desi_assets.science.preprocess import preprocess
from desi_assets.science.wavelength import ARMS, binned_wavelength
from desi_assets.storage.arrays import to_list_array, to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource

KEY_COLS = ["coadd_key", "survey", "program", "healpix", "hpxgroup", "targetid"]

preprocessed_spectra = dg.AssetSpec(
    "preprocessed_spectra",
    deps=["raw_spectra"],
    group_name="preprocess",
    kinds={"delta", "numpy"},
    description="16x binning of each arm to 496 bins, NaN/Inf -> 0, divided by median |flux|; "
                "unusable spectra (fibre status, no data, bad TARGETID) are excluded and counted.",
)


def preprocessed_rows(keys: pl.DataFrame, arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                      usable: np.ndarray) -> tuple[pl.DataFrame, int]:
    """`preprocessed_spectra` rows from key columns and per-arm (flux, ivar, mask) arrays; also the count excluded."""
    usable = np.asarray(usable, dtype=bool)
    rows = keys.filter(pl.Series(usable))
    arms = {a: tuple(x[usable] for x in v) for a, v in arms.items()}
    if rows.height == 0:
        arms = {a: (np.zeros((0, ARMS[a].npix), np.float32),) * 3 for a in ARMS}
    pre = preprocess(arms)
    ok = pre.valid
    out = rows.select(KEY_COLS).filter(pl.Series(ok)).with_columns(
        pl.Series("flux", to_list_array(pre.flux[ok])),
        pl.Series("ivar", to_list_array(pre.ivar[ok])),
        pl.Series("masked_frac", to_list_array(pre.masked_frac[ok])),
        pl.Series("norm", pre.norm[ok]),
    )
    return out, int(keys.height - out.height)


def preprocess_partition(spectra: pl.DataFrame, usable: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rows for the usable spectra of a `spectra` table slice (read back from Delta); also the count excluded."""
    ok = spectra.select("coadd_key", "targetid").join(
        usable.select("coadd_key", "targetid", "usable"), on=["coadd_key", "targetid"], how="left")["usable"]
    arms = {a: (to_numpy_2d(spectra[f"flux_{a}"]), to_numpy_2d(spectra[f"ivar_{a}"]),
                to_numpy_2d(spectra[f"mask_{a}"], np.int32)) for a in ARMS}
    return preprocessed_rows(spectra.select(KEY_COLS), arms, ok.fill_null(False).to_numpy())


def read_back_and_preprocess(lakehouse: LakehouseResource, keys: list[str]) -> tuple[pl.DataFrame, int]:
    """Preprocess the given partitions from the `spectra` table, one file's arrays in memory at a time."""
    usable = lakehouse.read("targets", keys=keys, columns=["coadd_key", "targetid", "usable"])
    columns = KEY_COLS + [f"{w}_{a}" for a in ARMS for w in ("flux", "ivar", "mask")]
    outs, excluded = [], 0
    for key in keys:
        part, n_excluded = preprocess_partition(lakehouse.read("spectra", keys=[key], columns=columns), usable)
        outs.append(part)
        excluded += n_excluded
    return (pl.concat(outs) if outs else pl.DataFrame()), excluded


def example_plot(lakehouse: LakehouseResource, out: pl.DataFrame, tag: str) -> str | None:
    """PNG of the first three preprocessed spectra of a run (normalised flux vs Å); its path."""
    if out.height == 0:
        return None
    path = lakehouse.artifact_dir("plots") / "preprocessed_spectra" / f"{tag}.png"
    return str(plot_spectra(path, binned_wavelength(), to_numpy_2d(out["flux"][:3]),
                            [f"TARGETID {t}" for t in out["targetid"][:3]], f"preprocessed (496 bins): {tag}",
                            ylabel="flux / median|flux|"))
