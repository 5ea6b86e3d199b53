"""Ingest throughput, spectra/s: raw FITS read limit vs. the in-process pipeline vs. the same through Dagster.

    .venv/bin/python bench/ingest.py                 # 50-pixel mock (seed 1, DESI density), 2 repeats
    .venv/bin/python bench/ingest.py --repeat 3 --stages raw,dagster --profile dagster

Writes (once) or reuses a mock survey under bench/out/mock{N}/ (ignored by git) and measures
  1. raw:      FLUX+IVAR+MASK of all arms with astropy memmap -> native numpy (no reader logic);
  2. inproc:   what the coadd_ingest multi-asset does, without Dagster or plots: the same public
               storage.ingest.ingest_batch (per file: read_coadd -> targets/spectra frames -> preprocess
               from memory; Delta commits of ~2,048 spectra per table), 25 files per batch (stage
               inproc-file-lsf: the same with one LSF per file, lsf_per_target=False);
  3. dagster:  a fresh lakehouse + instance, register_partitions + run_partitioned(defs, "coadd_job",
               keys, instance, batch=25): the backfill path, BackfillPolicy.multi_run(25) ranges.
Each stage runs --repeat times; the table shows the median (and every run). Figures only; no asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TARGET_DAGSTER = 1_000.0  # spectra/s through Dagster on 2 cores
ARM_LETTERS = ("B", "R", "Z")
BATCH = 25


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- the mock survey


def ensure_mock(n_pixels: int, seed: int, scale: float) -> Path:
    """The mock survey under bench/out/, written on first use (a marker file records it is complete)."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    suffix = "" if scale == 1.0 else f"-x{scale:g}"
    root = HERE / "out" / f"mock{n_pixels}{'' if seed == 1 else f'-s{seed}'}{suffix}"
    marker = root / "bench-mock.json"
    want = {"n_pixels": n_pixels, "seed": seed, "spectra_scale": scale}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return root
    if root.exists():
        shutil.rmtree(root)
    say(f"writing mock survey ({n_pixels} pixels, seed {seed}, scale {scale}) to {root} ...")
    t0 = time.perf_counter()
    write_mock_survey(root, MockSurveyConfig(n_pixels=n_pixels, seed=seed, spectra_scale=scale))
    marker.write_text(json.dumps(want))
    say(f"  done in {time.perf_counter() - t0:.0f} s")
    return root


def survey_files(root: Path) -> tuple[list[str], list[tuple[Path, Path | None]], int, int]:
    """Keys in archive order, their (coadd, redrock) paths, total spectra and total bytes on disk."""
    from astropy.io import fits

    from desi_assets.sources.archives import LocalArchive

    arch = LocalArchive(root=str(root))
    keys = [e.key for e in arch.list_entries()]
    paths = [arch.fetch(k) for k in keys]
    nspec = sum(int(fits.getheader(c, "FIBERMAP")["NAXIS2"]) for c, _ in paths)
    nbytes = sum(p.stat().st_size for pair in paths for p in pair if p is not None)
    return keys, paths, nspec, nbytes


# ----------------------------------------------------------------------------- 1. raw read


def bench_raw(paths: list[tuple[Path, Path | None]]) -> tuple[float, dict]:
    """FLUX+IVAR+MASK of every arm, memmapped and copied to native-endian arrays; no reader logic."""
    from astropy.io import fits

    t0 = time.perf_counter()
    n = nbytes = 0
    for coadd, _ in paths:
        with fits.open(coadd, memmap=True, lazy_load_hdus=True, do_not_scale_image_data=True) as hdul:
            for arm in ARM_LETTERS:
                for what in ("FLUX", "IVAR", "MASK"):
                    raw = hdul[f"{arm}_{what}"].data
                    a = np.array(raw, dtype=raw.dtype.newbyteorder("="), order="C")
                    nbytes += a.nbytes
            n += a.shape[0]
    return time.perf_counter() - t0, {"spectra": n, "array_bytes": nbytes}


# ----------------------------------------------------------------------------- 2. in process, no Dagster


