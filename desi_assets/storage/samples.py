"""Reads of the anomaly layer: training candidates and sets, scoring inputs, samples for the bias controls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from desi_assets.science.anomaly.fitting import TrainingArrays
from desi_assets.science.anomaly.sampling import CLASSES, content_hash
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import KEY_COLUMNS

IDS = ["coadd_key", "targetid"]
#: preprocessed_spectra columns scoring needs.
SCORE_INPUT_COLUMNS = [*KEY_COLUMNS, "flux", "ivar", "masked_frac"]
#: training_set columns, in table order.
TRAINING_COLUMNS = ["coadd_key", "targetid", "spectype", "z", "split", "flux", "ivar", "masked_frac"]


def candidates(lakehouse: LakehouseResource) -> pl.DataFrame:
    """Usable, redshift-good preprocessed spectra with their redrock class (ids only)."""
    t = lakehouse.scan("targets").filter(pl.col("usable") & (pl.col("zwarn") == 0)
                                         & pl.col("spectype").is_in(CLASSES))
    return (lakehouse.scan("preprocessed_spectra").select(*IDS)
            .join(t.select(*IDS, "spectype", "z"), on=IDS).collect())


def with_spectra(lakehouse: LakehouseResource, chosen: pl.DataFrame) -> pl.DataFrame:
    """Chosen sample rows (ids, spectype, z, split; repeats kept) with their preprocessed flux, ivar, masked_frac."""
    spectra = (lakehouse.scan("preprocessed_spectra").select(*IDS, "flux", "ivar", "masked_frac")
               .join(chosen.lazy().select(*IDS).unique(), on=IDS, how="semi").collect())
    return chosen.join(spectra, on=IDS, how="left", maintain_order="left").select(TRAINING_COLUMNS)


def training_fingerprint(ts: pl.DataFrame) -> str:
    """Content hash of a training set in row order: ids, class, z, split, flux, ivar, masked_frac."""
    arrays = {c: ts[c].to_numpy() for c in ("coadd_key", "targetid", "spectype", "z", "split")}
    arrays |= {c: to_numpy_2d(ts[c]) for c in ("flux", "ivar", "masked_frac")}
    return content_hash(arrays)


def training_arrays(ts: pl.DataFrame) -> TrainingArrays:
    """The training_set table as arrays (val flag; each upsampled training spectrum once in unique_train)."""
    val = (ts["split"] == "val").to_numpy()
    unique_train = (ts.with_row_index("row").filter(~pl.Series(val)).unique(IDS, keep="first")["row"].to_numpy())
    return TrainingArrays(to_numpy_2d(ts["flux"]), to_numpy_2d(ts["ivar"]), to_numpy_2d(ts["masked_frac"]) > 0,
                          ts["z"].to_numpy(), ts["spectype"].to_numpy(), val, unique_train)


def validation_split(lakehouse: LakehouseResource) -> pl.DataFrame:
    """The val rows of training_set (held-out normal spectra)."""
    return lakehouse.read("training_set").filter(pl.col("split") == "val")


def scoring_rows(lakehouse: LakehouseResource, keys: Sequence[str]) -> pl.DataFrame:
    """Preprocessed rows of the given partitions joined with their redrock spectype and z."""
    pre = lakehouse.read("preprocessed_spectra", keys=keys, columns=SCORE_INPUT_COLUMNS)
    meta = lakehouse.read("targets", keys=keys, columns=[*IDS, "spectype", "z"])
    return pre.join(meta, on=IDS, how="left")


def score_totals(lakehouse: LakehouseResource) -> dict[str, int]:
    """Whole-table counts of anomaly_scores: rows, partitions, anomalies per score."""
    if not lakehouse.exists("anomaly_scores"):
        return {}
    row = lakehouse.scan("anomaly_scores").select(
        rows=pl.len(), partitions=pl.col("coadd_key").n_unique(), anomalies=pl.col("is_anomaly").sum(),
        anomalies_noise_aware=pl.col("is_anomaly_noise_aware").sum(),
        anomalies_local=pl.col("is_anomaly_local").sum()).collect().row(0, named=True)
    return {k: int(v or 0) for k, v in row.items()}


def scored_with_targets(lakehouse: LakehouseResource, normal_only: bool = True) -> pl.DataFrame:
    """Scored table joined with the target columns the controls test against (normal rows by default)."""
    t = lakehouse.scan("targets").select(*IDS, "target_ra", "target_dec", "fiber", "mean_mjd", "z", "spectype",
                                         "median_coadd_snr_r")
    s = lakehouse.scan("anomaly_scores")
    if normal_only:
        s = s.filter(~pl.col("is_anomaly") & ~pl.col("is_anomaly_noise_aware"))
    return s.join(t, on=IDS, how="left").collect()


def sampled_preprocessed(lakehouse: LakehouseResource, ids: pl.LazyFrame, n: int, seed: int = 0,
                         columns: list[str] | None = None) -> pl.DataFrame:
    """`preprocessed_spectra` rows of a random sample of up to n (coadd_key, targetid) ids.

    Only the ids are sampled in memory; the spectra are read from the files of the sampled
    partitions alone (Delta stats prune by `coadd_key`), so the cost does not grow with the table.
    """
    ids = ids.select(*IDS).collect()
    ids = ids.sample(min(n, ids.height), seed=seed) if ids.height else ids
    scan = lakehouse.scan("preprocessed_spectra").filter(pl.col("coadd_key").is_in(ids["coadd_key"].unique()))
    rows = scan.join(ids.lazy(), on=IDS, how="semi")
    return (rows.select(columns) if columns else rows).collect()


def normal_sample(lakehouse: LakehouseResource, n: int, seed: int = 0) -> pl.DataFrame:
    """Up to n scored spectra below both anomaly thresholds, with their preprocessed flux/ivar/norm."""
    ok = lakehouse.scan("anomaly_scores").filter(~pl.col("is_anomaly") & ~pl.col("is_anomaly_noise_aware"))
    return sampled_preprocessed(lakehouse, ok, n, seed)


def spectra_sample(lakehouse: LakehouseResource, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """flux, ivar, masked_frac (N, 496) of up to n random preprocessed spectra (all, not only normal ones)."""
    rows = sampled_preprocessed(lakehouse, lakehouse.scan("preprocessed_spectra"), n, seed,
                                columns=["flux", "ivar", "masked_frac"])
    return {c: to_numpy_2d(rows[c]) for c in ("flux", "ivar", "masked_frac")}
