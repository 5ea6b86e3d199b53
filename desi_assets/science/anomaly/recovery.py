"""Injection/recovery trials on normal spectra and their per-score recovery reports."""

from __future__ import annotations

import numpy as np
import polars as pl

from desi_assets.science.anomaly import injection, scoring
from desi_assets.science.anomaly.catalog import LocalModel, Thresholds
from desi_assets.science.wavelength import binned_wavelength

#: The score columns the injection report compares.
SCORE_COLUMNS = ("score", "score_noise_aware", "score_local")


def run_injection(flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, spectype: np.ndarray, model,
                  per_kind: int, seed: int, masked_frac: np.ndarray | None = None,
                  local_model: LocalModel | None = None) -> pl.DataFrame:
    """Clean and injected trials on normal spectra: one row per trial with every score (SCORE_COLUMNS).

    Injected copies keep their host's masked bins. Column ``snr`` is the injection's noise-limited
    S/N (:func:`injection.injected_snr`, 0 for clean rows): what a perfect model would see. It is
    not stored in ``injection_results``.
    """
    rng = np.random.default_rng(seed)
    wave = binned_wavelength()
    if len(flux) == 0:  # no hosts (a list column read back as (0, 0)): no trials
        flux = ivar = masked_frac = np.zeros((0, wave.size), np.float32)
    masked = np.zeros(flux.shape, np.float32) if masked_frac is None else np.asarray(masked_frac)

    def scores(rows: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
        sc = scoring.score_with_model(model, f, ivar[rows], masked[rows], z[rows], spectype[rows],
                                      *(local_model or ()))
        return {"score": sc.table.score, "score_noise_aware": sc.table.score_noise_aware, "score_local": sc.score_local}

    everyone = np.arange(len(flux))
    frames = [pl.DataFrame({"row": everyone, "kind": "clean", "amplitude": 0.0, **scores(everyone, flux), "snr": 0.0})]
    for kind in injection.INJECTION_KINDS:
        idx = injection.choose_hosts(kind, spectype, per_kind, rng)
        amp = injection.draw_amplitudes(kind, idx.size, rng)
        fi = injection.inject(flux[idx], ivar[idx], z[idx], wave, kind, amp, rng, spectype=spectype[idx])
        frames.append(pl.DataFrame({"row": idx, "kind": kind, "amplitude": amp, **scores(idx, fi),
                                    "snr": injection.injected_snr(flux[idx], fi, ivar[idx])}))
    return pl.concat(frames)


def injection_reports(trials: pl.DataFrame, thr: Thresholds, max_fpr: float) -> dict[str, dict]:
    """Recovery report per score column present in trials (kind 'clean' rows are the negatives)."""
    clean = trials.filter(pl.col("kind") == "clean")
    inj = trials.filter(pl.col("kind") != "clean")
    by_col = dict(zip(SCORE_COLUMNS, (thr.seed, thr.noise_aware, thr.local)))
    return {col: injection.recovery_report(clean[col].to_numpy(), inj[col].to_numpy(), inj["kind"].to_numpy(),
                                           inj["amplitude"].to_numpy(), threshold=t, max_fpr=max_fpr)
            for col, t in by_col.items() if col in trials.columns}


def summarise(report: dict) -> dict:
    """Per-kind headline numbers of a recovery report (JSON-friendly; fractions, AUC, amplitudes)."""
    keys = ("n", "recovery", "fpr", "auc", "recovery_strong_half", "recovery_at_fpr1", "amplitude_50")
    return {k: {m: (round(v[m], 4) if isinstance(v.get(m), float) else v.get(m)) for m in keys if m in v}
            for k, v in report.items()}


def noise_limited_ceiling(trials: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Detectability ceiling per kind of the injected trials (fractions and S/N, rounded to 4 digits)."""
    inj = trials.filter(pl.col("kind") != "clean")
    ceiling = injection.detectability_ceiling(inj["snr"].to_numpy(), inj["kind"].to_numpy(),
                                              inj["amplitude"].to_numpy())
    return {k: {m: round(v, 4) for m, v in c.items()} for k, c in ceiling.items()}