def bench_inproc(keys: list[str], archive_root: Path, lake: Path, lsf_per_target: bool = True
                 ) -> tuple[float, dict]:
    """What coadd_ingest does (storage.ingest.ingest_batch over 25-file batches), without Dagster or plots.

    lsf_per_target: IngestConfig.lsf_per_target (False: one sampled LSF per file).
    """
    from desi_assets.sources.archives import LocalArchive
    from desi_assets.storage.ingest import archive_loader, ingest_batch
    from desi_assets.storage.lakehouse import LakehouseResource

    parts: dict[str, float] = defaultdict(float)

    class TimedLakehouse(LakehouseResource):
        """The lakehouse, with the time spent in Delta commits counted."""

        def write_partitions(self, name, data, partition_keys):
            t = time.perf_counter()
            try:
                return super().write_partitions(name, data, partition_keys)
            finally:
                parts["Delta writes (3 tables)"] += time.perf_counter() - t

    read = archive_loader(LocalArchive(root=str(archive_root)), lsf_per_target=lsf_per_target)

    def timed_read(key):
        t = time.perf_counter()
        try:
            return read(key)
        finally:
            parts["read_coadd"] += time.perf_counter() - t

    lh = TimedLakehouse(root=str(lake))
    n = 0
    t0 = time.perf_counter()
    for b in range(0, len(keys), BATCH):
        report = ingest_batch(keys[b:b + BATCH], timed_read, lh)
        if report.failed:
            raise SystemExit(f"bench ingest failed: {[o.error for o in report.failed][:3]}")
        n += sum(o.spectra for o in report.good)
    seconds = time.perf_counter() - t0
    parts["frames + preprocess (from memory)"] = seconds - sum(parts.values())
    return seconds, {"spectra": n, "parts": dict(parts)}


# ----------------------------------------------------------------------------- 3. through Dagster


@contextlib.contextmanager
def stderr_to(path: Path):
    """Send fd 2 (Dagster's console logger) to a file while the stage runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def bench_dagster(keys: list[str], archive_root: Path, lake: Path, log: Path) -> tuple[float, dict]:
    """A fresh lakehouse + instance; the coadd_job over every key in multi-run(25) partition ranges."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.runner import DAGSTER_YAML, register_partitions, run_partitioned

    home = lake / ".dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    defs = build_defs(str(lake), str(archive_root))
    with stderr_to(log), dg.DagsterInstance.from_config(str(home)) as instance:
        t0 = time.perf_counter()
        register_partitions(instance, keys)
        res = run_partitioned(defs, "coadd_job", keys, instance, batch=BATCH)
        seconds = time.perf_counter() - t0
    return seconds, {"runs": res.runs, "failed": res.failed, "run_seconds": res.seconds}


def bench_dagster_parallel(keys: list[str], archive_root: Path, lake: Path, log: Path,
                           workers: int = 2) -> tuple[float, dict]:
    """Like bench_dagster, but the 25-partition runs go to `workers` concurrent processes (a run queue
    with max_concurrent_runs=workers); wall time includes each worker's start-up and imports."""
    import subprocess

    import dagster as dg

    from desi_assets.runner import DAGSTER_YAML, register_partitions

    home = lake / ".dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    batches = [keys[b:b + BATCH] for b in range(0, len(keys), BATCH)]
    shares = [[k for batch in batches[w::workers] for k in batch] for w in range(workers)]
    t0 = time.perf_counter()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_partitions(instance, keys)
    with open(log, "ab") as fh:
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(lake), str(home), str(archive_root),
                                   *share], stdout=fh, stderr=subprocess.STDOUT) for share in shares if share]
        codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - t0
    return seconds, {"runs": len(batches), "failed": [f"worker exit {c}" for c in codes if c]}


