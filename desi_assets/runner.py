"""Run the asset graph in process through Dagster: partitions in batches, then unpartitioned stages.

Outcomes are counted per partition from each run's materialization events (``event.partition``), so a
run that fails part-way reports exactly which partitions landed. Every run is tagged with this
session (``desi-ard/session``, ``desi-ard/pid``): on SIGINT/SIGTERM (``interruptible()``) the worker
processes are killed with their process groups and the session's unfinished runs are marked canceled;
workers also die with the parent if it is killed outright, and a later session marks the runs that
such a parent left behind (``reap_orphaned_runs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from desi_assets.defs.partitions import coadds_partitions
from desi_assets.sources.keys import parse_key
from desi_assets.storage.lakehouse import local_state_dir

DAGSTER_YAML = """telemetry:
  enabled: false
nux:
  enabled: false
"""

#: Run tags naming the desi-ard process (and host) that owns a run.
SESSION_TAG, PID_TAG, HOST_TAG, WORKER_TAG = "desi-ard/session", "desi-ard/pid", "desi-ard/host", "desi-ard/worker"

#: Seconds to wait for killed workers to exit.
KILL_WAIT_S = 10.0


def ensure_dagster_home(lakehouse_root: str) -> Path:
    """Point DAGSTER_HOME at {lakehouse}/.dagster (unless set) with telemetry and the NUX off."""
    home = Path(os.environ.get("DAGSTER_HOME") or local_state_dir(lakehouse_root) / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check evaluation of a run: name, asset, result, severity and its key figure (text)."""

    check: str
    asset: str
    passed: bool
    severity: str
    figure: str = ""
    partition: str | None = None


