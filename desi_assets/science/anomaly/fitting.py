"""Fit the anomaly model on a training set: BigAE, its rest-frame error profile, and thresholds calibrated on val."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from desi_assets.science.anomaly import scoring
from desi_assets.science.anomaly.bigae import BigAE
from desi_assets.science.anomaly.local import LocalCalibration, ModelError, fit_model_error, inpaint_bins
from desi_assets.science.anomaly.training import TrainConfig, reconstruct, train_autoencoder


@dataclass
class TrainingArrays:
    """A training set as arrays: normalised flux/ivar (N, 496), left-out bins, z, class, val flag, unique train rows."""

    flux: np.ndarray
    ivar: np.ndarray
    bad: np.ndarray
    z: np.ndarray
    spectype: np.ndarray
    val: np.ndarray
    unique_train: np.ndarray  # row indices: each (upsampled) training spectrum once


@dataclass
class FittedModel:
    """BigAE with its loss history, error profile, local calibration and calibrated thresholds (dimensionless/χ²)."""

    model: BigAE
    history: list[tuple[int, float, float]]
    best_epoch: int
    seconds: float
    model_error: ModelError
    calibration: LocalCalibration
    calibrated: dict[str, float]


def calibrate_thresholds(table: scoring.ScoreTable, score_local: np.ndarray, fpr: float) -> dict[str, float]:
    """The (1 - fpr) quantiles of the noise-aware, local and seed scores on clean spectra (their score units)."""
    q = 1.0 - fpr
    return {"noise_aware_threshold": float(np.nanquantile(table.score_noise_aware, q)),
            "local_threshold": float(np.nanquantile(score_local, q)),
            "seed_score_val_quantile": float(np.nanquantile(table.score, q))}


def fit_anomaly_model(ts: TrainingArrays, config: TrainConfig, calibration_fpr: float,
                      progress: Callable[[int, float, float], None] | None = None) -> FittedModel:
    """Train BigAE on the train split (masked bins inpainted and left out of the MSE), calibrate on val.

    The model's rest-frame error profile (for ``score_local``) is measured on the unique training
    spectra; the noise-aware and local thresholds are the (1 - calibration_fpr) quantiles on val.
    """
    x = inpaint_bins(ts.flux, ts.bad)
    val = ts.val
    result = train_autoencoder(x[~val], x[val], config, progress, left_out_train=ts.bad[~val],
                               left_out_val=ts.bad[val])
    result.model.cpu()
    tr = ts.unique_train
    model_error = fit_model_error(ts.flux[tr], reconstruct(result.model, x[tr]), ts.ivar[tr], ts.bad[tr], ts.z[tr],
                                  ts.spectype[tr])
    sv = scoring.score_with_model(result.model, ts.flux[val], ts.ivar[val], ts.bad[val], ts.z[val], ts.spectype[val],
                                  model_error)
    calibration = LocalCalibration.fit(sv.local, ts.spectype[val])
    calibrated = calibrate_thresholds(sv.table, calibration.score(sv.local, ts.spectype[val]), calibration_fpr)
    return FittedModel(result.model, result.history, result.best_epoch, result.seconds, model_error, calibration,
                       calibrated)