def worker(lake: str, home: str, archive_root: str, keys: list[str]) -> int:
    """One run-queue slot: run_partitioned over its share of the keys (entry point of --worker)."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.runner import run_partitioned

    with dg.DagsterInstance.from_config(home) as instance:
        res = run_partitioned(build_defs(lake, archive_root), "coadd_job", keys, instance, batch=BATCH)
    return 1 if res.failed else 0


# ----------------------------------------------------------------------------- reporting


def delta_sizes(lake: Path) -> dict[str, int]:
    """Bytes on disk per Delta table (data files and log)."""
    root = lake / "delta"
    if not root.exists():
        return {}
    return {t.name: sum(p.stat().st_size for p in t.rglob("*") if p.is_file()) for t in sorted(root.iterdir())}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1], argv[2], argv[3], argv[4:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="spectra per pixel relative to DESI density")
    p.add_argument("--repeat", type=int, default=2, help="runs per stage; the median is reported")
    p.add_argument("--stages", default="raw,inproc,dagster",
                   help="any of raw,inproc,inproc-file-lsf,dagster,dagster2 (dagster2: two runs at a time, "
                        "as a run queue with max_concurrent_runs=2 would do)")
    p.add_argument("--profile", choices=["inproc", "dagster"], default=None,
                   help="cProfile one extra run of that stage and print the top functions")
    p.add_argument("--keep", action="store_true", help="keep the last lakehouse of each stage under bench/out")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]

    root = ensure_mock(args.pixels, args.seed, args.scale)
    keys, paths, nspec, nbytes = survey_files(root)
    nfiles = sum(1 for pair in paths for p in pair if p is not None)
    say(f"survey: {root}  {len(keys)} coadd files (+{nfiles - len(keys)} redrock), {nspec:,} spectra, "
        f"{nbytes / 1e9:.2f} GB; {os.cpu_count()} CPUs; {args.repeat} run(s) per stage, median shown")
    cold, _ = bench_raw(paths)  # untimed warm-up: every stage then reads FLUX/IVAR/MASK from the page cache
    say(f"warm-up raw read (page cache): {cold:.1f} s, {nspec / cold:,.0f} spectra/s")
    work = HERE / "out" / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "dagster-stderr.log").write_text("")  # Dagster's console log of this invocation

    results: dict[str, list[float]] = {}
    extras: dict[str, dict] = {}
    sizes: dict[str, int] = {}
    for stage in stages:
        times = []
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix=f"{stage}-", dir=work) as tmp:
                lake = Path(tmp) / "lakehouse"
                if stage == "raw":
                    s, extra = bench_raw(paths)
                elif stage == "inproc":
                    s, extra = bench_inproc(keys, root, lake)
                elif stage == "inproc-file-lsf":
                    s, extra = bench_inproc(keys, root, lake, lsf_per_target=False)
                elif stage == "dagster":
                    s, extra = bench_dagster(keys, root, lake, work / "dagster-stderr.log")
                elif stage == "dagster2":
                    s, extra = bench_dagster_parallel(keys, root, lake, work / "dagster-stderr.log")
                else:
                    raise SystemExit(f"unknown stage {stage!r}")
                if stage.startswith("dagster") and extra["failed"]:
                    say(f"  FAILED: {extra['failed'][:10]} (see {work / 'dagster-stderr.log'})")
                if stage != "raw":
                    sizes = delta_sizes(lake) or sizes
                    if args.keep and i == args.repeat - 1:
                        keep = HERE / "out" / f"lakehouse-{stage}"
                        shutil.rmtree(keep, ignore_errors=True)
                        shutil.move(str(lake), keep)
            times.append(s)
            extras.setdefault(stage, {})[i] = extra
            say(f"  {stage} run {i + 1}: {s:.1f} s, {nspec / s:,.0f} spectra/s")
        results[stage] = times

    if args.profile:
        with tempfile.TemporaryDirectory(prefix="profile-", dir=work) as tmp:
            lake = Path(tmp) / "lakehouse"
            prof = cProfile.Profile()
            prof.enable()
            if args.profile == "inproc":
                bench_inproc(keys, root, lake)
            else:
                bench_dagster(keys, root, lake, work / "dagster-stderr.log")
            prof.disable()
        out = HERE / "out" / f"profile-{args.profile}.pstats"
        prof.dump_stats(out)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
        say(f"\ncProfile of one {args.profile} run (cumulative; full stats in {out}):")
        say("\n".join(buf.getvalue().splitlines()[:75]))

    labels = {
        "raw": "1. raw read limit (FLUX+IVAR+MASK, astropy memmap)",
        "inproc": "2. in-process pipeline, no Dagster",
        "inproc-file-lsf": "2b. in-process, one LSF per file",
        "dagster": "3. through Dagster (coadd_job, 25 partitions/run)",
        "dagster2": "3b. through Dagster, 2 runs at a time (2 processes)",
    }
    say(f"\ningest throughput: {nspec:,} spectra in {len(keys)} coadd files (+{nfiles - len(keys)} redrock files)")
    say(f"{'stage':<52}{'median s':>10}{'spectra/s':>11}{'vs raw':>8}   runs (s)")
    med = {k: statistics.median(v) for k, v in results.items()}
    for stage, times in results.items():
        ratio = f"{med['raw'] / med[stage]:.3f}" if "raw" in med else "-"
        say(f"{labels[stage]:<52}{med[stage]:>10.1f}{nspec / med[stage]:>11,.0f}{ratio:>8}   "
            + ", ".join(f"{t:.1f}" for t in times))
    for stage in ("dagster", "dagster2"):
        if stage in med:
            rate = nspec / med[stage]
            verdict = "met" if rate >= TARGET_DAGSTER else "NOT met"
            say(f"target >= {TARGET_DAGSTER:,.0f} spectra/s through Dagster ({stage}): {verdict} ({rate:,.0f}); "
                f"{extras[stage][0]['runs']} runs")
    if "inproc" in extras:
        parts = {k: statistics.median(e["parts"][k] for e in extras["inproc"].values())
                 for k in extras["inproc"][0]["parts"]}
        total = med["inproc"]
        say("\nin-process pipeline, where the time goes (median s, share of the stage):")
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
            say(f"  {k:<40}{v:>8.1f}{100 * v / total:>7.0f}%")
    if sizes:
        say("\nDelta on disk (last run):")
        say(f"  {'table':<24}{'MB':>10}{'bytes/spectrum':>16}")
        for t, b in sizes.items():
            say(f"  {t:<24}{b / 1e6:>10.1f}{b / nspec:>16,.0f}")
        tot = sum(sizes.values())
        say(f"  {'all tables':<24}{tot / 1e6:>10.1f}{tot / nspec:>16,.0f}   (coadd+redrock FITS: "
            f"{nbytes / nspec:,.0f} bytes/spectrum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
