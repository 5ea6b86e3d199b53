"""`desi-ard` command line: mock, ingest, demo.

Adding a subcommand: write ``cmd_<name>(args) -> int`` and register it in ``build_parser()``
(``_lakehouse_args`` / ``_run_args`` add the shared options). Pipeline commands go through
``_run_pipeline``, which handles SIGINT/SIGTERM (exit 130/143, workers killed, runs marked canceled).

Output of a pipeline command (one line each, flushed as it happens)::

    archive: <what the archive is>
    found <N> coadd files[; <M> files rejected (recorded in ingest_errors)]
      rejected <relpath>: <reason>
    <job>:
      <job> [<i>/<runs>] <first key>..<last key> (<k> files, <rows> rows) ok
      <job> [<i>/<runs>] ... FAILED: <a> ok, <b> failed (<key>, ...)
      <job>: ok|FAILED in <s> s[; <c> check(s) failed]

    summary
    job    runs  partitions  ok  failed  rows  seconds  checks
    ...                                       (failed = failed partitions or runs + failed checks)

    checks
    check  asset  result  severity  key figure
    ...
    failed partitions (<n>): <key>, ...; reasons in the ingest_errors table
    failed checks (<n>): <check> on <asset> (<severity>), ...
    lakehouse: <path>  (Dagster instance: <path>)

Exit status: 0 all partitions, runs and checks passed (a failed WARN check prints but exits 0);
1 a partition, a run or an ERROR check failed, or nothing to do; 2 bad arguments (e.g. an invalid
partition key); 130/143 interrupted by SIGINT/SIGTERM.
"""

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
    paths = write_mock_survey(Path(args.out), cfg, progress=_say, workers=args.workers)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    _say(f"wrote {len(paths)} coadd files under {args.out} ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _split_keys(values: list[str] | None) -> list[str] | None:
    """--keys values (repeatable, comma-separated) as a list; None when not given."""
    if values is None:
        return None
    return [k.strip() for v in values for k in v.split(",")]


def report(results: list, say=_say) -> int:
    """Print the summary table and the check table of a pipeline; returns the exit status (0 or 1)."""
    say("")
    say("summary")
    wj = max([24] + [len(r.job) + 2 for r in results])
    say(f"{'job':<{wj}}{'runs':>6}{'partitions':>12}{'ok':>6}{'failed':>8}{'rows':>10}{'seconds':>10}{'checks':>10}")
    for r in results:
        n_ok = len(r.succeeded)
        bad = len(r.failed) + len(r.failed_checks)
        checks = f"{len(r.checks) - len(r.failed_checks)}/{len(r.checks)}" if r.checks else "-"
        say(f"{r.job:<{wj}}{r.runs:>6}{r.partitions:>12}{n_ok:>6}{bad:>8}{r.rows:>10}{r.seconds:>10.1f}{checks:>10}")
    checks = _worst_per_check([c for r in results for c in r.checks])
    if checks:
        say("")
        say("checks")
        w = max(len(c.check) for c in checks) + 2
        wa = max(len(c.asset) for c in checks) + 2
        say(f"{'check':<{w}}{'asset':<{wa}}{'result':<8}{'severity':<10}key figure")
        for c in checks:
            say(f"{c.check:<{w}}{c.asset:<{wa}}{'passed' if c.passed else 'FAILED':<8}{c.severity:<10}{c.figure}")
    failed = sorted({k for r in results for k in r.failed})
    if failed:
        say(f"failed partitions/jobs ({len(failed)}): {', '.join(failed[:20])}{' ...' if len(failed) > 20 else ''}; "
            "reasons in the ingest_errors table")
        for e in dict.fromkeys(e for r in results for e in r.errors):
            say(f"  {e}")
    bad_checks = [c for c in checks if not c.passed]
    if bad_checks:
        say(f"failed checks ({len(bad_checks)}): " + ", ".join(f"{c.check} on {c.asset} ({c.severity})"
                                                           for c in bad_checks))
    return 1 if failed or any(c.severity == "ERROR" for c in bad_checks) else 0


def _worst_per_check(outcomes: list) -> list:
    """One outcome per (check, asset): the first failing evaluation, else the last one (partitioned checks)."""
    out: dict = {}
    for c in outcomes:
        k = (c.check, c.asset)
        if k not in out or out[k].passed:
            out[k] = c
    return list(out.values())


def _run_pipeline(lakehouse: str, archive: str, batch: int, stages: list[tuple[str, bool]] | None = None,
                  workers: int = 1, only: list[str] | None = None, pool=None) -> int:
    """Run stages over the archive's partitions (on `pool`, a runner.WorkerPool, when given); Ctrl-C/SIGTERM stop
    it cleanly (exit 128 + signal)."""
    from desi_assets.runner import Interrupted, interruptible

    with interruptible():
        try:
            return _pipeline(lakehouse, archive, batch, stages, workers, only, shared_pool=pool)
        except Interrupted as exc:
            _say(f"interrupted by {exc.signame}: stopped")
            return exc.exit_code


def _pipeline(lakehouse: str, archive: str, batch: int, stages: list[tuple[str, bool]] | None,
              workers: int, only: list[str] | None, shared_pool=None) -> int:
    import contextlib

    from dagster import DagsterInstance

    from desi_assets import runner

    if only is not None:
        try:
            runner.validate_keys(only)
        except ValueError as exc:
            _say(f"error: {exc}")
            return 2
    runner.ensure_dagster_home(lakehouse)
    from desi_assets.definitions import PIPELINE_STAGES, build_defs

    defs = build_defs(lakehouse, archive)
    arch = defs.resources["archive"]
    _say(f"archive: {arch.describe()}")
    entries = arch.list_entries()
    keys = [e.key for e in entries]
    sizes = {e.key: float(e.size) for e in entries if e.size}  # file bytes: balance the concurrent runs' work
    rejected = arch.list_rejected()
    _say(f"found {len(keys)} coadd files" + (f"; {len(rejected)} files rejected (recorded in ingest_errors)"
                                             if rejected else ""))
    if rejected:
        from desi_assets.defs.ingest.assets import record_ingest_error

        lakehouse_res = defs.resources["lakehouse"]
        for r in rejected:
            _say(f"  rejected {r.relpath}: {r.reason}")
            record_ingest_error(lakehouse_res, UNKEYED, r.relpath, "RejectedArchiveEntry", r.reason)
    if only is not None:
        absent = [k for k in only if k not in set(keys)]
        if absent:
            _say(f"error: not in the archive: {', '.join(absent)}")
            return 2
        keys = [k for k in keys if k in set(only)]
    if not keys:
        hint = arch.why_empty()
        _say(hint if hint else "nothing to do")
        if hint:
            _say("nothing to do")
        return 1
    with DagsterInstance.get() as instance:
        reaped = runner.reap_orphaned_runs(instance)
        if reaped:
            _say(f"marked {len(reaped)} runs canceled whose desi-ard process had died")
        junk = runner.prune_invalid_partitions(instance)
        if junk:
            _say(f"removed {len(junk)} invalid partition keys registered earlier: {', '.join(map(repr, junk[:10]))}")
        results = []
        try:
            runner.register_partitions(instance, keys)
            # the workers start once (or came with the caller's pool) and serve every stage
            pool = shared_pool or runner.WorkerPool(workers)
            with contextlib.nullcontext(pool) if shared_pool else pool:
                for job_name, partitioned in stages or PIPELINE_STAGES:
                    _say(f"{job_name}:")
                    if partitioned:
                        results.append(runner.run_partitioned(defs, job_name, keys, instance, batch, progress=_say,
                                                              workers=workers, defs_args=(lakehouse, archive),
                                                              weights=sizes, pool=pool))
                    else:
                        results.append(runner.run_unpartitioned(defs, job_name, instance, progress=_say))
        except runner.Interrupted as exc:
            if shared_pool:  # our own pool was killed on leaving its block
                shared_pool.kill()
            gone = runner.cancel_session_runs(instance, f"desi-ard received {exc.signame}")
            _say(f"\n{exc.signame}: workers stopped; {len(gone)} unfinished run(s) marked canceled")
            if results:
                report(results)
            raise
    rc = report(results)
    _say(f"lakehouse: {Path(lakehouse).resolve()}  (Dagster instance: {Path(os.environ['DAGSTER_HOME'])})")
    return rc


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest and preprocess every coadd under a local DESI tree or URL (or only --keys)."""
    return _run_pipeline(args.lakehouse, args.archive, args.batch, [("coadd_job", True)], args.workers,
                         only=_split_keys(args.keys))


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the default mock survey under the lakehouse and materialize every asset.

    The mock is written on the pipeline's own worker pool (its processes import once for both). The workers start
    first, with bagpipes' one-time IGM table as their first task (the Bagpipes stage's workers then import side by
    side), while this process imports the mock and then, in a thread, the pipeline's definitions.
    """
    import importlib
    import threading

    from desi_assets.runner import WorkerPool, ensure_dagster_home

    root = Path(args.lakehouse) / "archive"
    ensure_dagster_home(args.lakehouse)  # before the workers start: they inherit it
    with WorkerPool(args.workers) as pool:
        if not any(root.rglob("coadd-*.fits")):
            executor = pool.executor() if args.workers > 1 else None
            if executor is not None:
                from desi_assets.science.stellar_populations.bagpipes_fit import write_igm_table

                executor.submit(write_igm_table)  # a failure shows in the Bagpipes stage, with its reason
            from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

            _say(f"writing mock survey ({args.pixels} pixels, seed {args.seed}) to {root}")
            # a failed import here is retried (and reported) by the pipeline's own import
            threading.Thread(target=importlib.import_module, args=("desi_assets.definitions",), daemon=True).start()
            write_mock_survey(root, MockSurveyConfig(n_pixels=args.pixels, seed=args.seed), progress=_say,
                              workers=args.workers, executor=executor)
        return _run_pipeline(args.lakehouse, str(root), args.batch, workers=args.workers, pool=pool)


def _lakehouse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lakehouse", default="lakehouse", help="lakehouse root (Delta tables, models, .dagster)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=25, help="partitions per run")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="concurrent runs (processes)")


