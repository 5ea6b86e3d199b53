"""desi_assets.runner with small fake jobs: per-partition outcomes, junk keys, check results, the CLI's report."""

import dagster as dg
import pytest

from desi_assets.cli import report
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.runner import (
    WORKER_TAG,
    WorkerPool,
    outcome_of,
    prune_invalid_partitions,
    register_partitions,
    run_partitioned,
    run_unpartitioned,
)

KEYS = ["main-dark-100", "main-dark-101", "main-dark-102", "main-dark-103"]
BAD = "main-dark-102"
ROWS = {"main-dark-100": 5, "main-dark-101": 7, "main-dark-103": 11}


@dg.asset(partitions_def=coadds_partitions)
def per_key(context: dg.AssetExecutionContext):
    """Logs one materialization per good partition (with its rows), then fails naming the bad one."""
    for key in context.partition_keys:
        if key != BAD:
            yield dg.AssetMaterialization(asset_key="per_key", partition=key, metadata={"rows": ROWS[key]})
    if BAD in context.partition_keys:
        raise dg.Failure(description=f"1 of {len(context.partition_keys)} files could not be ingested: {BAD}")
    yield dg.Output(None)


@dg.asset(partitions_def=coadds_partitions)
def logged(context: dg.AssetExecutionContext):
    """Like coadd_ingest: logs (context.log_event) one materialization per good partition, then fails."""
    for key in context.partition_keys:
        if key != BAD:
            context.log_event(dg.AssetMaterialization(asset_key="logged", partition=key,
                                                      metadata={"rows": ROWS[key], "batch_rows": 23}))
    if BAD in context.partition_keys:
        raise dg.Failure(description=f"could not be ingested: {BAD}")
    yield from ()


