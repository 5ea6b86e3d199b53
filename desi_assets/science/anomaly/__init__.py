"""Anomaly detection on preprocessed 496-bin spectra: BigAE, training, scoring, injection, bias controls."""

from desi_assets.science.anomaly.scoring import (  # noqa: F401
    DEFAULT_THRESHOLD,
    ScoreTable,
    categorize,
    dominance_labels,
    highz_signature,
    is_anomaly,
    make_score_fn,
    normalise_binned,
    score_spectra,
)
from desi_assets.science.anomaly.injection import (  # noqa: F401
    AMPLITUDE_RANGES,
    INJECTION_KINDS,
    draw_amplitudes,
    inject,
    recovery_report,
    roc_auc,
)

__all__ = [
    "AMPLITUDE_RANGES", "DEFAULT_THRESHOLD", "INJECTION_KINDS", "ScoreTable", "categorize", "dominance_labels",
    "draw_amplitudes", "highz_signature", "inject", "is_anomaly", "make_score_fn", "normalise_binned",
    "recovery_report", "roc_auc", "score_spectra",
]
