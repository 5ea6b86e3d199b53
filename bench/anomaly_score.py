"""Anomaly scoring throughput, spectra/s: pure reconstruct+score vs in process (Delta → scores → Delta) vs Dagster.

    .venv/bin/python bench/anomaly_score.py                      # 50-pixel mock (bench/out/mock50), 2 repeats
    .venv/bin/python bench/anomaly_score.py --lakehouse PATH     # reuse a lakehouse with preprocessed_spectra

Reuses bench/out/mock50/ (written by bench/ingest.py, or here on first use) and, once, ingests it
through Dagster (coadd_job) into bench/out/anomaly/lake-mock50 and trains a short BigAE there
(--epochs, default 10: throughput does not depend on model quality). Then, --repeat times each:
  1. pure:    score_with_model (inpaint, BigAE reconstruct on torch CPU, seed + χ² + local scores) on
              arrays already in memory;
  2. inproc:  per batch of 25 partitions: storage.samples.scoring_rows (preprocessed_spectra + targets
              from Delta) → science.anomaly.catalog.score_frame (reconstruct, scores, labels, high-z
              signature) → write_partitions(anomaly_scores): what the anomaly_scores asset calls;
  3. dagster: run_partitioned(defs, "anomaly_scores_job", keys, instance, batch=25): the backfill
              path with the job's default config (one top-anomaly gallery PNG per run).
Prints the median spectra/s, the ratio to the pure rate, and whether inproc meets ≥ 10,000 spectra/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TQDM_DISABLE", "1")

TARGET_INPROC = 10_000.0
BATCH = 25


def say(msg: str = "") -> None:
    print(msg, flush=True)


#: Bump when the trained model's contents change (3: masked-bin training, model-error profile, local calibration).
MODEL_FORMAT = 3


def ensure_lake(survey: Path, lake: Path, epochs: int) -> list[str]:
    """Ingest + preprocess once, and train once per MODEL_FORMAT, into lake (marker file); returns the keys."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.defs.anomalies.assets import anomaly_model, training_set
    from desi_assets.defs.anomalies.config import AnomalyConfig, ModelConfig
    from desi_assets.runner import ensure_dagster_home, register_partitions, run_partitioned
    from desi_assets.sources.archives import LocalArchive

    keys = [e.key for e in LocalArchive(root=str(survey)).list_entries()]
    marker = lake / "bench-anomaly.json"
    done = json.loads(marker.read_text()) if marker.exists() else {}
    if done.get("model_format") == MODEL_FORMAT:
        return done["keys"]
    ensure_dagster_home(str(lake))
    defs = build_defs(str(lake), str(survey))
    with dg.DagsterInstance.get() as inst:
        register_partitions(inst, keys)
        if not done:
            t0 = time.perf_counter()
            res = run_partitioned(defs, "coadd_job", keys, inst, batch=BATCH)
            say(f"  ingested {len(keys)} files in {time.perf_counter() - t0:.0f} s (failed: {res.failed})")
        t0 = time.perf_counter()
        cfg = AnomalyConfig(model=ModelConfig(epochs=epochs, num_threads=1))
        dg.materialize([training_set, anomaly_model], instance=inst,
                       resources=dict(defs.resources) | {"anomaly_config": cfg})
        say(f"  trained BigAE ({epochs} epochs) in {time.perf_counter() - t0:.0f} s")
    marker.write_text(json.dumps({"keys": keys, "model_format": MODEL_FORMAT}))
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", default=str(HERE / "out" / "mock50"))
    ap.add_argument("--lakehouse", default=None, help="lakehouse with preprocessed_spectra/targets (and a model)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = ap.parse_args()

    import dagster as dg
    import polars as pl
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    survey = Path(args.survey)
    if not (survey / "bench-mock.json").exists():
        from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

        say(f"writing a 50-pixel mock to {survey} (once) ...")
        write_mock_survey(survey, MockSurveyConfig(n_pixels=50, seed=1, spectra_scale=1.0))
        (survey / "bench-mock.json").write_text(json.dumps({"n_pixels": 50, "seed": 1, "spectra_scale": 1.0}))
    lake = Path(args.lakehouse) if args.lakehouse else HERE / "out" / "anomaly" / "lake-mock50"
    lake.mkdir(parents=True, exist_ok=True)
    keys = ensure_lake(survey, lake, args.epochs)

    from desi_assets.definitions import build_defs
    from desi_assets.runner import ensure_dagster_home, register_partitions, run_partitioned
    from desi_assets.science.anomaly.catalog import score_frame
    from desi_assets.science.anomaly.scoring import score_with_model
    from desi_assets.science.anomaly.catalog import resolve_thresholds
    from desi_assets.science.anomaly.scoring import DEFAULT_THRESHOLD
    from desi_assets.storage.arrays import to_numpy_2d
    from desi_assets.storage.lakehouse import LakehouseResource
    from desi_assets.storage.models import load_published
    from desi_assets.storage.samples import scoring_rows

    lh = LakehouseResource(root=str(lake))
    published = load_published(lh)
    model, version, local_model = published.net, published.version, published.local
    thr = resolve_thresholds(DEFAULT_THRESHOLD, None, None, published.meta)  # the job's default scoring config
    n_total = lh.scan("preprocessed_spectra").select(pl.len()).collect().item()
    say(f"mock: {survey} ({len(keys)} files, {n_total} preprocessed spectra); model {version}; "
        f"torch threads {torch.get_num_threads()}")

    # 1. pure reconstruct + score on in-memory arrays
    pre = lh.read("preprocessed_spectra", columns=["coadd_key", "targetid", "flux", "ivar", "masked_frac"]).join(
        lh.read("targets", columns=["coadd_key", "targetid", "spectype", "z"]), on=["coadd_key", "targetid"],
        how="left")
    flux, ivar, masked = (to_numpy_2d(pre[c]) for c in ("flux", "ivar", "masked_frac"))
    z, spectype = pre["z"].to_numpy(), pre["spectype"].to_numpy()
    del pre
    pure = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        score_with_model(model, flux, ivar, masked, z, spectype, *local_model)
        pure.append(time.perf_counter() - t0)
    del flux, ivar, masked

    # 2. in process: Delta -> score_frame -> Delta, per batch of 25 partitions
    inproc = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        n = 0
        for i in range(0, len(keys), BATCH):
            ks = keys[i: i + BATCH]
            rows = scoring_rows(lh, ks)
            out, _, _ = score_frame(rows, model, version, thr, local_model)
            lh.write_partitions("anomaly_scores", out, ks)
            n += out.height
        inproc.append(time.perf_counter() - t0)

    # 3. through Dagster (plots off), the backfill path
    ensure_dagster_home(str(lake))
    defs = build_defs(str(lake), str(survey))
    dag = []
    with dg.DagsterInstance.get() as inst:
        register_partitions(inst, keys)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = run_partitioned(defs, "anomaly_scores_job", keys, inst, batch=BATCH)
            dag.append(time.perf_counter() - t0)
            if res.failed:
                say(f"  dagster run failed for {len(res.failed)} partitions")

    def line(name, times):
        med = statistics.median(times)
        rate = n_total / med
        return rate, (f"  {name:<34s} {med:8.2f} s  {rate:10,.0f} spectra/s  "
                      f"(runs: {', '.join(f'{t:.2f}' for t in times)})")

    p_rate, p_line = line("1. pure reconstruct+score", pure)
    i_rate, i_line = line("2. in process (Delta→scores→Delta)", inproc)
    d_rate, d_line = line("3. dagster anomaly_scores_job", dag)
    say("\nscoring throughput (median of %d):" % args.repeat)
    say(p_line)
    say(i_line + f"  = {i_rate / p_rate:.2f} × pure")
    say(d_line + f"  = {d_rate / p_rate:.2f} × pure")
    say(f"\nin-process target ≥ {TARGET_INPROC:,.0f} spectra/s on 2 cores: "
        f"{'MET' if i_rate >= TARGET_INPROC else 'MISSED'} ({i_rate:,.0f})")


if __name__ == "__main__":
    main()
