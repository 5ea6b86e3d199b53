"""preprocessed_spectra: the seed's 496-bin normalised spectra for usable targets."""


import time

import dagster as dg
import numpy as np
import polars as pl

from desi_assets.defs.ingest.assets import raw_spectra
from desi_assets.defs.partitions import COADD_BACKFILL_POLICY, coadds_partitions
from desi_assets.plots import plot_spectra
from desi_assets.science.preprocess import preprocess
from desi_assets.science.wavelength import ARMS, binned_wavelength
from desi_assets.storage.arrays import to_list_array, to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource

KEY_COLS = ["coadd_key", "survey", "program", "healpix", "hpxgroup", "targetid"]


class PreprocessConfig(dg.Config):
    """Options for preprocessing."""

    make_plot: bool = True  # write a PNG of example binned spectra per run


def preprocess_partition(spectra: pl.DataFrame, usable: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Binned, normalised rows for the usable spectra of one batch; also the count excluded."""
    rows = spectra.join(usable.filter(pl.col("usable")).select("coadd_key", "targetid"),
                        on=["coadd_key", "targetid"], how="semi")
    excluded = spectra.height - rows.height
    arms = {a: (to_numpy_2d(rows[f"flux_{a}"]), to_numpy_2d(rows[f"ivar_{a}"]),
                to_numpy_2d(rows[f"mask_{a}"], np.int32)) for a in ARMS}
    if rows.height == 0:
        arms = {a: (np.zeros((0, ARMS[a].npix), np.float32),) * 3 for a in ARMS}
    pre = preprocess(arms)
    ok = pre.valid
    excluded += int((~ok).sum())
    out = rows.select(KEY_COLS).filter(pl.Series(ok)).with_columns(
        pl.Series("flux", to_list_array(pre.flux[ok])),
        pl.Series("ivar", to_list_array(pre.ivar[ok])),
        pl.Series("masked_frac", to_list_array(pre.masked_frac[ok])),
        pl.Series("norm", pre.norm[ok]),
    )
    return out, excluded


@dg.asset(
    partitions_def=coadds_partitions,
    backfill_policy=COADD_BACKFILL_POLICY,
    deps=[raw_spectra],
    group_name="preprocess",
    kinds={"delta", "numpy"},
    description="16x binning of each arm to 496 bins, NaN/Inf -> 0, divided by median |flux|; "
                "unusable spectra (fibre status, no data, bad TARGETID) are excluded and counted.",
)
def preprocessed_spectra(context: dg.AssetExecutionContext, config: PreprocessConfig,
                         lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Preprocess this run's partitions from the `spectra` table into `preprocessed_spectra`."""
    t0 = time.perf_counter()
    keys = list(context.partition_keys)
    usable = lakehouse.read("targets", keys=keys, columns=["coadd_key", "targetid", "usable"])
    columns = KEY_COLS + [f"{w}_{a}" for a in ARMS for w in ("flux", "ivar", "mask")]
    outs, excluded = [], 0
    for key in keys:  # one file's arrays in memory at a time
        part, n_excluded = preprocess_partition(lakehouse.read("spectra", keys=[key], columns=columns), usable)
        outs.append(part)
        excluded += n_excluded
    out = pl.concat(outs) if outs else pl.DataFrame()
    lakehouse.write_partitions("preprocessed_spectra", out, keys)
    seconds = time.perf_counter() - t0
    meta = {
        "partitions": len(keys), "rows": out.height, "excluded_unusable": excluded,
        "seconds": round(seconds, 3), "spectra_per_s": round(out.height / seconds, 1) if seconds else 0.0,
        "median_norm": float(out["norm"].median()) if out.height else 0.0,
        "table_version": lakehouse.version("preprocessed_spectra"),
    }
    if config.make_plot and out.height:
        flux = to_numpy_2d(out["flux"][:3])
        path = lakehouse.artifact_dir("plots") / "preprocessed_spectra" / f"{context.run_id[:8]}-{keys[0]}.png"
        labels = [f"TARGETID {t}" for t in out["targetid"][:3]]
        meta["example_plot"] = dg.MetadataValue.path(str(plot_spectra(
            path, binned_wavelength(), flux, labels, f"preprocessed (496 bins): {keys[0]}",
            ylabel="flux / median|flux|")))
    return dg.MaterializeResult(metadata=meta)
