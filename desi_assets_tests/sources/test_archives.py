"""Tests for desi_assets.sources.archives: local tree, loopback HTTP archive, mock archive."""

from __future__ import annotations

import email.utils
import http.server
import json
import os
import sys
import threading
import types
from contextlib import contextmanager
from pathlib import Path

import pytest

from desi_assets.sources.archives import (
    ArchiveEntry,
    ArchiveEntryNotFoundError,
    DownloadError,
    HttpArchive,
    LocalArchive,
    MockArchive,
    SpectraArchive,
)
from desi_assets.sources.keys import InvalidPartitionKeyError, UnsafePathError

REAL = Path("/work/shared/data/desi-real")
_here = Path(__file__).resolve().parents[3] / "shared" / "data" / "desi-real"
if _here.is_dir():
    REAL = _here


def _touch(root: Path, rel: str, content: bytes = b"x") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return p


@pytest.fixture
def tree(tmp_path) -> Path:
    """A small release-like tree of placeholder files (listing needs no valid FITS)."""
    root = tmp_path / "release"
    _touch(root, "healpix/main/dark/103/10378/coadd-main-dark-10378.fits", b"a" * 1000)
    _touch(root, "healpix/main/dark/103/10378/redrock-main-dark-10378.fits", b"r" * 100)
    _touch(root, "healpix/main/dark/103/10378/spectra-main-dark-10378.fits")
    _touch(root, "healpix/sv3/bright/0/7/coadd-sv3-bright-7.fits", b"b" * 10)
    _touch(root, "healpix/main/dark/103/10379/coadd-main-dark-10379.fits.tmp")  # temp: ignored
    _touch(root, "healpix/main/dark/103/10379/.coadd-main-dark-10379.fits")  # hidden: ignored
    _touch(root, "healpix/main/dark/1/10380/coadd-main-dark-10380.fits")  # wrong group dir: rejected
    _touch(root, "healpix/main/dark/103/10381/coadd-main-grey-10381.fits")  # bad program: rejected
    _touch(root, "tiles/cumulative/80613/20210301/coadd-4-80613-thru20210301.fits", b"old")
    _touch(root, "tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits", b"new!")
    _touch(root, "tiles/cumulative/80613/20210324/redrock-4-80613-thru20210324.fits", b"rr")
    _touch(root, "tiles/cumulative/80613/20210301/coadd-5-80613-thru20210301.fits", b"p5")
    _touch(root, "tiles/80605/test_coadd.fits")  # everest-style odd name: rejected, no crash
    return root


# ----------------------------------------------------------------------------- local


def test_local_list(tree):
    a = LocalArchive(root=str(tree))
    entries = a.list_entries()
    assert [e.key for e in entries] == ["main-dark-10378", "sv3-bright-7", "tile-80613-4", "tile-80613-5"]
    e = {x.key: x for x in entries}
    assert e["main-dark-10378"] == ArchiveEntry(
        "main-dark-10378", "healpix/main/dark/103/10378/coadd-main-dark-10378.fits",
        "healpix/main/dark/103/10378/redrock-main-dark-10378.fits", 1000)
    assert e["sv3-bright-7"].redrock_relpath is None and e["sv3-bright-7"].size == 10
    assert e["tile-80613-4"].coadd_relpath.endswith("thru20210324.fits")  # latest night wins
    assert e["tile-80613-4"].redrock_relpath.endswith("redrock-4-80613-thru20210324.fits")
    rejected = {r.relpath: r.reason for r in a.list_rejected()}
    assert set(rejected) == {
        "healpix/main/dark/1/10380/coadd-main-dark-10380.fits",
        "healpix/main/dark/103/10381/coadd-main-grey-10381.fits",
        "tiles/80605/test_coadd.fits",
    }
    assert "not a DESI coadd file name" in rejected["tiles/80605/test_coadd.fits"]
    assert "healpix/main/dark/103/10380" in rejected["healpix/main/dark/1/10380/coadd-main-dark-10380.fits"]
    assert a.list_keys() == [x.key for x in entries]
    assert "local" in a.describe() and str(tree.resolve()) in a.describe()


