"""The Dagster UI: the expanded lineage, the `coadds` partitions and an inline plot (webserver + headless Chromium).

Builds a tiny lakehouse (2 partitions of `coadd_job` materialized into a temp instance), starts
`dagster-webserver` on a free port in its own process group (STACK-NOTES: `set -m`), and drives one
headless Chromium over the DevTools protocol: open a page, wait for its text, click, read the DOM,
take screenshots. Screenshots go to tmp_path, or to $DESI_ARD_SCREENSHOTS when that is set.

What Dagster 1.13 does with plots (checked here): a `MetadataValue.md` holding a data: URI PNG is
rendered (its sanitizer allows data: image sources), but Markdown over 1,000 characters sits behind a
"[Show Markdown]" link in the metadata table and opens in a dialog; the test clicks it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from desi_assets.runner import DAGSTER_YAML
from desi_assets_tests.conftest import survey_keys

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER_START_S = 90.0  # /server_info answers after ~6 s on an idle machine; allow for a busy one
PAGE_TIMEOUT_S = 45.0
# At 1400x900 the graph is zoomed out so far that Dagster draws name-only nodes with truncated
# names ("preproces…_spectra"); with every layer present it needs ~3600 px to draw full nodes (latest event, "50% filled",
# "4 partitions"), which is what the DOM check and the screenshot need.
GRAPH_WINDOW = (3600, 3600)
PAGE_WINDOW = (1400, 900)
PLOTTED_ASSETS = ["raw_spectra", "preprocessed_spectra"]  # coadd_job's assets with an example plot
PNG_DATA = "data:image/png;base64,"

needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium is not on PATH (`make browser` installs Debian's chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["data"]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if _graphql(url, "{ assetNodes { id } }")["assetNodes"]:  # the code location has loaded too
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.3)
    pytest.fail(f"dagster-webserver did not serve the code location in {SERVER_START_S:.0f} s:\n"
                f"{log.read_text()[-3000:]}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group (the webserver and its `dagster api grpc` code server, or Chromium)."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)  # the code server may outlive the webserver by its heartbeat
    proc.wait(timeout=10)


class Browser:
    """One headless Chromium page driven over the DevTools protocol (STACK-NOTES flags)."""

    def __init__(self, workdir: Path):
        from websockets.sync.client import connect  # dagster-webserver's uvicorn[standard] brings websockets

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "--window-size={},{}".format(*PAGE_WINDOW), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(p for p in json.loads(r.read()) if p["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.msg_id = 0

    def call(self, method: str, **params) -> dict:
        self.msg_id += 1
        self.ws.send(json.dumps({"id": self.msg_id, "method": method, "params": params}))
        while True:  # skip events until our reply
            msg = json.loads(self.ws.recv(timeout=PAGE_TIMEOUT_S))
            if msg.get("id") == self.msg_id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg["result"]

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in res, res["exceptionDetails"]
        return res["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = PAGE_TIMEOUT_S):
        """Poll a JS expression until it is truthy; fail with the page's text otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(f"{what} not shown in {timeout:.0f} s; page text: {self.text()[:1500]!r}")

    def open(self, url: str, window: tuple[int, int] = PAGE_WINDOW) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=window[0], height=window[1],
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = PAGE_TIMEOUT_S) -> str:
        probe = " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in needles)
        self.wait_for(f"document.body && {probe}", f"{needles}", timeout)
        return self.text()

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            _stop(self.proc)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def ui(small_survey, tmp_path_factory):
    """(base URL, partition keys, Browser, screenshot dir): a served temp instance with 2 materialized partitions."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.runner import register_partitions, run_partitioned

    if CHROMIUM is None:
        pytest.skip("chromium is not on PATH (`make browser` installs Debian's chromium)")
    pytest.importorskip("websockets.sync.client")
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    lake = tmp / "lakehouse"
    keys = survey_keys(small_survey)
    defs = build_defs(str(lake), str(small_survey))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_partitions(instance, keys)
        res = run_partitioned(defs, "coadd_job", keys[:2], instance, batch=25)
    assert not res.failed and res.runs == 1

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "DESI_ARD_LAKEHOUSE": str(lake),
           "DESI_ARD_ARCHIVE": str(small_survey)}
    log = tmp / "webserver.log"
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    with open(log, "w") as fh:
        proc = subprocess.Popen([webserver, "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    browser = None
    try:
        _wait_for_server(url, proc, log)
        browser = Browser(tmp)
        shots = Path(os.environ.get("DESI_ARD_SCREENSHOTS") or tmp)
        shots.mkdir(parents=True, exist_ok=True)
        yield url, keys, browser, shots
    finally:
        if browser is not None:
            browser.close()
        _stop(proc)


def _png_size(data_uri_markdown: str) -> tuple[int, int]:
    """(width, height) of the PNG inside a Markdown data: URI image, from its IHDR chunk."""
    b64 = data_uri_markdown.split(PNG_DATA, 1)[1].split(")", 1)[0]
    head = base64.b64decode(b64[:64])
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _inline_plots(url: str, asset: str) -> dict[str, str]:
    """Label → Markdown of the data: URI images in the latest materialization of `asset`."""
    q = ('{ assetOrError(assetKey: {path: ["%s"]}) { ... on Asset { assetMaterializations(limit: 1) {'
         ' metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } }' % asset)
    mats = _graphql(url, q)["assetOrError"].get("assetMaterializations") or []
    entries = mats[0]["metadataEntries"] if mats else []
    return {e["label"]: e["mdStr"] for e in entries if PNG_DATA in (e.get("mdStr") or "")}


@needs_chromium
def test_lineage_link_opens_every_layer_expanded(ui):
    from desi_assets.definitions import defs, lineage_path

    url, keys, browser, shots = ui
    assets = sorted(n.key.to_user_string() for n in defs.resolve_asset_graph().asset_nodes if not n.is_external)
    browser.open(url + lineage_path(), GRAPH_WINDOW)
    text = browser.wait_for_text(*assets, f"{len(keys)} partitions")  # full nodes, no collapsed group
    assert "raw_spectra" in text
    shot = browser.screenshot(shots / "ui_lineage_expanded.png")
    assert shot.stat().st_size > 10_000


@needs_chromium
def test_partitions_page_lists_every_coadd(ui):
    url, keys, browser, _ = ui
    browser.open(f"{url}/assets/raw_spectra?view=partitions")
    text = browser.wait_for_text(f"{len(keys)} Partitions", "Materialized (2)", *keys)
    assert f"Missing ({len(keys) - 2})" in text, text[:1500]


@needs_chromium
def test_asset_page_shows_the_inline_plot_from_metadata(ui):
    url, _, browser, shots = ui
    plots = {a: _inline_plots(url, a) for a in PLOTTED_ASSETS}
    asset = next((a for a in PLOTTED_ASSETS if plots[a]), None)
    assert asset, f"no inline PNG (defs.metadata.plot_metadata) in the metadata of {PLOTTED_ASSETS}"
    label, md = next(iter(plots[asset].items()))
    width, height = _png_size(md)

    browser.open(f"{url}/assets/{asset}")
    browser.wait_for_text("[Show Markdown]", label)
    # the metadata table's row of `label`: its value cell holds the "[Show Markdown]" link
    clicked = browser.js("""(() => {
        const row = [...document.querySelectorAll('tr')].find(
            r => r.cells.length && r.cells[0].innerText.trim() === %s);
        const link = row && [...row.querySelectorAll('*')].find(
            e => e.childElementCount === 0 && e.textContent.trim() === '[Show Markdown]');
        if (link) link.click();
        return !!link; })()""" % json.dumps(label))
    assert clicked, f"no [Show Markdown] link in the {label!r} row of {asset}'s metadata table"
    shown = browser.wait_for("""(() => {
        const img = [...document.querySelectorAll('[role=dialog] img')].find(
            i => i.src.startsWith(%s) && i.complete && i.naturalWidth > 0);
        return img && [img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width]; })()"""
                             % json.dumps(PNG_DATA), f"the {label} image in its dialog")
    assert shown[:2] == [width, height]  # the very PNG of the metadata entry, decoded by the browser
    assert shown[2] >= 0.9 * width  # drawn at (about) full size, not clipped to a sliver
    time.sleep(0.5)  # the dialog's opening transition
    shot = browser.screenshot(shots / f"ui_{asset}_{label}.png")
    assert shot.stat().st_size > 10_000
