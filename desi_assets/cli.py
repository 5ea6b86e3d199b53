"""`desi-ard` command line: mock, ingest, demo."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


#: Concurrent runs for partitioned stages: one per core, at most 2 (memory of a 500-spectrum batch ~1 GB).
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))

#: coadd_key recorded in ingest_errors for files that never got a partition key.
UNKEYED = "unkeyed"


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_mock(args: argparse.Namespace) -> int:
    """Write a mock DESI survey tree."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    cfg = MockSurveyConfig(n_pixels=args.pixels, seed=args.seed, spectra_scale=args.scale,
                           release_every=args.release_every)
    t0 = time.perf_counter()
    paths = write_mock_survey(Path(args.out), cfg, progress=_say)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    _say(f"wrote {len(paths)} coadd files under {args.out} ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _run_pipeline(lakehouse: str, archive: str, batch: int, stages: list[tuple[str, bool]] | None = None,
                  workers: int = 1) -> int:
    from dagster import DagsterInstance

    from desi_assets.runner import ensure_dagster_home, register_partitions, run_partitioned, run_unpartitioned

    ensure_dagster_home(lakehouse)
    from desi_assets.definitions import PIPELINE_STAGES, build_defs

    defs = build_defs(lakehouse, archive)
    arch = defs.resources["archive"]
    _say(f"archive: {arch.describe()}")
    entries = arch.list_entries()
    keys = [e.key for e in entries]
    rejected = arch.list_rejected()
    _say(f"found {len(keys)} coadd files" + (f"; {len(rejected)} files rejected (recorded in ingest_errors)"
                                             if rejected else ""))
    if rejected:
        from desi_assets.defs.ingest.assets import record_ingest_error

        lakehouse_res = defs.resources["lakehouse"]
        for r in rejected:
            _say(f"  rejected {r.relpath}: {r.reason}")
            record_ingest_error(lakehouse_res, UNKEYED, r.relpath, "RejectedArchiveEntry", r.reason)
    if not keys:
        _say("nothing to do")
        return 1
    with DagsterInstance.get() as instance:
        register_partitions(instance, keys)
        results = []
        for job_name, partitioned in stages or PIPELINE_STAGES:
            _say(f"{job_name}:")
            if partitioned:
                results.append(run_partitioned(defs, job_name, keys, instance, batch, progress=_say, workers=workers,
                                               defs_args=(lakehouse, archive)))
            else:
                results.append(run_unpartitioned(defs, job_name, instance, progress=_say))
    _say("\nsummary")
    _say(f"{'job':<24}{'runs':>6}{'partitions':>12}{'rows':>10}{'seconds':>10}{'failed':>8}")
    for r in results:
        _say(f"{r.job:<24}{r.runs:>6}{r.partitions:>12}{r.rows:>10}{r.seconds:>10.1f}{len(r.failed):>8}")
    failed = sorted({k for r in results for k in r.failed})
    if failed:
        _say(f"failed partitions/jobs ({len(failed)}): {', '.join(failed[:20])}; reasons in the ingest_errors table")
    _say(f"lakehouse: {Path(lakehouse).resolve()}  (Dagster instance: {Path(lakehouse).resolve() / '.dagster'})")
    return 1 if failed else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest and preprocess every coadd under a local DESI tree or URL."""
    return _run_pipeline(args.lakehouse, args.archive, args.batch, [("coadd_job", True)], args.workers)


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the default mock survey under the lakehouse and materialize every asset."""
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

    root = Path(args.lakehouse) / "archive"
    if not any(root.rglob("coadd-*.fits")):
        _say(f"writing mock survey ({args.pixels} pixels, seed {args.seed}) to {root}")
        write_mock_survey(root, MockSurveyConfig(n_pixels=args.pixels, seed=args.seed), progress=_say)
    return _run_pipeline(args.lakehouse, str(root), args.batch, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `desi-ard` console script."""
    p = argparse.ArgumentParser(prog="desi-ard", description="DESI analysis-ready lakehouse")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("mock", help="write a mock DESI survey in the DESI data model")
    m.add_argument("--out", required=True)
    m.add_argument("--pixels", type=int, default=12)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--scale", type=float, default=1.0, help="multiplies spectra per pixel")
    m.add_argument("--release-every", type=float, default=None, help="seconds between pixels")
    m.set_defaults(fn=cmd_mock)

    i = sub.add_parser("ingest", help="ingest + preprocess every coadd of an archive")
    i.add_argument("--archive", required=True, help="local DESI tree or http(s) URL")
    i.add_argument("--lakehouse", default="lakehouse")
    i.add_argument("--batch", type=int, default=25, help="partitions per run")
    i.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="concurrent runs (processes)")
    i.set_defaults(fn=cmd_ingest)

    d = sub.add_parser("demo", help="mock survey + every asset, in process")
    d.add_argument("--lakehouse", default="lakehouse")
    d.add_argument("--pixels", type=int, default=12)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--batch", type=int, default=25)
    d.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="concurrent runs (processes)")
    d.set_defaults(fn=cmd_demo)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