def test_local_fetch(tree):
    a = LocalArchive(root=str(tree))
    coadd, rr = a.fetch("main-dark-10378")
    assert coadd.read_bytes() == b"a" * 1000 and rr.read_bytes() == b"r" * 100
    coadd, rr = a.fetch("sv3-bright-7")
    assert rr is None and coadd.is_file()
    coadd, rr = a.fetch("tile-80613-4")
    assert coadd.read_bytes() == b"new!" and rr.name == "redrock-4-80613-thru20210324.fits"
    # fetch agrees with the listing for every key
    for e in a.list_entries():
        assert a.fetch(e.key)[0] == (tree / e.coadd_relpath).resolve()
    with pytest.raises(ArchiveEntryNotFoundError):
        a.fetch("main-dark-1")
    with pytest.raises(ArchiveEntryNotFoundError):
        a.fetch("tile-80613-7")
    for bad in ("../../etc/passwd", "main-dark-10378/../../x", "healpix/main/dark/103/10378"):
        with pytest.raises(InvalidPartitionKeyError):
            a.fetch(bad)


def test_local_symlink_out_of_tree_rejected(tree, tmp_path):
    outside = _touch(tmp_path, "elsewhere/coadd-main-dark-5.fits")
    d = tree / "healpix/main/dark/0/5"
    d.mkdir(parents=True)
    os.symlink(outside, d / "coadd-main-dark-5.fits")
    a = LocalArchive(root=str(tree))
    assert "main-dark-5" not in a.list_keys()
    assert any("outside root" in r.reason for r in a.list_rejected())
    with pytest.raises(UnsafePathError):
        a.fetch("main-dark-5")


def test_local_empty_and_missing_root(tmp_path):
    assert LocalArchive(root=str(tmp_path / "nope")).list_entries() == []
    assert LocalArchive(root=str(tmp_path)).list_entries() == []


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/desi-real not present")
@pytest.mark.parametrize("specprod,keys_,rejected", [
    ("iron", ["tile-80613-4"], 0),
    ("loa", ["special-dark-27247"], 0),
    ("fuji", ["sv3-dark-26065", "sv3-dark-9144", "tile-169-5", "tile-80693-1", "tile-80693-2"], 0),
    ("everest", [], 1),
])
def test_local_real_tree(specprod, keys_, rejected):
    a = LocalArchive(root=str(REAL / specprod))
    assert a.list_keys() == keys_
    assert len(a.list_rejected()) == rejected
    for k in keys_:
        coadd, rr = a.fetch(k)
        assert coadd.is_file()
        assert (rr is not None) == (specprod in ("iron", "loa"))


def test_archive_is_a_dagster_resource(tree):
    import dagster as dg

    @dg.asset
    def listed(archive: SpectraArchive) -> list[str]:
        return archive.list_keys()

    with dg.instance_for_test() as inst:  # its own instance: no state left by an earlier test's instance
        res = dg.materialize([listed], resources={"archive": LocalArchive(root=str(tree))}, instance=inst)
    assert res.success
    assert res.output_for_node("listed")[0] == "main-dark-10378"