@dataclass
class ChunkOutcome:
    """What one run did: partitions that landed (with rows) and failed, its checks and failure messages."""

    keys: list[str]
    run_id: str
    success: bool
    succeeded: list[str]
    failed: list[str]
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    batch_rows: int = 0  # rows reported for the whole run (metadata not split per partition)
    checks: list[CheckOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows handled by the run: the per-partition sum where reported, else the run's batch total."""
        return sum(self.rows_by_partition.values()) or self.batch_rows


@dataclass
class StageResult:
    """Outcome of one job over a set of partitions (or of one unpartitioned run)."""

    job: str
    partitions: int = 0
    runs: int = 0
    failed: list[str] = field(default_factory=list)  # failed partition keys, or the job name if unpartitioned
    seconds: float = 0.0
    rows: int = 0
    succeeded: list[str] = field(default_factory=list)
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def add(self, out: ChunkOutcome) -> None:
        """Fold one run's outcome into the stage."""
        self.runs += 1
        self.partitions += len(out.keys)
        self.succeeded.extend(out.succeeded)
        self.failed.extend(out.failed)
        self.rows_by_partition.update(out.rows_by_partition)
        self.rows += out.rows
        self.checks.extend(out.checks)
        self.errors.extend(out.errors)
        self.run_ids.append(out.run_id)

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        """Check evaluations of this stage that did not pass."""
        return [c for c in self.checks if not c.passed]


def _meta_number(meta, name: str) -> float | None:
    v = meta.get(name)
    v = getattr(v, "value", v)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def key_figure(metadata) -> str:
    """The headline number of a check's metadata ('name=value', plus its threshold when recorded)."""
    fig = ""
    for name, v in metadata.items():
        num = _meta_number(metadata, name)
        if num is not None and name != "threshold":
            fig = f"{name}={num:.4g}"
            break
    thr = metadata.get("threshold")
    if thr is not None:
        val = getattr(thr, "value", thr)
        text = f"{val:.4g}" if isinstance(val, float) else json.dumps(val, separators=(",", ":"), default=str)
        fig += f" (threshold {text if len(text) <= 60 else text[:56] + ' ...'})"
    return fig.strip()


def _run_events(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance | None, kind: str) -> list:
    """The run's events of one type, from the instance when given: events logged with ``context.log_event``
    before a step failed are stored there, but missing from the in-process result."""
    if instance is None:
        return list(result.get_asset_materialization_events() if kind == "mat" else
                    [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION])
    of_type = (dg.DagsterEventType.ASSET_MATERIALIZATION if kind == "mat" else
               dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    recs = instance.get_records_for_run(result.run_id, of_type=of_type).records
    return [r.event_log_entry.dagster_event for r in recs if r.event_log_entry.dagster_event is not None]


def outcome_of(result: dg.ExecuteInProcessResult, keys: Sequence[str],
               instance: dg.DagsterInstance | None = None) -> ChunkOutcome:
    """Per-partition outcome of a run from its materialization events (read from instance when given).

    A partition succeeded when every asset the run materialized was materialized for it (all keys if the
    run succeeded). Its rows are the largest ``rows`` value among its events; an event whose metadata says
    ``partitions`` > 1 describes the whole batch (Dagster repeats it per partition) and counts once.
    """
    assets: set = set()
    per_key: dict[str, set] = {}
    rows_by_key: dict[str, int] = {}
    batch_rows = 0
    for ev in _run_events(result, instance, "mat"):
        meta = ev.step_materialization_data.materialization.metadata
        assets.add(ev.asset_key)
        rows, n_parts = _meta_number(meta, "rows"), _meta_number(meta, "partitions")
        if rows is None:  # an asset over a partition range that reports its batch, not each partition
            rows, n_parts = _meta_number(meta, "batch_rows"), _meta_number(meta, "batch_partitions")
        if ev.partition is None or (n_parts or 0) > 1:
            batch_rows = max(batch_rows, int(rows or 0))
        elif rows is not None:
            rows_by_key[ev.partition] = max(rows_by_key.get(ev.partition, 0), int(rows))
        if ev.partition is not None:
            per_key.setdefault(ev.partition, set()).add(ev.asset_key)
    keys = list(keys)
    if result.success:
        ok = keys
    else:
        ok = [k for k in keys if assets and per_key.get(k) == assets]
    good = set(ok)
    evals = [ev.asset_check_evaluation_data for ev in _run_events(result, instance, "check")]
    checks = [CheckOutcome(e.check_name, e.asset_key.to_user_string(), bool(e.passed), e.severity.value,
                           key_figure(e.metadata), e.partition) for e in evals]
    errors = [(ev.step_failure_data.error.message.strip().splitlines() or [""])[-1]
              .removeprefix("dagster._core.definitions.events.Failure: ")[:300]
              for ev in result.all_events if ev.is_step_failure and ev.step_failure_data.error is not None]
    return ChunkOutcome(keys, result.run_id, result.success, ok, [k for k in keys if k not in good],
                        {k: v for k, v in rows_by_key.items() if k in good}, batch_rows if result.success else 0,
                        checks, errors)


# ----------------------------------------------------------------------------- partitions


def validate_keys(keys: Sequence[str]) -> list[str]:
    """The keys, each checked with keys.parse_key; raises ValueError naming every invalid one and why."""
    bad = []
    for k in keys:
        try:
            parse_key(k)
        except ValueError as exc:
            bad.append(f"{k!r}: {exc}")
    if bad:
        raise ValueError(f"refusing {len(bad)} invalid partition key(s): " + "; ".join(bad[:10])
                         + (" ..." if len(bad) > 10 else ""))
    return list(keys)


def register_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add the keys not yet present to the `coadds` dynamic partitions (junk keys refused); returns those added."""
    validate_keys(keys)
    have = set(instance.get_dynamic_partitions(coadds_partitions.name))
    new = list(dict.fromkeys(k for k in keys if k not in have))
    if new:
        instance.add_dynamic_partitions(coadds_partitions.name, new)
    return new


def prune_invalid_partitions(instance: dg.DagsterInstance) -> list[str]:
    """Delete registered `coadds` partition keys that are not valid keys (left by older versions); returns them."""
    junk = []
    for k in instance.get_dynamic_partitions(coadds_partitions.name):
        try:
            parse_key(k)
        except ValueError:
            junk.append(k)
            instance.delete_dynamic_partition(coadds_partitions.name, k)
    return junk


# ----------------------------------------------------------------------------- sessions and signals


_SESSION = {"id": uuid.uuid4().hex[:16]}


def session_tags() -> dict[str, str]:
    """Tags that mark a run as this process's (session id, pid, host)."""
    return {SESSION_TAG: _SESSION["id"], PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the runner; exit_code is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + signum


_WATCH: dict = {"fd": None, "stopping": False}


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted in the main thread, also when Dagster captured them during a run.

    Dagster swaps in its own handlers while an in-process run executes (the run then fails as interrupted);
    a wakeup fd keeps every signal, so ``check_interrupted()`` after the run still stops the runner.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)

    def handler(signum, _frame):
        if _WATCH["stopping"]:
            return  # already stopping: a second signal must not break the cleanup
        _WATCH["stopping"] = True
        raise Interrupted(signum)

    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _WATCH.update(fd=r, stopping=False)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        _WATCH.update(fd=None, stopping=False)
        os.close(r)
        os.close(w)


def check_interrupted() -> None:
    """Raise Interrupted if SIGINT/SIGTERM arrived since the last check (inside interruptible() only)."""
    fd = _WATCH["fd"]
    if fd is None:
        return
    try:
        data = os.read(fd, 512)
    except BlockingIOError:
        return
    for b in data:
        if b in (signal.SIGINT, signal.SIGTERM) and not _WATCH["stopping"]:
            _WATCH["stopping"] = True
            raise Interrupted(b)


def cancel_session_runs(instance: dg.DagsterInstance, reason: str, session: str | None = None) -> list[str]:
    """Mark this session's unfinished runs canceled (their processes are gone); returns their run ids."""
    runs = instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES,
                                           tags={SESSION_TAG: session or _SESSION["id"]}))
    for run in runs:
        instance.report_run_canceled(run, message=reason)
    return [r.run_id for r in runs]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def reap_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark canceled the unfinished runs whose desi-ard process (on this host) no longer exists; returns run ids."""
    host = socket.gethostname()
    gone = []
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES)):
        pid, session = run.tags.get(PID_TAG), run.tags.get(SESSION_TAG)
        if pid is None or run.tags.get(HOST_TAG) != host or session == _SESSION["id"]:
            continue
        if int(pid) == os.getpid() or not _pid_alive(int(pid)):
            instance.report_run_canceled(run, message=f"the desi-ard process {pid} that ran it is gone")
            gone.append(run.run_id)
    return gone


def _die_with_parent(parent_pid: int) -> None:
    """In a worker: own process group, and exit as soon as the parent is gone (PDEATHSIG + a watchdog)."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # the parent kills the whole group; a terminal's Ctrl-C reaches the parent only
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True, name="desi-ard-parent-watchdog").start()


