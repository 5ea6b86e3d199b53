"""The anomaly layer's pure parts: balanced sampling, fingerprints, thresholds, scored rows, strata, calibration."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from desi_assets.science.anomaly import catalog, controls, fitting, recovery, sampling
from desi_assets.science.anomaly.bigae import BigAE
from desi_assets.science.anomaly.scoring import ScoreTable


def _ids(n_per_class: dict[str, int]) -> pl.DataFrame:
    rows = [(f"k{i % 3}", i, c, 0.1) for c, n in n_per_class.items() for i in range(n)]
    return pl.DataFrame(rows, schema=["coadd_key", "targetid", "spectype", "z"], orient="row").with_columns(
        targetid=pl.col("targetid") + pl.col("spectype").rank("dense").cast(pl.Int64) * 10_000)


def test_balanced_sample_counts_and_no_leakage():
    ids = _ids({"GALAXY": 500, "QSO": 60, "STAR": 200})
    s = sampling.balanced_sample(ids, per_class=300, val_fraction=0.2, seed=0)
    val, train = s.filter(pl.col("split") == "val"), s.filter(pl.col("split") == "train")
    per_class_val = val.group_by("spectype").len()["len"].unique().to_list()
    assert len(per_class_val) == 1 and 5 <= per_class_val[0] <= 20  # the QSOs' val count (~12), for every class
    assert train.group_by("spectype").len()["len"].to_list() == [300] * 3  # upsampled to per_class
    assert val.join(train, on=["coadd_key", "targetid"], how="semi").height == 0  # no spectrum in both
    no_up = sampling.balanced_sample(ids, per_class=300, val_fraction=0.2, seed=0, upsample=False)
    n_qso_train = no_up.filter((pl.col("split") == "train") & (pl.col("spectype") == "QSO")).height
    assert no_up.filter(pl.col("split") == "train").group_by("spectype").len()["len"].to_list() == [n_qso_train] * 3
    assert n_qso_train < 60
    with pytest.raises(ValueError, match="too few"):
        sampling.balanced_sample(_ids({"GALAXY": 50, "QSO": 9, "STAR": 50}), 100, 0.2, 0)


def test_content_hash_sees_every_value_and_name():
    a = {"flux": np.arange(6, dtype=np.float32).reshape(2, 3), "key": np.array(["a", "b"])}
    h = sampling.content_hash(a)
    assert h == sampling.content_hash({k: v.copy() for k, v in a.items()}) and len(h) == 16
    b = {"flux": a["flux"].copy(), "key": a["key"]}
    b["flux"][1, 2] += 1e-6
    assert sampling.content_hash(b) != h
    assert sampling.content_hash({"flux": a["flux"], "key": np.array(["a", "c"])}) != h
    assert sampling.content_hash({"flux2": a["flux"], "key": a["key"]}) != h
    assert sampling.content_hash(a, {"x": 1}) != h


def test_resolve_thresholds_prefers_given_then_calibrated_then_fallback():
    cal = {"noise_aware_threshold": 200.0, "local_threshold": 4.0}
    assert catalog.resolve_thresholds(5.0, None, None, cal) == (5.0, 200.0, 4.0)
    assert catalog.resolve_thresholds(4.0, 30.0, 2.0, cal) == (4.0, 30.0, 2.0)
    assert catalog.resolve_thresholds(5.0, None, None, {}) == (5.0, catalog.FALLBACK_NOISE_AWARE_THRESHOLD,
                                                               catalog.FALLBACK_LOCAL_THRESHOLD)


def _rows(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    flux = (1 + 0.1 * rng.standard_normal((n, 496))).astype(np.float32)
    return pl.DataFrame({"coadd_key": ["k"] * n, "survey": ["main"] * n, "program": ["dark"] * n,
                         "healpix": [1] * n, "hpxgroup": [0] * n, "targetid": list(range(n)),
                         "flux": flux.tolist(), "ivar": np.full((n, 496), 100.0, np.float32).tolist(),
                         "spectype": ["GALAXY"] * n, "z": [0.5] * n},
                        schema_overrides={"flux": pl.List(pl.Float32), "ivar": pl.List(pl.Float32)})


def test_score_frame_flags_at_the_given_thresholds_and_handles_an_empty_batch():
    torch.manual_seed(0)
    model = BigAE().eval()
    out, recon, flux = catalog.score_frame(_rows(20), model, "v1", catalog.Thresholds(2.0, 50.0, 3.0))
    assert out.height == 20 and recon.shape == flux.shape == (20, 496) and (out["model_version"] == "v1").all()
    assert (out["is_anomaly"] == (out["score"] > 2.0)).all()
    assert (out["is_anomaly_noise_aware"] == (out["score_noise_aware"] > 50.0)).all()
    counts = catalog.anomaly_counts(out)
    assert counts["rows"] == 20 and counts["anomalies"] == int((out["score"] > 2.0).sum())
    empty, r0, f0 = catalog.score_frame(_rows(20).head(0), model, "v1", catalog.Thresholds(2.0, 50.0, 3.0))
    assert empty.height == 0 and r0.shape == f0.shape == (0, 496) and empty.columns == out.columns


def test_strata_of_by_hand():
    program = np.array(["dark", "dark", "bright", None, "dark", "dark"], dtype=object)
    spectype = np.array(["QSO", "QSO", "STAR", "STAR", "QSO", "QSO"], dtype=object)
    assert controls.strata_of(program, spectype).tolist() == ["dark|QSO", "dark|QSO", "bright|STAR", "?|STAR",
                                                              "dark|QSO", "dark|QSO"]
    snr = np.array([1.0, 4.0, 5.0, 6.0, 2.0, 3.0])
    lab = controls.strata_of(program, spectype, snr, snr_bins=2)
    # the 4 dark|QSO rows split at their S/N median (1, 2 | 3, 4); strata with < 2 rows stay in bin 0
    assert lab.tolist() == ["dark|QSO|snr0", "dark|QSO|snr1", "bright|STAR|snr0", "?|STAR|snr0", "dark|QSO|snr0",
                            "dark|QSO|snr1"]


def test_calibrate_thresholds_are_the_clean_quantiles():
    v = np.arange(1, 101, dtype=float)  # 1..100
    t = ScoreTable(**{f: v for f in ScoreTable.__dataclass_fields__})
    got = fitting.calibrate_thresholds(t, 2 * v, fpr=0.1)
    assert got == {"noise_aware_threshold": pytest.approx(90.1), "local_threshold": pytest.approx(180.2),
                   "seed_score_val_quantile": pytest.approx(90.1)}


def test_injection_reports_use_the_given_thresholds_and_summarise():
    rng = np.random.default_rng(0)
    clean = pl.DataFrame({"kind": "clean", "amplitude": 0.0, "score": rng.random(200),
                          "score_noise_aware": rng.random(200), "score_local": rng.random(200)})
    inj = pl.DataFrame({"kind": "bal", "amplitude": np.linspace(0.1, 0.9, 100), "score": 10 + rng.random(100),
                        "score_noise_aware": rng.random(100), "score_local": rng.random(100)})
    reps = recovery.injection_reports(pl.concat([clean, inj]), catalog.Thresholds(5.0, 0.5, 2.0), max_fpr=0.01)
    assert set(reps) == set(recovery.SCORE_COLUMNS)
    assert reps["score"]["bal"]["recovery"] == 1.0 and reps["score_local"]["bal"]["recovery"] == 0.0
    assert reps["score_noise_aware"]["bal"]["recovery"] == pytest.approx(float((inj["score_noise_aware"] > 0.5).mean()))
    assert recovery.summarise(reps["score"])["bal"]["recovery"] == 1.0


def test_run_injection_with_no_hosts_gives_no_trials():
    empty = np.zeros((0, 0), np.float32)  # what an empty list column reads back as
    trials = recovery.run_injection(empty, empty, np.zeros(0), np.array([], str), BigAE().eval(), 3, 0, empty)
    assert trials.height == 0 and set(recovery.SCORE_COLUMNS) <= set(trials.columns)