# ----------------------------------------------------------------------------- http


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files + directory indexes, with Range support and switchable faults."""

    faults: dict = {}
    requests: list = []

    def log_message(self, *args):  # quiet
        pass

    def _validators(self, path: str) -> None:
        """ETag (size + mtime, like Apache) and Last-Modified, unless the 'no_validators' fault is set."""
        if self.faults.get("no_validators"):
            return
        st = os.stat(path)
        self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))

    def _if_range_ok(self, path: str) -> bool:
        """RFC 9110 If-Range: the range applies only if the validator still names the current file."""
        want = self.headers.get("If-Range")
        if want is None or self.faults.get("ignore_if_range") or self.faults.get("no_validators"):
            return True
        st = os.stat(path)
        return want in (f'"{st.st_size:x}-{st.st_mtime_ns:x}"', email.utils.formatdate(st.st_mtime, usegmt=True))

    def do_GET(self):
        self.requests.append((self.command, self.path, self.headers.get("Range")))
        self.if_ranges.append(self.headers.get("If-Range"))
        extra = self.faults.get("extra_index_links")
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            if extra and self.path.rstrip("/").endswith("/healpix/main/dark/103/10378"):
                body = ("<html><body>" + "".join(f'<a href="{h}">{h}</a>' for h in extra)
                        + "".join(f'<a href="{n}">{n}</a>' for n in sorted(os.listdir(path)))
                        + "</body></html>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            return super().do_GET()
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = Path(path).read_bytes()
        lie = self.faults.get("lie_length", 0)
        rng = self.headers.get("Range")
        start = 0
        if rng and not self.faults.get("ignore_range") and self._if_range_ok(path):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data) + lie:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data) + lie}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) + lie - 1}/{len(data) + lie}")
        else:
            self.send_response(200)
        body = data[start:]
        cut = self.faults.get("cut_after")
        self._validators(path)
        self.send_header("Content-Length", str(len(body) + lie))
        self.end_headers()
        if cut is not None and start == 0:
            self.wfile.write(body[:cut])
            self.close_connection = True
            return
        self.wfile.write(body)
        if lie:
            self.close_connection = True

    def do_HEAD(self):
        self.requests.append((self.command, self.path, None))
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            self.send_response(200)
            self._validators(path)
            self.send_header("Content-Length", str(os.path.getsize(path) + self.faults.get("lie_length", 0)))
            self.end_headers()
            return
        return super().do_HEAD()


@contextmanager
def serve(directory: Path):
    """ThreadingHTTPServer on 127.0.0.1:0 serving directory; yields base url; shuts down on exit."""
    handler = type("H", (_Handler,), {"faults": {}, "requests": [], "if_ranges": []})

    def make(*args, **kw):
        return handler(*args, directory=str(directory), **kw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


@pytest.fixture
def site(tree, tmp_path):
    """The tree served under /public/dr1/spectro/redux/iron/ (a base path, like the real site)."""
    www = tmp_path / "www"
    (www / "public/dr1/spectro/redux").mkdir(parents=True)
    os.symlink(tree, www / "public/dr1/spectro/redux/iron")
    _touch(www, "public/dr1/spectro/redux/secret-coadd-main-dark-1.fits")  # outside the base url
    with serve(www) as (url, handler):
        yield url + "/public/dr1/spectro/redux/iron", handler


def test_http_list(site, tmp_path):
    base, handler = site
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10)
    entries = a.list_entries()
    local = LocalArchive(root=str(Path(a.cache_dir).parent / "release")).list_entries()
    assert [e.key for e in entries] == [e.key for e in local]
    assert [(e.coadd_relpath, e.redrock_relpath) for e in entries] == \
        [(e.coadd_relpath, e.redrock_relpath) for e in local]
    assert {r.relpath for r in a.list_rejected()} >= {
        "healpix/main/dark/1/10380/coadd-main-dark-10380.fits",
        "healpix/main/dark/103/10381/coadd-main-grey-10381.fits",
    }
    assert all(m in ("GET", "HEAD") for m, _, _ in handler.requests)
    assert base in a.describe()


def test_http_fetch_and_cache_hit(site, tmp_path):
    base, handler = site
    cache = tmp_path / "cache"
    a = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    coadd, rr = a.fetch("main-dark-10378")  # without a prior listing
    assert coadd == (cache / "healpix/main/dark/103/10378/coadd-main-dark-10378.fits").resolve()
    assert coadd.read_bytes() == b"a" * 1000 and rr.read_bytes() == b"r" * 100
    assert not list(cache.rglob("*.part"))
    n = len(handler.requests)
    a2 = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    a2.list_entries()
    n_list = len(handler.requests)
    coadd2, rr2 = a2.fetch("main-dark-10378")
    assert (coadd2, rr2) == (coadd, rr)
    assert n_list > n
    # cache hit: the fetch only asked the server (HEAD) whether the cached files are still its files
    assert [m for m, _, _ in handler.requests[n_list:]] == ["HEAD", "HEAD"]
    # tile key: latest night
    coadd, rr = a.fetch("tile-80613-4")
    assert coadd.read_bytes() == b"new!" and rr is not None
    c, r = a.fetch("sv3-bright-7")
    assert r is None and c.read_bytes() == b"b" * 10
    with pytest.raises(ArchiveEntryNotFoundError):
        a.fetch("main-dark-42")


def _etag(path: Path) -> str:
    st = path.stat()
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def test_http_resume_from_part(site, tree, tmp_path):
    """A .part recorded with the server's ETag resumes with Range + If-Range; one without a record restarts."""
    base, handler = site
    cache = tmp_path / "cache"
    rel = "healpix/main/dark/103/10378/coadd-main-dark-10378.fits"
    part = cache / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"a" * 400)
    (cache / (rel + ".part.http.json")).write_text(json.dumps({"size": 1000, "etag": _etag(tree / rel)}))
    a = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    path = a.download(rel)
    assert path.read_bytes() == b"a" * 1000 and not part.exists()
    gets = [r for r in handler.requests if r[1].endswith("coadd-main-dark-10378.fits")]
    assert gets == [("GET", "/public/dr1/spectro/redux/iron/" + rel, "bytes=400-")]
    assert handler.if_ranges == [_etag(tree / rel)]
    assert not (cache / (rel + ".part.http.json")).exists()
    assert json.loads((cache / (rel + ".http.json")).read_text())["etag"] == _etag(tree / rel)
    # a bare .part (no record of which version it holds) is not trusted: restart from byte 0
    rel2 = "healpix/sv3/bright/0/7/coadd-sv3-bright-7.fits"
    (cache / rel2).parent.mkdir(parents=True)
    (cache / (rel2 + ".part")).write_bytes(b"b" * 4)
    assert a.download(rel2).read_bytes() == b"b" * 10
    assert [r[2] for r in handler.requests if r[1].endswith("coadd-sv3-bright-7.fits")] == [None]


