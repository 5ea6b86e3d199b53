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


def run_partitioned(defs: dg.Definitions, job_name: str, keys: Sequence[str], instance: dg.DagsterInstance,
                    batch: int = 25, progress: Callable[[str], None] | None = None) -> StageResult:
    """Execute a partitioned job over keys in contiguous batches (one run per batch, partition ranges)."""
    job = defs.resolve_job_def(job_name)
    order = instance.get_dynamic_partitions(coadds_partitions.name)
    pos = {k: i for i, k in enumerate(order)}
    keys = sorted(keys, key=lambda k: pos[k])
    res = StageResult(job_name)
    t0 = time.perf_counter()
    chunks: list[list[str]] = []
    for k in keys:  # a range must be contiguous in partition order
        if chunks and len(chunks[-1]) < batch and pos[k] == pos[chunks[-1][-1]] + 1:
            chunks[-1].append(k)
        else:
            chunks.append([k])
    for i, chunk in enumerate(chunks):
        tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        res.runs += 1
        res.partitions += len(chunk)
        if not result.success:
            res.failed.extend(chunk)
        seen = set()  # a ranged run emits one event per partition, all with the run's metadata
        for ev in result.get_asset_materialization_events():
            rows = ev.materialization.metadata.get("rows")
            if rows is not None and ev.asset_key not in seen:
                seen.add(ev.asset_key)
                res.rows += int(rows.value)
        if progress:
            state = "ok" if result.success else "FAILED"
            progress(f"  {job_name} [{i + 1}/{len(chunks)}] {chunk[0]}..{chunk[-1]} ({len(chunk)} files) {state}")
    res.seconds = time.perf_counter() - t0
    return res


def run_unpartitioned(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance,
                      progress: Callable[[str], None] | None = None) -> StageResult:
    """Execute an unpartitioned job once."""
    res = StageResult(job_name)
    t0 = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False)
    res.runs = 1
    if not result.success:
        res.failed.append(job_name)
    res.seconds = time.perf_counter() - t0
    if progress:
        progress(f"  {job_name}: {'ok' if result.success else 'FAILED'} in {res.seconds:.1f} s")
    return res
