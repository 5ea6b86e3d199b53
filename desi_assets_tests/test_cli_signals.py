"""Killing `desi-ard ingest` (issue 10 #4): its workers die with it and no run is left STARTED.

The archive is a loopback HTTP server whose coadd downloads stall (bounded), so every run is caught
mid-way, deterministically, in the workers (--workers 2) or in process (--workers 1).
"""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from desi_assets.runner import PID_TAG, WORKER_TAG, reap_orphaned_runs

KEYS = ["main-dark-100", "main-dark-101", "main-dark-102", "main-dark-103"]
STALL_S = 60.0  # longest a coadd download hangs before the server lets go


class _StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Directory indexes as usual; a coadd GET sends half the file, then waits (bounded) for release."""

    arrived: list = []
    release: threading.Event = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not (os.path.isfile(path) and "/coadd-" in self.path):
            return super().do_GET()
        data = Path(path).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.arrived.append(self.path)
        self.release.wait(STALL_S)
        self.close_connection = True


@contextmanager
def stalling_archive(root: Path):
    """A loopback server (127.0.0.1 only) for root; yields (base url, handler class)."""
    handler = type("H", (_StallingHandler,), {"arrived": [], "release": threading.Event()})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        handler.release.set()
        srv.shutdown()
        srv.server_close()
        t.join(5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait(cond, timeout: float, what: str, proc=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"desi-ard exited ({proc.returncode}) before {what}:\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text() if log else ''}")
        time.sleep(0.2)


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "www"
    for k in KEYS:
        pix = int(k.rsplit("-", 1)[1])
        p = root / f"healpix/main/dark/{pix // 100}/{pix}/coadd-{k}.fits"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"\0" * 20_000)  # never read: every download stalls half-way
    with stalling_archive(root) as served:
        yield served


def _start(tmp_path: Path, url: str, workers: int):
    home, lake, log = tmp_path / "dagster", tmp_path / "lake", tmp_path / "cli.log"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    fh = open(log, "w")  # noqa: SIM115 - closed by the caller through proc
    proc = subprocess.Popen([sys.executable, "-m", "desi_assets.cli", "ingest", "--archive", url, "--lakehouse",
                             str(lake), "--workers", str(workers), "--batch", "1"], stdout=fh, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    return proc, home, lake, log, fh


def _runs(home: Path) -> list:
    with dg.DagsterInstance.from_config(str(home)) as inst:
        return list(inst.get_runs())


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_killed_cli_takes_its_workers_along(archive, tmp_path, sig):
    url, handler = archive
    proc, home, lake, log, fh = _start(tmp_path, url, workers=2)
    try:
        _wait(lambda: len(handler.arrived) >= 2, 180, "two runs mid-download", proc, log)
        _wait(lambda: sum(r.tags.get(WORKER_TAG) is not None for r in _runs(home)) >= 2, 30, "run records")
        started = [r for r in _runs(home) if r.status == dg.DagsterRunStatus.STARTED]
        workers = {int(r.tags[WORKER_TAG]) for r in started}
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        assert {r.tags[PID_TAG] for r in started} == {str(proc.pid)}
        os.kill(proc.pid, sig)
        rc = proc.wait(timeout=60)
        _wait(lambda: not any(_alive(p) for p in workers), 15, "the workers to die with the parent")
        if sig == signal.SIGTERM:
            assert rc == 128 + signal.SIGTERM, log.read_text()
            text = log.read_text()
            assert "SIGTERM: workers stopped" in text and "marked canceled" in text
        else:  # no chance to clean up: the next session marks what the dead process left behind
            assert rc == -signal.SIGKILL
            with dg.DagsterInstance.from_config(str(home)) as inst:
                assert set(reap_orphaned_runs(inst)) == {r.run_id for r in started}
        runs = _runs(home)
        assert not [r for r in runs if r.status in IN_PROGRESS_RUN_STATUSES]
        assert {r.run_id for r in runs if r.status == dg.DagsterRunStatus.CANCELED} >= {r.run_id for r in started}
        assert not (lake / "delta" / "targets").exists()  # nothing committed, before or after the kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        fh.close()


def test_ctrl_c_stops_an_in_process_run(archive, tmp_path):
    """--workers 1: Dagster turns SIGINT into a failed run; the runner then stops instead of going on."""
    url, handler = archive
    proc, home, lake, log, fh = _start(tmp_path, url, workers=1)
    try:
        _wait(lambda: len(handler.arrived) >= 1, 180, "a run mid-download", proc, log)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=60)
        assert rc == 128 + signal.SIGINT, log.read_text()
        runs = _runs(home)
        assert len(runs) == 1 and len(handler.arrived) == 1  # stopped: no further batch was started
        assert runs[0].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        fh.close()