def _change_on_server(path: Path, content: bytes) -> None:
    """Replace a served file (same size or not) and move its mtime, so its ETag and Last-Modified change."""
    st = path.stat()
    path.write_bytes(content)
    os.utime(path, (st.st_atime + 10, st.st_mtime + 10))


@pytest.mark.parametrize("server_honours_if_range", [True, False])
def test_http_partial_of_an_older_version_is_not_spliced(site, tree, tmp_path, server_honours_if_range):
    """Issue 10 #3: a .part of v1, then the file changes on the server: the result is exactly v2, never v1+v2."""
    base, handler = site
    rel = "healpix/main/dark/103/10378/coadd-main-dark-10378.fits"
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10, retries=0)
    handler.faults["cut_after"] = 400
    with pytest.raises(DownloadError, match="size mismatch"):
        a.download(rel)
    part = tmp_path / "cache" / (rel + ".part")
    assert part.read_bytes() == b"a" * 400  # v1's first 400 bytes, kept for resume
    v2 = b"B" * 500 + b"b" * 500  # same size: only the validators tell the versions apart
    _change_on_server(tree / rel, v2)
    handler.faults.clear()
    handler.faults["ignore_if_range"] = not server_honours_if_range
    handler.requests.clear()
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10, retries=1)
    got = a.download(rel).read_bytes()
    assert got == v2 and got != b"a" * 400 + v2[400:]
    ranges = [r[2] for r in handler.requests if r[0] == "GET"]
    # honoured: the If-Range GET comes back 200 (whole v2); ignored: the 206 names a new ETag, so restart
    assert ranges == (["bytes=400-"] if server_honours_if_range else ["bytes=400-", None])
    assert json.loads((tmp_path / "cache" / (rel + ".http.json")).read_text())["etag"] == _etag(tree / rel)