@dg.asset(partitions_def=coadds_partitions)
def per_batch(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A batch-level result (Dagster repeats it per partition): its rows must count once per run."""
    return dg.MaterializeResult(metadata={"rows": 30, "partitions": len(context.partition_keys)})


@dg.asset
def summary() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset_check(asset=summary)
def recovery() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"best": 0.5, "threshold": 0.8, "rule": "best >= 0.8"})


@dg.asset_check(asset=summary)
def balance() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"frac_star": 0.333})


DEFS = dg.Definitions(
    assets=[per_key, logged, per_batch, summary], asset_checks=[recovery, balance],
    jobs=[dg.define_asset_job("per_key_job", selection=[per_key]),
          dg.define_asset_job("logged_job", selection=[logged]),
          dg.define_asset_job("per_batch_job", selection=[per_batch]),
          dg.define_asset_job("summary_job", selection=[summary])])


@pytest.fixture
def instance():
    """An in-memory Dagster instance (these runs are in process)."""
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def inst(instance):
    register_partitions(instance, KEYS)
    return instance


def test_partial_failure_is_counted_per_partition(inst):
    lines: list[str] = []
    res = run_partitioned(DEFS, "per_key_job", KEYS, inst, batch=25, progress=lines.append)
    assert res.runs == 1 and res.partitions == 4
    assert res.succeeded == ["main-dark-100", "main-dark-101", "main-dark-103"]
    assert res.failed == [BAD]
    assert res.rows_by_partition == ROWS and res.rows == 23
    assert any(BAD in e for e in res.errors)
    assert lines == [f"  per_key_job [1/1] main-dark-100..main-dark-103 (4 files, 23 rows) FAILED: 3 ok, "
                     f"1 failed ({BAD})"]
    # Dagster's own records agree: the good partitions are materialized, the bad one is not
    mat = inst.get_materialized_partitions(dg.AssetKey("per_key"))
    assert mat == set(ROWS)
    out: list[str] = []
    assert report([res], say=out.append) == 1
    row = next(x for x in out if x.startswith("per_key_job"))
    assert row.split() == ["per_key_job", "1", "4", "3", "1", "23", row.split()[6], "-"]
    assert any(x.startswith("failed partitions/jobs (1): main-dark-102") for x in out)


def test_logged_events_of_a_failed_run_are_counted(inst):
    """Events logged before the failure are missing from the in-process result: the runner reads the instance."""
    res = run_partitioned(DEFS, "logged_job", KEYS, inst, batch=25)
    assert res.failed == [BAD] and sorted(res.succeeded) == sorted(ROWS)
    assert res.rows_by_partition == ROWS and res.rows == 23
    assert inst.get_materialized_partitions(dg.AssetKey("logged")) == set(ROWS)


def test_small_batches_keep_per_partition_counts(inst):
    res = run_partitioned(DEFS, "per_key_job", KEYS, inst, batch=2)
    assert res.runs == 2 and res.failed == [BAD] and res.rows == 23
    assert sorted(res.succeeded) == sorted(ROWS)


def test_batch_level_rows_count_once(inst):
    res = run_partitioned(DEFS, "per_batch_job", KEYS, inst, batch=2)
    assert res.runs == 2 and not res.failed and res.succeeded == KEYS
    assert res.rows == 60  # 30 per run, not 30 per partition


def test_outcome_of_a_run_with_no_events(inst):
    res = DEFS.resolve_job_def("per_key_job").execute_in_process(
        instance=inst, partition_key=BAD, raise_on_error=False)
    out = outcome_of(res, [BAD])
    assert not out.success and out.succeeded == [] and out.failed == [BAD] and out.rows == 0


@pytest.mark.parametrize("junk", ["", "../../etc", "main-dark-10378/../../x", "main-dark-99999"])
def test_junk_keys_are_refused(instance, junk):
    with pytest.raises(ValueError, match="invalid partition key") as ei:
        register_partitions(instance, ["main-dark-1", junk])
    assert repr(junk) in str(ei.value)
    assert instance.get_dynamic_partitions(coadds_partitions.name) == []  # nothing registered, not even the good
    with pytest.raises(ValueError, match="invalid partition key"):
        run_partitioned(DEFS, "per_key_job", [junk], instance)


def test_junk_keys_registered_earlier_are_pruned(instance):
    instance.add_dynamic_partitions(coadds_partitions.name, ["main-dark-1", "", "../../etc"])
    assert sorted(prune_invalid_partitions(instance)) == ["", "../../etc"]
    assert instance.get_dynamic_partitions(coadds_partitions.name) == ["main-dark-1"]


def test_unregistered_keys_are_a_clear_error(instance):
    with pytest.raises(ValueError, match="not registered"):
        run_partitioned(DEFS, "per_key_job", ["main-dark-5"], instance)


def test_check_results_reach_the_report(inst):
    lines: list[str] = []
    res = run_unpartitioned(DEFS, "summary_job", inst, progress=lines.append)
    assert not res.failed and res.rows == 3
    assert lines[0].endswith("1 check(s) failed")
    got = {c.check: c for c in res.checks}
    assert got["recovery"].passed is False and got["recovery"].severity == "WARN"
    assert got["recovery"].figure == "best=0.5 (threshold 0.8)" and got["recovery"].asset == "summary"
    assert got["balance"].passed and got["balance"].severity == "ERROR" and got["balance"].figure == "frac_star=0.333"
    out: list[str] = []
    assert report([res], say=out.append) == 0  # a WARN check prints, the exit status stays 0
    row = next(x for x in out if x.startswith("summary_job")).split()
    assert row[4] == "1" and row[7] == "1/2"  # failed counts the failed check: never "failed 0"
    table = out[out.index("checks") + 1:]
    assert table[0].split() == ["check", "asset", "result", "severity", "key", "figure"]
    assert "recovery" in table[1] + table[2] and any(
        x.split()[:4] == ["recovery", "summary", "FAILED", "WARN"] and x.endswith("best=0.5 (threshold 0.8)")
        for x in table)
    assert any(x.split()[:4] == ["balance", "summary", "passed", "ERROR"] for x in table)
    assert out[-1] == "failed checks (1): recovery on summary (WARN)"


def test_contiguous_chunks_balance_weights_and_keep_ranges_contiguous():
    """Two workers: the cut balances file bytes, not key counts; a gap in partition order always cuts; batch caps."""
    from desi_assets.runner import contiguous_chunks

    keys = [f"main-dark-{i}" for i in range(12)]
    pos = {k: i for i, k in enumerate(keys)}
    sizes = dict(zip(keys, [1, 1, 10, 1, 10, 1, 1, 1, 6, 5, 3, 2], strict=True))
    assert contiguous_chunks(keys, pos, 25, 2) == [keys[:6], keys[6:]]  # no weights: even counts
    even = contiguous_chunks(keys, pos, 25, 2, sizes)
    assert [sum(sizes[k] for k in c) for c in even] == [23, 19]  # counts split 6 + 6 would be 24 + 18
    assert sum(even, []) == keys
    three = contiguous_chunks(keys, pos, 25, 3, sizes)  # the best 3 cuts: 13 | 13 | 16 (heaviest run 16)
    assert [sum(sizes[k] for k in c) for c in three] == [13, 13, 16]
    assert contiguous_chunks(keys, pos, 25, 1, sizes) == [keys]  # one worker: one run per batch
    assert [len(c) for c in contiguous_chunks(keys, pos, 5, 1)] == [5, 5, 2]
    gap = keys[:3] + keys[5:]
    assert all(pos[c[-1]] - pos[c[0]] == len(c) - 1 for c in contiguous_chunks(gap, pos, 25, 2, sizes))
    assert len(contiguous_chunks(keys, pos, 4, 2, sizes)) == 3  # the batch cap needs 3 runs of at most 4 keys
    assert len(contiguous_chunks(keys[:2], pos, 25, 2, {keys[0]: 100.0, keys[1]: 1.0})) == 2


def _defs() -> dg.Definitions:
    """Factory the worker processes rebuild DEFS with."""
    return DEFS


def test_one_worker_pool_serves_several_stages(tmp_path, monkeypatch):
    """A pipeline's WorkerPool starts its 2 processes once; both stages' runs ran in those same 2 processes."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    kw = {"workers": 2, "defs_args": (), "defs_factory": "desi_assets_tests.test_runner:_defs"}
    with dg.DagsterInstance.get() as inst:
        register_partitions(inst, KEYS)
        with WorkerPool(2) as pool:
            first = run_partitioned(DEFS, "per_batch_job", KEYS, inst, pool=pool, **kw)
            second = run_partitioned(DEFS, "per_key_job", KEYS, inst, pool=pool, **kw)
        workers = {r.tags[WORKER_TAG] for r in inst.get_runs()}
    assert first.runs == second.runs == 2 and len(first.succeeded) == 4 and second.failed == [BAD]
    assert len(workers) == 2
