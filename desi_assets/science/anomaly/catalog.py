"""The anomaly catalogue: thresholds (configured or calibrated per model), and the scored rows of a batch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from desi_assets.science.anomaly import scoring
from desi_assets.science.anomaly.local import LocalCalibration, ModelError
from desi_assets.storage.arrays import to_numpy_2d  # list columns -> (N, M) arrays (pure numpy/pyarrow)

#: Fallback thresholds for models saved without calibrated ones (χ² sum; score_local, dimensionless).
FALLBACK_NOISE_AWARE_THRESHOLD = 15.0
FALLBACK_LOCAL_THRESHOLD = 3.0
#: Columns of a scored row that identify it (copied from the input rows).
KEY_COLUMNS = ("coadd_key", "survey", "program", "healpix", "hpxgroup", "targetid")


class Thresholds(NamedTuple):
    """Anomaly thresholds: seed score (dimensionless), noise-aware χ² sum, score_local (dimensionless)."""

    seed: float
    noise_aware: float
    local: float


class LocalModel(NamedTuple):
    """What score_local needs besides BigAE: the rest-frame model error and the per-class calibration."""

    model_error: ModelError
    calibration: LocalCalibration


def resolve_thresholds(seed: float, noise_aware: float | None, local: float | None,
                       calibrated: dict) -> Thresholds:
    """Given thresholds; a None noise-aware/local one takes the model's calibrated value (then the fallback)."""
    def pick(given, key, fallback):
        return float(given if given is not None else calibrated.get(key, fallback))
    return Thresholds(float(seed), pick(noise_aware, "noise_aware_threshold", FALLBACK_NOISE_AWARE_THRESHOLD),
                      pick(local, "local_threshold", FALLBACK_LOCAL_THRESHOLD))


def score_frame(rows: pl.DataFrame, model, version: str, thr: Thresholds,
                local_model: LocalModel | None = None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Anomaly-score rows for preprocessed rows joined with spectype/z; also the reconstructions and the flux."""
    flux, ivar = to_numpy_2d(rows["flux"]), to_numpy_2d(rows["ivar"])
    masked = to_numpy_2d(rows["masked_frac"]) if "masked_frac" in rows.columns else None
    z = rows["z"].fill_null(np.nan).to_numpy()
    spectype = rows["spectype"].fill_null("").to_numpy()
    scored = scoring.score_with_model(model, flux, ivar, masked, z, spectype, *(local_model or ()))
    s, loc = scored.table, scored.local
    hz = scoring.highz_signature(flux, z)
    out = rows.select(*KEY_COLUMNS).with_columns(
        score=s.score, r_b=s.r_b, r_r=s.r_r, r_z=s.r_z, frac_b=s.frac_b, frac_r=s.frac_r, frac_z=s.frac_z,
        worst_band=pl.Series(s.worst_band.astype(str)),
        dominance=pl.Series(scoring.dominance_labels(s.score, s.frac_b, s.frac_r, s.frac_z)),
        category=pl.Series(scoring.categorize(s.score, s.frac_b, s.frac_r, s.frac_z, spectype, hz, z)),
        is_anomaly=scoring.is_anomaly(s.score, thr.seed),
        chi2_b=s.chi2_b, chi2_r=s.chi2_r, chi2_z=s.chi2_z, score_noise_aware=s.score_noise_aware,
        is_anomaly_noise_aware=scoring.is_anomaly(s.score_noise_aware, thr.noise_aware),
        score_local=scored.score_local, local_sigma=loc.score, local_wave=loc.wave_a,
        local_width_bins=pl.Series(loc.width_bins, dtype=pl.Int32), arm_step_sigma=loc.step_sigma,
        is_anomaly_local=scoring.is_anomaly(scored.score_local, thr.local),
        highz_signature=hz, model_version=pl.lit(version))
    return out, scored.recon, flux.reshape(scored.recon.shape)


def anomaly_counts(scored: pl.DataFrame) -> dict:
    """Rows, anomalies per score and the categories of seed-score anomalies of a scored frame (counts)."""
    return {"rows": scored.height, "anomalies": int(scored["is_anomaly"].sum()),
            "anomalies_noise_aware": int(scored["is_anomaly_noise_aware"].sum()),
            "anomalies_local": int(scored["is_anomaly_local"].sum()) if "is_anomaly_local" in scored.columns else 0,
            "categories_of_anomalies": dict(scored.filter("is_anomaly").group_by("category").len().iter_rows())}
