"""lakehouse_maintenance_job run for real: compact + vacuum leave every table reading the same, with fewer files."""

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from desi_assets.defs.ops.maintenance import lakehouse_maintenance_job, weekly_maintenance
from desi_assets.storage.lakehouse import LakehouseResource


def _errors(i: int) -> pl.DataFrame:
    return pl.DataFrame({
        "coadd_key": [f"main-dark-{i}"], "file": [f"f{i}.fits"], "error_type": ["X"], "message": [f"m{i}"],
        "failed_at": [datetime(2026, 1, 1, tzinfo=timezone.utc)], "hpxgroup": [i // 100]},
        schema_overrides={"hpxgroup": pl.Int32})


def _data_files(lh: LakehouseResource, name: str) -> list[Path]:
    return sorted(Path(lh.table_uri(name).removeprefix("file://")).rglob("*.parquet"))


def test_compact_and_vacuum_keeps_rows_and_drops_files(tmp_path):
    lh = LakehouseResource(root=str(tmp_path / "lake"))
    for i in range(6):  # six appends: six small files
        lh.append("ingest_errors", _errors(i))
    before = lh.read("ingest_errors").sort("coadd_key")
    n_before = len(_data_files(lh, "ingest_errors"))
    assert n_before == 6 and before.height == 6
    res = lakehouse_maintenance_job.execute_in_process(
        resources={"lakehouse": lh},
        run_config={"ops": {"compact_and_vacuum": {"config": {"retention_hours": 0}}}})
    assert res.success
    removed = res.output_for_node("compact_and_vacuum")
    assert set(removed) == {"ingest_errors"}  # absent tables are skipped, not created
    assert removed["ingest_errors"] == n_before  # the six small files, vacuumed
    assert len(_data_files(lh, "ingest_errors")) == 1
    assert_frame_equal(lh.read("ingest_errors").sort("coadd_key"), before)


def test_default_retention_keeps_recent_files(tmp_path):
    """With the 7-day default, vacuum removes nothing that readers of recent versions may still need."""
    lh = LakehouseResource(root=str(tmp_path / "lake"))
    for i in range(3):
        lh.append("ingest_errors", _errors(i))
    res = lakehouse_maintenance_job.execute_in_process(resources={"lakehouse": lh})
    assert res.success and res.output_for_node("compact_and_vacuum") == {"ingest_errors": 0}
    assert len(_data_files(lh, "ingest_errors")) == 3 + 1  # old files kept, one compacted file added
    assert lh.read("ingest_errors").height == 3
    assert weekly_maintenance.job_name == "lakehouse_maintenance_job"