def _kill_workers(pool) -> list[int]:
    """SIGKILL each worker's process group and wait (bounded) for them to exit; returns their pids."""
    procs = dict(getattr(pool, "_processes", None) or {})
    for pid in procs:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
                break
    deadline = time.monotonic() + KILL_WAIT_S
    for p in procs.values():
        p.join(max(0.0, deadline - time.monotonic()))
    return list(procs)


# ----------------------------------------------------------------------------- execution


def _run_config() -> dict:
    """Console log level of in-process runs (the runner prints its own progress; the UI keeps every event)."""
    return {"loggers": {"console": {"config": {"log_level": os.environ.get("DESI_ARD_LOG_LEVEL", "WARNING")}}}}


def _execute_chunk(defs: dg.Definitions, job_name: str, chunk: list[str], instance: dg.DagsterInstance,
                   tags: dict[str, str] | None = None) -> ChunkOutcome:
    """One run over a contiguous partition range."""
    tags = {**(tags or session_tags()), ASSET_PARTITION_RANGE_START_TAG: chunk[0],
            ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, tags=tags, raise_on_error=False,
                                                               run_config=_run_config())
    return outcome_of(result, chunk, instance)


def _load_defs(factory: str, args: tuple) -> dg.Definitions:
    import importlib

    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def _worker_init(parent_pid: int, threads: int | None = None) -> None:
    """In a worker: die with the parent; cap BLAS and torch threads so that the workers share the cores."""
    _die_with_parent(parent_pid)
    if threads:
        limit_threads(threads)