def build_parser() -> argparse.ArgumentParser:
    """The `desi-ard` argument parser: one sub-parser per command, each with fn=cmd_<name>."""
    p = argparse.ArgumentParser(prog="desi-ard", description="DESI analysis-ready lakehouse")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("mock", help="write a mock DESI survey in the DESI data model")
    m.add_argument("--out", required=True)
    m.add_argument("--pixels", type=int, default=12)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--scale", type=float, default=1.0, help="multiplies spectra per pixel")
    m.add_argument("--release-every", type=float, default=None, help="seconds between pixels")
    m.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="pixels simulated at once (processes)")
    m.set_defaults(fn=cmd_mock)

    i = sub.add_parser("ingest", help="ingest + preprocess every coadd of an archive")
    i.add_argument("--archive", required=True, help="one DESI production (local tree or http(s) URL)")
    i.add_argument("--keys", action="append", default=None, metavar="KEY[,KEY...]",
                   help="only these partition keys (e.g. main-dark-10378,tile-80613-4)")
    _lakehouse_args(i)
    _run_args(i)
    i.set_defaults(fn=cmd_ingest)

    d = sub.add_parser("demo", help="mock survey + every asset, in process")
    _lakehouse_args(d)
    d.add_argument("--pixels", type=int, default=12)
    d.add_argument("--seed", type=int, default=42)
    _run_args(d)
    d.set_defaults(fn=cmd_demo)

    from desi_assets import cosmic_web_catalog

    cw = sub.add_parser("cosmic-web", help="kNN Σ5, T-web class and distance to filament for any redshift catalog")
    cosmic_web_catalog.add_arguments(cw)
    cw.set_defaults(fn=lambda a: cosmic_web_catalog.run(a, say=_say))

    from desi_assets import embeddings_cli

    sim = sub.add_parser("similar", help="the k spectra most like TARGETID (embedding vectors in LanceDB)")
    embeddings_cli.add_arguments(sim)
    sim.set_defaults(fn=lambda a: embeddings_cli.run(a, say=_say))

    from desi_assets import fit_spectrum

    fs = sub.add_parser("fit-spectrum", help="spectral indices + pPXF kinematics and lines of one spectrum, as JSON")
    fit_spectrum.add_arguments(fs)
    fs.set_defaults(fn=lambda a: fit_spectrum.run(a, say=_say))

    from desi_assets import ard_cli

    ard_cli.register(sub, _say)  # query, spectrum, release, export (the ard API)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `desi-ard` console script."""
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
