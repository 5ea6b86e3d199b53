"""The Dagster UI renders the asset graph and the `coadds` partitions (webserver + headless Chromium).

Builds a tiny lakehouse (2 partitions of `coadd_job` materialized into a temp instance), starts
`dagster-webserver` on a free port in its own process group, and checks the rendered DOM of the
asset graph and of a partitions page with `chromium --headless --dump-dom`. A screenshot of the
asset graph is written to tmp_path, or kept as `ui_asset_graph.png` beside this file when
DESI_ARD_KEEP_SCREENSHOT=1.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from desi_assets.runner import DAGSTER_YAML
from desi_assets_tests.conftest import survey_keys

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
KEPT_SCREENSHOT = Path(__file__).with_name("ui_asset_graph.png")
ASSETS = ["raw_spectra", "preprocessed_spectra", "anomaly_scores", "training_set", "anomaly_model"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER_START_S = 60.0  # /server_info answers after ~6 s on an idle machine; allow for a busy one
CHROMIUM_TIMEOUT_S = 60.0
STACK_NOTES_WINDOW = "1400,900"
# At 1400x900 the graph is zoomed out so far that Dagster draws name-only nodes with truncated
# names ("preproces…_spectra"); from ~2400 px wide it draws full nodes (latest event, "50% filled",
# "4 partitions"), which is what the DOM check and the kept screenshot need.
GRAPH_WINDOW = "2400,1000"
# The global lineage page collapses groups when there are several; `expanded` (a query parameter the
# UI also keeps in local storage) opens them. With the default feature flags (a fresh Chromium
# profile) a group's id is "global@global:{group}".
GROUPS = ["ingest", "preprocess", "anomalies"]
GRAPH_PATH = "/asset-groups?expanded=" + urllib.parse.quote(",".join(f"global@global:{g}" for g in GROUPS), safe="")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as r:
                up = r.status == 200
            if up and _asset_count(url) > 0:  # the code location has loaded too
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.3)
    pytest.fail(f"dagster-webserver did not serve the code location in {SERVER_START_S:.0f} s:\n"
                f"{log.read_text()[-3000:]}")


def _asset_count(url: str) -> int:
    """Number of asset nodes the webserver's GraphQL API knows (0 while the code server loads)."""
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": "{ assetNodes { id } }"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return len(json.loads(r.read())["data"]["assetNodes"])


def _text(dom: str) -> str:
    """Visible text of a dumped DOM (scripts, styles and tags removed, whitespace collapsed)."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def _chromium(url: str, *action: str, cwd: Path, window: str = STACK_NOTES_WINDOW) -> str:
    """Run headless Chromium with the STACK-NOTES flags plus `action`; returns stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=cwd)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=15000", f"--window-size={window}", *action, url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, cwd=cwd,
                             start_new_session=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, f"chromium failed ({out.returncode}) on {url}:\n{out.stderr[-2000:]}"
    return out.stdout


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop the webserver's whole process group, including its `dagster api grpc` code server."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)  # the code server may outlive the webserver by its heartbeat
    proc.wait(timeout=10)


@pytest.fixture
def ui_lakehouse(small_survey, tmp_path):
    """A temp DAGSTER_HOME + lakehouse with the `coadds` partitions and 2 materialized partitions."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.runner import register_partitions, run_partitioned

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    lake = tmp_path / "lakehouse"
    keys = survey_keys(small_survey)
    defs = build_defs(str(lake), str(small_survey))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_partitions(instance, keys)
        res = run_partitioned(defs, "coadd_job", keys[:2], instance, batch=25)
    assert not res.failed and res.runs == 1
    return home, lake, keys


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (`make browser` installs Debian's chromium)")
def test_ui_shows_asset_graph_and_partitions(ui_lakehouse, small_survey, tmp_path):
    home, lake, keys = ui_lakehouse
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DESI_ARD_LAKEHOUSE": str(lake),
           "DESI_ARD_ARCHIVE": str(small_survey)}
    log = tmp_path / "webserver.log"
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    with open(log, "w") as fh:
        proc = subprocess.Popen([webserver, "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(url, proc, log)

        # the global asset graph, groups expanded: every asset of every layer is a full node
        text = _text(_chromium(url + GRAPH_PATH, "--dump-dom", cwd=tmp_path, window=GRAPH_WINDOW))
        missing = [a for a in ASSETS if a not in text]
        assert not missing, f"asset graph lacks {missing}; page text: {text[:1500]!r}"
        assert f"{len(keys)} partitions" in text, f"graph nodes do not show the coadds partitions: {text[:1500]!r}"

        # the partitions tab of raw_spectra: every dynamic `coadds` key, 2 of them materialized
        text = _text(_chromium(f"{url}/assets/raw_spectra?view=partitions", "--dump-dom", cwd=tmp_path))
        absent = [k for k in keys if k not in text]
        assert not absent, f"partition keys {absent} not on the partitions page; page text: {text[:1500]!r}"
        assert f"{len(keys)} Partitions" in text and "Materialized (2)" in text, text[:1500]
        assert f"Missing ({len(keys) - 2})" in text, text[:1500]

        shot = tmp_path / "ui_asset_graph.png"
        _chromium(url + GRAPH_PATH, f"--screenshot={shot}", cwd=tmp_path, window=GRAPH_WINDOW)
        assert shot.exists() and shot.stat().st_size > 10_000
        if os.environ.get("DESI_ARD_KEEP_SCREENSHOT") == "1":
            shutil.copyfile(shot, KEPT_SCREENSHOT)
    finally:
        _stop(proc)