def limit_threads(n: int) -> None:
    """Cap this process's BLAS/OpenMP pools and torch's intra-op threads at n (unloaded libraries: by env vars)."""
    from desi_assets.science.physics.fit import pin_blas_threads

    pin_blas_threads(n)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(n)


def _worker_chunk(defs_args: tuple, job_name: str, chunk: list[str], tags: dict[str, str],
                  factory: str = "desi_assets.definitions:build_defs") -> ChunkOutcome:
    """Run one chunk in a worker process (rebuilds the Definitions; instance from DAGSTER_HOME)."""
    with dg.DagsterInstance.get() as instance:
        return _execute_chunk(_load_defs(factory, defs_args), job_name, chunk, instance,
                              {**tags, WORKER_TAG: str(os.getpid())})


class WorkerPool:
    """Spawned worker processes for partitioned runs, started on first use and kept across stages.

    Each gets cores // workers BLAS and torch threads (two workers with two BLAS threads each on 2 cores ran the
    stellar-population fits 2.7x slower). They die with this process (PDEATHSIG + watchdog); kill() SIGKILLs them
    (on an interrupt), close() waits.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool = None

    def executor(self):
        """The ProcessPoolExecutor, started on first call."""
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.workers)  # 2 busy threads per core: ~2.7x slower
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init, initargs=(os.getpid(), threads))
        return self._pool

    def kill(self) -> list[int]:
        """SIGKILL the workers and drop the pool (a later call starts new ones); returns their pids."""
        if self._pool is None:
            return []
        pids = _kill_workers(self._pool)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        return pids

    def close(self) -> None:
        """Let the workers finish and exit."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.kill() if exc_type is not None else self.close()


def contiguous_chunks(keys: Sequence[str], pos: Mapping[str, int], batch: int, workers: int = 1,
                      weights: Mapping[str, float] | None = None) -> list[list[str]]:
    """Keys (in partition order) cut into runs: each a contiguous range of at most `batch` keys.

    With workers > 1 there are max(workers, ⌈keys / batch⌉) runs (more only where partition order has gaps),
    cut to minimise the heaviest run: by summed weight (e.g. file bytes) when given, else by key count.
    """
    n = len(keys)
    w = [max(float(weights.get(k, 0.0)), 0.0) for k in keys] if weights else [1.0] * n
    if weights and sum(w) <= 0:
        w = [1.0] * n

    def pack(cap: float, size: int) -> list[list[str]]:
        chunks: list[list[str]] = []
        acc = 0.0
        for k, wk in zip(keys, w, strict=True):
            if chunks and pos[k] == pos[chunks[-1][-1]] + 1 and len(chunks[-1]) < size and acc + wk <= cap:
                chunks[-1].append(k)
                acc += wk
            else:
                chunks.append([k])
                acc = wk
        return chunks

    if workers <= 1 or n <= 1:
        return pack(float("inf"), batch)
    target = max(len(pack(float("inf"), batch)), min(workers, n))  # the first: batch caps and gaps in the order
    lo, hi = max(w), sum(w)  # the lightest cap that packs into `target` runs: bisection on the heaviest run
    for _ in range(60):
        if hi - lo <= 1e-9 * max(hi, 1.0):
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if len(pack(mid, batch)) <= target else (mid, hi)
    return pack(hi, batch)