def test_http_truncated_or_changed_cache_is_fetched_again(site, tree, tmp_path):
    """Issue 10 #3: a cached file is checked against the server (HEAD) before it is reused."""
    base, handler = site
    rel = "healpix/main/dark/103/10378/coadd-main-dark-10378.fits"
    cache = tmp_path / "cache"
    a = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    cached = a.download(rel)
    assert cached.read_bytes() == b"a" * 1000
    meta = json.loads((cache / (rel + ".http.json")).read_text())
    assert meta["size"] == 1000 and meta["etag"] == _etag(tree / rel) and meta["last_modified"]

    def gets() -> int:
        return sum(1 for m, p, _ in handler.requests if m == "GET" and p.endswith(rel))

    n = gets()
    assert a.download(rel) == cached and gets() == n  # intact: HEAD only
    with open(cached, "r+b") as fh:  # truncated in the cache (a killed copy, a full disk)
        fh.truncate(600)
    assert a.download(rel).read_bytes() == b"a" * 1000 and gets() == n + 1
    # a cache written before sidecars existed, truncated: the server's Content-Length catches it
    (cache / (rel + ".http.json")).unlink()
    with open(cached, "r+b") as fh:
        fh.truncate(10)
    assert a.download(rel).read_bytes() == b"a" * 1000 and gets() == n + 2
    # same size, new version on the server: the ETag catches it
    _change_on_server(tree / rel, b"c" * 1000)
    assert a.download(rel).read_bytes() == b"c" * 1000 and gets() == n + 3
    # server unreachable: the copy recorded as complete is reused, a truncated one is refused
    offline = HttpArchive(base_url="http://127.0.0.1:9/public/dr1/spectro/redux/iron", cache_dir=str(cache),
                          timeout_s=2, retries=0)
    assert offline.download(rel).read_bytes() == b"c" * 1000
    with open(cached, "r+b") as fh:
        fh.truncate(500)
    with pytest.raises(DownloadError):
        offline.download(rel)


def test_http_resume_after_dropped_connection(site, tmp_path):
    base, handler = site
    handler.faults["cut_after"] = 300
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10, retries=1)
    path = a.download("healpix/main/dark/103/10378/coadd-main-dark-10378.fits")
    assert path.read_bytes() == b"a" * 1000
    ranges = [r[2] for r in handler.requests if r[1].endswith("coadd-main-dark-10378.fits")]
    assert ranges == [None, "bytes=300-"]


def test_http_server_ignores_range(site, tmp_path):
    base, handler = site
    handler.faults["ignore_range"] = True
    cache = tmp_path / "cache"
    rel = "healpix/sv3/bright/0/7/coadd-sv3-bright-7.fits"
    (cache / rel).parent.mkdir(parents=True)
    (cache / (rel + ".part")).write_bytes(b"zzzz")  # stale garbage must not be kept
    a = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    assert a.download(rel).read_bytes() == b"b" * 10


def test_http_size_mismatch_is_clear_error(site, tmp_path):
    base, handler = site
    handler.faults["lie_length"] = 50
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10, retries=1)
    with pytest.raises(DownloadError, match="size mismatch") as ei:
        a.download("healpix/sv3/bright/0/7/coadd-sv3-bright-7.fits")
    assert "coadd-sv3-bright-7.fits" in str(ei.value)
    assert not (tmp_path / "cache/healpix/sv3/bright/0/7/coadd-sv3-bright-7.fits").exists()


def test_http_traversal_rejected(site, tmp_path):
    base, handler = site
    handler.faults["extra_index_links"] = [
        "../../../../secret-coadd-main-dark-1.fits",  # resolves outside the base url
        "/public/dr1/spectro/redux/secret-coadd-main-dark-1.fits",
        "http://evil.example/coadd-main-dark-10378.fits",
        "..%2F..%2F..%2F..%2Fcoadd-main-dark-2.fits",
        "?C=N;O=D",
    ]
    cache = tmp_path / "cache"
    a = HttpArchive(base_url=base, cache_dir=str(cache), timeout_s=10)
    keys_ = a.list_keys()
    assert keys_ == ["main-dark-10378", "sv3-bright-7", "tile-80613-4", "tile-80613-5"]
    reasons = " ".join(r.reason for r in a.list_rejected())
    assert "outside the archive root" in reasons
    assert not any("evil" in r[1] or "secret" in r[1] for r in handler.requests)
    for rel in ("../../x.fits", "/etc/passwd", "healpix/../../../x"):
        with pytest.raises(UnsafePathError):
            a.download(rel)
    with pytest.raises(InvalidPartitionKeyError):
        a.fetch("../main-dark-10378")
    assert not list(tmp_path.glob("x.fits"))


def test_http_unreachable(tmp_path):
    a = HttpArchive(base_url="http://127.0.0.1:9", cache_dir=str(tmp_path), timeout_s=2)
    with pytest.raises(DownloadError, match="cannot list"):
        a.list_entries()


