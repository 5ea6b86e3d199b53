"""The `desi-ard` CLI: junk keys refused, a folder of several productions explained, --keys selection."""

from pathlib import Path

import pytest

from desi_assets.cli import main
from desi_assets.sources.archives import LocalArchive, find_productions
from desi_assets_tests.conftest import DESI_REAL


def _touch(root: Path, rel: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


@pytest.fixture
def redux(tmp_path) -> Path:
    """A spectro/redux/ folder holding several productions (placeholder files: listing reads names only)."""
    root = tmp_path / "spectro" / "redux"
    _touch(root, "iron/tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits")
    _touch(root, "fuji/healpix/sv3/dark/260/26065/coadd-sv3-dark-26065.fits")
    _touch(root, "fuji/tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits")  # same key as iron's
    _touch(root, "loa/healpix/special/dark/272/27247/coadd-special-dark-27247.fits")
    (root / "README.txt").write_text("not a production")
    (root / "scratch" / "empty").mkdir(parents=True)
    return root


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_folder_of_productions_is_explained(redux, tmp_path, dagster_home, capsys):
    """Issue 10 #19: not "found 0 coadd files" alone, but which sub-folders are productions and how to pick one."""
    assert find_productions(redux) == ["fuji", "iron", "loa"]
    assert find_productions(redux.parent.parent) == ["spectro/redux/fuji", "spectro/redux/iron", "spectro/redux/loa"]
    rc = main(["ingest", "--archive", str(redux), "--lakehouse", str(tmp_path / "lake"), "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "found 0 coadd files" in out
    assert "3 DESI production(s): fuji, iron, loa" in out
    assert f"--archive {redux / 'fuji'}" in out and "one production per lakehouse" in out
    assert "nothing to do" in out
    assert not (tmp_path / "lake" / "delta").exists()


def test_missing_or_plain_folder_says_so(tmp_path):
    assert "is not a directory" in LocalArchive(root=str(tmp_path / "nope")).why_empty()
    (tmp_path / "plain" / "x").mkdir(parents=True)
    assert "no sub-folder that looks like one" in LocalArchive(root=str(tmp_path / "plain")).why_empty()
    assert LocalArchive(root=str(tmp_path / "plain")).list_entries() == []


@pytest.mark.skipif(not DESI_REAL.is_dir(), reason="shared/data/desi-real not present")
def test_real_data_root_lists_its_productions():
    hint = LocalArchive(root=str(DESI_REAL)).why_empty()
    assert "4 DESI production(s): everest, fuji, iron, loa" in hint


@pytest.mark.parametrize("junk", ["", "../../etc", "main-dark-1,../x"])
def test_cli_refuses_junk_keys(redux, tmp_path, dagster_home, capsys, junk):
    """Issue 10 #6: every CLI path that takes a key refuses junk with a clear message and exit status 2."""
    rc = main(["ingest", "--archive", str(redux / "fuji"), "--lakehouse", str(tmp_path / "lake"), "--keys", junk])
    out = capsys.readouterr().out
    assert rc == 2
    assert out.startswith("error: refusing 1 invalid partition key(s)") and "invalid partition key" in out
    assert not dagster_home.exists()  # refused before anything was registered or run


def test_cli_keys_not_in_archive(redux, tmp_path, dagster_home, capsys):
    rc = main(["ingest", "--archive", str(redux / "fuji"), "--lakehouse", str(tmp_path / "lake"),
               "--keys", "main-dark-5"])
    assert rc == 2 and "error: not in the archive: main-dark-5" in capsys.readouterr().out


def test_cli_reports_exactly_the_failed_partition(survey_copy, tmp_path, dagster_home, capsys):
    """Issue 10 #2 (CLI side): one truncated file of a batch; the others land and are reported with their rows."""
    from desi_assets.storage.lakehouse import LakehouseResource
    from desi_assets_tests.conftest import survey_keys

    keys = survey_keys(survey_copy)
    bad = keys[1]
    coadd, _ = LocalArchive(root=str(survey_copy)).fetch(bad)
    with open(coadd, "r+b") as fh:
        fh.truncate(coadd.stat().st_size // 2)
    lake = tmp_path / "lake"
    rc = main(["ingest", "--archive", str(survey_copy), "--lakehouse", str(lake), "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    targets = LakehouseResource(root=str(lake)).read("targets")
    assert sorted(targets["coadd_key"].unique()) == sorted(k for k in keys if k != bad)
    n = len(keys)
    assert f"({n} files, {targets.height} rows) FAILED: {n - 1} ok, 1 failed ({bad})" in out
    row = next(x for x in out.splitlines() if x.startswith("coadd_job ")).split()
    assert row[1:6] == ["1", str(n), str(n - 1), "1", str(targets.height)]
    assert f"failed partitions/jobs (1): {bad}; reasons in the ingest_errors table" in out


def _worker_pid() -> tuple[int, str | None]:
    import os
    import time

    time.sleep(0.5)  # long enough that both workers take a task
    return os.getpid(), os.environ.get("DAGSTER_HOME")


def _no_igm_table() -> bool:
    return True


def _pids(executor) -> set[int]:
    import os

    got = [f.result() for f in [executor.submit(_worker_pid) for _ in range(4)]]
    assert {home for _, home in got} == {os.environ["DAGSTER_HOME"]}  # the workers see the pipeline's instance
    return {pid for pid, _ in got}


def test_demo_writes_the_mock_on_the_pipelines_own_workers(tmp_path, monkeypatch):
    """The mock's pixels and the pipeline's runs share one pool: its processes import once for both."""
    import desi_assets.cli as cli
    import desi_assets.sources.mock as mock

    monkeypatch.setenv("DAGSTER_HOME", "unset-below")  # restored afterwards
    monkeypatch.delenv("DAGSTER_HOME")  # as in a fresh shell: the demo sets it before its workers start
    seen: dict[str, set[int]] = {}

    def fake_mock(root, config, progress=None, workers=1, executor=None):
        seen["mock"] = _pids(executor)
        return []

    def fake_pipeline(lakehouse, archive, batch, workers=1, pool=None, **kw):
        seen["pipeline"] = _pids(pool.executor())
        return 0

    from desi_assets.science.stellar_populations import bagpipes_fit

    monkeypatch.setattr(bagpipes_fit, "write_igm_table", _no_igm_table)  # the fits' own tests import bagpipes
    monkeypatch.setattr(mock, "write_mock_survey", fake_mock)
    monkeypatch.setattr(cli, "_run_pipeline", fake_pipeline)
    assert main(["demo", "--lakehouse", str(tmp_path / "lake"), "--workers", "2"]) == 0
    assert len(seen["mock"]) == 2 and seen["pipeline"] == seen["mock"]