def run_partitioned(defs: dg.Definitions, job_name: str, keys: Sequence[str], instance: dg.DagsterInstance,
                    batch: int = 25, progress: Callable[[str], None] | None = None, workers: int = 1,
                    defs_args: tuple | None = None,
                    defs_factory: str = "desi_assets.definitions:build_defs",
                    weights: Mapping[str, float] | None = None, pool: WorkerPool | None = None) -> StageResult:
    """Execute a partitioned job over keys in contiguous batches (one run per batch, partition ranges).

    weights (e.g. file bytes per key) balance the batches' work across workers; without them, batches are even
    in partition count. pool: worker processes kept across stages (a pipeline passes one, so each worker imports
    and starts once); without it this call starts and stops its own.

    With workers > 1 (and defs_args, the arguments of defs_factory, e.g. (lakehouse root, archive)), batches
    run concurrently in worker processes, like a run queue with that many concurrent runs. The workers
    die with this process; on Interrupted they are killed before it propagates.
    """
    validate_keys(keys)
    order = instance.get_dynamic_partitions(coadds_partitions.name)
    pos = {k: i for i, k in enumerate(order)}
    missing = [k for k in keys if k not in pos]
    if missing:
        raise ValueError(f"{len(missing)} key(s) not registered in the '{coadds_partitions.name}' partitions "
                         f"(call register_partitions first): {', '.join(missing[:10])}")
    keys = sorted(dict.fromkeys(keys), key=lambda k: pos[k])
    res = StageResult(job_name)
    t0 = time.perf_counter()
    parallel = workers > 1 and defs_args is not None and len(keys) > 1
    chunks = contiguous_chunks(keys, pos, batch, workers if parallel else 1, weights)

    def _done(out: ChunkOutcome) -> None:
        res.add(out)
        if progress:
            c = out.keys
            span = c[0] if len(c) == 1 else f"{c[0]}..{c[-1]}"
            state = "ok" if not out.failed else (
                f"FAILED: {len(out.succeeded)} ok, {len(out.failed)} failed ({', '.join(out.failed[:5])}"
                f"{', ...' if len(out.failed) > 5 else ''})")
            progress(f"  {job_name} [{res.runs}/{len(chunks)}] {span} ({len(c)} file{'s' * (len(c) != 1)}, "
                     f"{out.rows} rows) {state}")

    tags = session_tags()
    if parallel:
        from concurrent.futures import as_completed

        own = pool is None
        pool = WorkerPool(workers) if own else pool
        try:
            ex = pool.executor()
            futures = {ex.submit(_worker_chunk, defs_args, job_name, c, tags, defs_factory): c for c in chunks}
            for fut in as_completed(futures):
                _done(fut.result())
        except BaseException:
            pool.kill()
            raise
        if own:
            pool.close()
    else:
        for chunk in chunks:
            _done(_execute_chunk(defs, job_name, chunk, instance, tags))
            check_interrupted()
    res.seconds = time.perf_counter() - t0
    return res


def run_unpartitioned(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance,
                      progress: Callable[[str], None] | None = None) -> StageResult:
    """Execute an unpartitioned job once."""
    res = StageResult(job_name)
    t0 = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False,
                                                               run_config=_run_config(), tags=session_tags())
    out = outcome_of(result, [], instance)
    res.add(out)
    if not result.success:
        res.failed.append(job_name)
    res.seconds = time.perf_counter() - t0
    check_interrupted()
    if progress:
        bad = res.failed_checks
        note = f"; {len(bad)} check(s) failed" if bad else ""
        progress(f"  {job_name}: {'ok' if result.success else 'FAILED'} in {res.seconds:.1f} s{note}")
    return res
