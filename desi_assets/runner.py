"""Run the asset graph in process through Dagster: partitions in batches, then unpartitioned stages."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from desi_assets.defs.partitions import coadds_partitions

DAGSTER_YAML = """telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home(lakehouse_root: str) -> Path:
    """Point DAGSTER_HOME at {lakehouse}/.dagster (unless set) with telemetry and the NUX off."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path(lakehouse_root) / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@dataclass
class StageResult:
    """Outcome of one job over a set of partitions."""

    job: str
    partitions: int = 0
    runs: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rows: int = 0


def register_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add the keys not yet present to the `coadds` dynamic partitions; returns those added."""
    have = set(instance.get_dynamic_partitions(coadds_partitions.name))
    new = [k for k in keys if k not in have]
    if new:
        instance.add_dynamic_partitions(coadds_partitions.name, new)
    return new


#: Console log level of in-process runs (the runner prints its own progress; the UI keeps every event).
LOG_LEVEL = os.environ.get("DESI_ARD_LOG_LEVEL", "WARNING")


def _run_config() -> dict:
    return {"loggers": {"console": {"config": {"log_level": LOG_LEVEL}}}}


def _execute_chunk(defs: dg.Definitions, job_name: str, chunk: list[str], instance: dg.DagsterInstance
                   ) -> tuple[bool, int]:
    """One run over a contiguous partition range; returns (success, spectra handled)."""
    tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, tags=tags, raise_on_error=False,
                                                               run_config=_run_config())
    rows = 0  # spectra handled: the largest row count among the run's assets (events repeat per partition)
    for ev in result.get_asset_materialization_events():
        value = ev.materialization.metadata.get("rows")
        if value is not None:
            rows = max(rows, int(value.value))
    return result.success, rows


def _worker_chunk(defs_args: tuple[str, str], job_name: str, chunk: list[str]) -> tuple[bool, int]:
    """Run one chunk in a worker process (rebuilds the Definitions; instance from DAGSTER_HOME)."""
    from desi_assets.definitions import build_defs

    with dg.DagsterInstance.get() as instance:
        return _execute_chunk(build_defs(*defs_args), job_name, chunk, instance)


def run_partitioned(defs: dg.Definitions, job_name: str, keys: Sequence[str], instance: dg.DagsterInstance,
                    batch: int = 25, progress: Callable[[str], None] | None = None, workers: int = 1,
                    defs_args: tuple[str, str] | None = None) -> StageResult:
    """Execute a partitioned job over keys in contiguous batches (one run per batch, partition ranges).

    With workers > 1 (and defs_args = (lakehouse root, archive) to rebuild the Definitions), batches run
    concurrently in worker processes, like a run queue with that many concurrent runs.
    """
    order = instance.get_dynamic_partitions(coadds_partitions.name)
    pos = {k: i for i, k in enumerate(order)}
    keys = sorted(keys, key=lambda k: pos[k])
    res = StageResult(job_name)
    t0 = time.perf_counter()
    chunks: list[list[str]] = []
    parallel = workers > 1 and defs_args is not None and len(keys) > 1
    size = min(batch, -(-len(keys) // workers)) if parallel else batch
    for k in keys:  # a range must be contiguous in partition order
        if chunks and len(chunks[-1]) < size and pos[k] == pos[chunks[-1][-1]] + 1:
            chunks[-1].append(k)
        else:
            chunks.append([k])

    def _done(chunk: list[str], ok: bool, rows: int) -> None:
        res.runs += 1
        res.partitions += len(chunk)
        res.rows += rows
        if not ok:
            res.failed.extend(chunk)
        if progress:
            progress(f"  {job_name} [{res.runs}/{len(chunks)}] {chunk[0]}..{chunk[-1]} ({len(chunk)} files) "
                     f"{'ok' if ok else 'FAILED'}")

    if parallel:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_worker_chunk, defs_args, job_name, c): c for c in chunks}
            for fut in as_completed(futures):
                _done(futures[fut], *fut.result())
    else:
        for chunk in chunks:
            _done(chunk, *_execute_chunk(defs, job_name, chunk, instance))
    res.seconds = time.perf_counter() - t0
    return res


def run_unpartitioned(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance,
                      progress: Callable[[str], None] | None = None) -> StageResult:
    """Execute an unpartitioned job once."""
    res = StageResult(job_name)
    t0 = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False,
                                                               run_config=_run_config())
    res.runs = 1
    if not result.success:
        res.failed.append(job_name)
    res.seconds = time.perf_counter() - t0
    if progress:
        progress(f"  {job_name}: {'ok' if result.success else 'FAILED'} in {res.seconds:.1f} s")
    return res