# ----------------------------------------------------------------------------- mock


@pytest.fixture
def fake_mock_module(monkeypatch):
    """Stand-in for desi_assets.sources.mock so MockArchive is tested without the real generator."""
    calls = []

    class MockSurveyConfig:
        def __init__(self, n_pixels=12, seed=42, spectra_scale=1.0, **kw):
            self.n_pixels, self.seed, self.spectra_scale = n_pixels, seed, spectra_scale

    def write_mock_survey(out_dir, config, progress=None):
        calls.append((Path(out_dir), config.n_pixels, config.seed, config.spectra_scale))
        out = []
        for pix in range(100, 100 + config.n_pixels):
            out.append(_touch(Path(out_dir), f"healpix/main/dark/{pix // 100}/{pix}/coadd-main-dark-{pix}.fits"))
            _touch(Path(out_dir), f"healpix/main/dark/{pix // 100}/{pix}/redrock-main-dark-{pix}.fits")
        return out

    mod = types.ModuleType("desi_assets.sources.mock")
    mod.MockSurveyConfig = MockSurveyConfig
    mod.write_mock_survey = write_mock_survey
    monkeypatch.setitem(sys.modules, "desi_assets.sources.mock", mod)
    return calls


def test_mock_archive_writes_once(tmp_path, fake_mock_module):
    root = tmp_path / "archive"
    a = MockArchive(root=str(root), n_pixels=3, seed=7, spectra_scale=0.5)
    assert a.list_keys() == ["main-dark-100", "main-dark-101", "main-dark-102"]
    assert fake_mock_module == [(root, 3, 7, 0.5)]
    coadd, rr = a.fetch("main-dark-101")
    assert coadd.is_file() and rr.is_file()
    MockArchive(root=str(root), n_pixels=3).list_entries()
    assert len(fake_mock_module) == 1  # not rewritten
    assert "mock" in a.describe()


def test_mock_archive_real_generator(tmp_path):
    mock = pytest.importorskip("desi_assets.sources.mock")
    if not hasattr(mock, "write_mock_survey"):
        pytest.skip("mock generator not available yet")
    a = MockArchive(root=str(tmp_path / "archive"), n_pixels=2, seed=1, spectra_scale=0.05)
    entries = a.list_entries()
    assert len(entries) >= 1
    from desi_assets.sources.reader import read_coadd

    coadd, rr = a.fetch(entries[0].key)
    c = read_coadd(coadd, redrock_path=rr)
    assert c.coadd_key == entries[0].key and c.nspec >= 1


def test_http_checksum_verified(site, tree, tmp_path):
    import hashlib

    base, handler = site
    d = tree / "healpix/main/dark/103/10378"
    good = hashlib.sha256(b"a" * 1000).hexdigest()
    (d / "main-dark-10378.sha256sum").write_text(
        f"{good}  coadd-main-dark-10378.fits\n{'0' * 64}  redrock-main-dark-10378.fits\n")
    a = HttpArchive(base_url=base, cache_dir=str(tmp_path / "cache"), timeout_s=10, retries=0)
    e = {x.key: x for x in a.list_entries()}["main-dark-10378"]
    assert e.checksum_relpath == "healpix/main/dark/103/10378/main-dark-10378.sha256sum"
    with pytest.raises(DownloadError, match="checksum mismatch") as ei:
        a.fetch("main-dark-10378")  # coadd verifies; redrock's listed sum is wrong
    assert "redrock-main-dark-10378.fits" in str(ei.value)
    assert (tmp_path / "cache/healpix/main/dark/103/10378/coadd-main-dark-10378.fits").read_bytes() == b"a" * 1000
    assert not (tmp_path / "cache/healpix/main/dark/103/10378/redrock-main-dark-10378.fits").exists()
    (d / "main-dark-10378.sha256sum").write_text(
        f"{good}  coadd-main-dark-10378.fits\n{hashlib.sha256(b'r' * 100).hexdigest()}  "
        "redrock-main-dark-10378.fits\n")
    coadd, rr = a.fetch("main-dark-10378")
    assert rr.read_bytes() == b"r" * 100
