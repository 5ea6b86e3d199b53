"""Where coadd files come from: one SpectraArchive interface, three Dagster resources.

- ``LocalArchive``: a directory laid out like a DESI release (``healpix/…`` and ``tiles/cumulative/…``).
- ``HttpArchive``: the same tree over HTTP (Apache / ``http.server`` directory indexes), downloaded
  with resume into a local cache; stdlib ``urllib`` only.
- ``MockArchive``: writes the seeded mock survey on first use, then behaves like ``LocalArchive``.

Every entry is keyed by its partition key (``keys.py``): ``{survey}-{program}-{healpix}`` or
``tile-{tileid}-{petal}`` (the latest ``thru{night}`` of each tile petal wins).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import posixpath
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from desi_assets.sources import keys

log = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".lock", ".crdownload")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveEntry:
    """One coadd file in an archive: partition key, release-relative paths (POSIX), size in bytes."""

    key: str
    coadd_relpath: str
    redrock_relpath: str | None = None
    size: int | None = None
    checksum_relpath: str | None = None  # a ``*.sha256sum`` file in the same directory, if any


@dataclass(frozen=True)
class RejectedEntry:
    """A file that looked like a coadd but could not be used, and why."""

    relpath: str
    reason: str


class ArchiveEntryNotFoundError(LookupError):
    """The archive has no coadd file for a partition key."""


class DownloadError(OSError):
    """A download failed or its size does not match what the server announced."""


def _is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


def _looks_like_coadd(name: str) -> bool:
    return "coadd" in name and name.endswith((".fits", ".fits.gz", ".fits.fz"))


class _Catalog:
    """Accumulates candidate files into entries (latest night per tile petal) and rejections."""

    def __init__(self) -> None:
        self.healpix: dict[str, ArchiveEntry] = {}
        self.tiles: dict[str, tuple[int, ArchiveEntry]] = {}
        self.rejected: list[RejectedEntry] = []

    def reject(self, relpath: str, reason: str) -> None:
        log.warning("archive: skipping %s: %s", relpath, reason)
        self.rejected.append(RejectedEntry(relpath, reason))

    def add(self, relpath: str, siblings: set[str], size: int | None) -> None:
        """Consider a file at relpath (POSIX, release-relative); siblings = names in its directory."""
        parts = relpath.split("/")
        name = parts[-1]
        if _is_temp(name) or not _looks_like_coadd(name):
            return
        try:
            key, night = keys.parse_coadd_filename(name)
        except keys.InvalidPartitionKeyError as exc:
            self.reject(relpath, str(exc))
            return
        if not name.startswith("coadd-"):
            return
        rr = keys.redrock_name_for(name)
        rr_rel = "/".join([*parts[:-1], rr]) if rr in siblings else None
        sums = sorted(n for n in siblings if n.endswith(".sha256sum") and not _is_temp(n))
        sum_rel = "/".join([*parts[:-1], sums[0]]) if sums else None
        entry = ArchiveEntry(key.key, relpath, rr_rel, size, sum_rel)
        if key.kind == "healpix":
            want = keys.relpath_for_healpix_key(key.key)
            if relpath != want and not relpath.endswith("/" + want):
                self.reject(relpath, f"file name says {key.key} but its place in the tree is not {want}")
                return
            if key.key in self.healpix:
                self.reject(relpath, f"duplicate of {self.healpix[key.key].coadd_relpath}")
                return
            self.healpix[key.key] = entry
        else:
            want = keys.relpath_for_tile(key.tileid, key.petal, night)
            if relpath != want and not relpath.endswith("/" + want):
                self.reject(relpath, f"file name says tile {key.tileid} night {night} but it is not at {want}")
                return
            prev = self.tiles.get(key.key)
            if prev is None or night > prev[0]:
                self.tiles[key.key] = (night, entry)

    def entries(self) -> list[ArchiveEntry]:
        out = sorted(self.healpix.values(), key=lambda e: e.key)
        out += sorted((e for _, e in self.tiles.values()), key=lambda e: e.key)
        return out


class SpectraArchive(ConfigurableResource):
    """Abstract source of DESI coadd files, listed and fetched by partition key."""

    def list_entries(self) -> list[ArchiveEntry]:
        """All usable coadd entries, sorted by key (rejections via list_rejected())."""
        raise NotImplementedError

    def list_rejected(self) -> list[RejectedEntry]:
        """Files skipped by the last listing, with the reason."""
        return []

    def fetch(self, key: str) -> tuple[Path, Path | None]:
        """Local paths (coadd, redrock or None) of a partition key's files, downloading if needed."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line saying what this archive is."""
        return type(self).__name__

    def why_empty(self) -> str:
        """When listing finds no coadd file: what the archive holds instead and how to point at the data."""
        return ""

    def list_keys(self) -> list[str]:
        """Partition keys of all usable entries."""
        return [e.key for e in self.list_entries()]


# ----------------------------------------------------------------------------- local


class LocalArchive(SpectraArchive):
    """A local DESI release tree: healpix/{survey}/{program}/{group}/{pix}/ and tiles/cumulative/{tile}/{night}/."""

    root: str

    _rejected: list = PrivateAttr(default_factory=list)

    def describe(self) -> str:
        """One line saying what this archive is."""
        return f"local DESI tree at {Path(self.root).resolve()}"

    def why_empty(self) -> str:
        """Says whether root is missing, or which sub-folders are DESI productions to point at instead."""
        root = Path(self.root)
        if not root.is_dir():
            return f"{root} is not a directory"
        prods = find_productions(root)
        if not prods:
            return (f"{root} has no healpix/ or tiles/ folder (a DESI production, spectro/redux/{{specprod}}/, "
                    f"holds them) and no sub-folder that looks like one")
        return (f"{root} has no healpix/ or tiles/ folder itself, but holds {len(prods)} DESI production(s): "
                f"{', '.join(prods)}. Point --archive at one of them, e.g. --archive {root / prods[0]} "
                f"(one production per lakehouse: partition keys such as tile-80613-4 repeat across productions)")

    def _walk(self, sub: str, cat: _Catalog) -> None:
        root = Path(self.root)
        base = root / sub
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            names = set(filenames)
            for fn in sorted(filenames):
                if _is_temp(fn) or not _looks_like_coadd(fn):
                    continue
                full = Path(dirpath) / fn
                rel = f"{rel_dir}/{fn}"
                try:
                    keys.safe_join(root, rel)  # symlinks out of the tree are not followed
                except keys.UnsafePathError as exc:
                    cat.reject(rel, str(exc))
                    continue
                try:
                    size = full.stat().st_size
                except OSError as exc:
                    cat.reject(rel, f"cannot stat: {exc}")
                    continue
                cat.add(rel, names, size)

    def list_entries(self) -> list[ArchiveEntry]:
        """All usable coadd entries, sorted by key (rejections via list_rejected())."""
        cat = _Catalog()
        self._walk("healpix", cat)
        self._walk("tiles", cat)
        self._rejected = list(cat.rejected)
        return cat.entries()

    def list_rejected(self) -> list[RejectedEntry]:
        """Files skipped by listing the tree, with the reason (lists if not yet listed)."""
        self.list_entries()
        return list(self._rejected)

    def entry(self, key: str) -> ArchiveEntry:
        """The entry of one partition key without listing the whole tree."""
        k = keys.parse_key(key)
        root = Path(self.root)
        if k.kind == "healpix":
            rel = keys.relpath_for_healpix_key(k.key)
            path = keys.safe_join(root, rel)
            if not path.is_file():
                raise ArchiveEntryNotFoundError(f"{key}: no {rel} under {root}")
            rr = path.with_name(keys.redrock_name_for(path.name))
            rr_rel = posixpath.join(posixpath.dirname(rel), rr.name) if rr.is_file() else None
            return ArchiveEntry(k.key, rel, rr_rel, path.stat().st_size)
        tile_dir = keys.safe_join(root, f"tiles/cumulative/{k.tileid}")
        best: tuple[int, str] | None = None
        if tile_dir.is_dir():
            for night_dir in tile_dir.iterdir():
                if not night_dir.name.isdigit():
                    continue
                rel = keys.relpath_for_tile(k.tileid, k.petal, int(night_dir.name))
                if keys.safe_join(root, rel).is_file() and (best is None or int(night_dir.name) > best[0]):
                    best = (int(night_dir.name), rel)
        if best is None:
            raise ArchiveEntryNotFoundError(f"{key}: no tiles/cumulative/{k.tileid}/*/coadd-{k.petal}-{k.tileid}-"
                                            f"thru*.fits under {root}")
        cat = _Catalog()
        path = keys.safe_join(root, best[1])
        cat.add(best[1], set(os.listdir(path.parent)), path.stat().st_size)
        return cat.entries()[0]

    def fetch(self, key: str) -> tuple[Path, Path | None]:
        """Local paths (coadd, redrock or None) of a partition key's files."""
        e = self.entry(key)
        root = Path(self.root)
        return keys.safe_join(root, e.coadd_relpath), (
            keys.safe_join(root, e.redrock_relpath) if e.redrock_relpath else None)


def find_productions(root: str | Path, max_depth: int = 3) -> list[str]:
    """Sub-folders of root (POSIX, relative; at most max_depth deep) holding a healpix/ or tiles/ tree."""
    root = Path(root)
    found: list[str] = []
    seen: set[Path] = set()
    level = [root]
    for _ in range(max_depth):
        nxt = []
        for d in level:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for sub in subs:
                real = sub.resolve()
                if real in seen:
                    continue
                seen.add(real)
                if (sub / "healpix").is_dir() or (sub / "tiles").is_dir():
                    found.append(sub.relative_to(root).as_posix())
                else:
                    nxt.append(sub)
        level = nxt
    return sorted(found)


# ----------------------------------------------------------------------------- http


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag.lower() == "a":
            for k, v in attrs:
                if k.lower() == "href" and v:
                    self.hrefs.append(v)


class HttpArchive(SpectraArchive):
    """A DESI release tree over HTTP(S): lists via HTML directory indexes, downloads with resume into cache_dir."""

    base_url: str
    cache_dir: str
    timeout_s: float = 60.0
    max_depth: int = 8
    include: list[str] = ["healpix", "tiles/cumulative"]
    user_agent: str = "desi-ard/0.1 (+urllib)"
    retries: int = 2

    _entries: dict = PrivateAttr(default_factory=dict)
    _rejected: list = PrivateAttr(default_factory=list)

    def describe(self) -> str:
        """One line saying what this archive is."""
        return f"http DESI tree at {self._base()} cached in {Path(self.cache_dir).resolve()}"

    # -- url helpers
    def _base(self) -> str:
        return self.base_url.rstrip("/") + "/"

    def _url(self, relpath: str) -> str:
        rel = relpath.lstrip("/")
        keys.safe_join("/nonexistent-root", rel)  # reject '..', absolute paths
        return urllib.parse.urljoin(self._base(), urllib.parse.quote(rel))

    def _relpath_of(self, url: str) -> str | None:
        """Release-relative path of an absolute url, or None if it is outside base_url (or has a query)."""
        base = urllib.parse.urlsplit(self._base())
        u = urllib.parse.urlsplit(url)
        if (u.scheme, u.netloc) != (base.scheme, base.netloc) or u.query:
            return None
        path = urllib.parse.unquote(u.path)
        if "\x00" in path or any(seg in ("..", ".") for seg in path.split("/")):
            return None
        if not path.startswith(base.path) or path == base.path:
            return None
        return path[len(base.path):]

    def _open(self, url: str, headers: dict | None = None, method: str = "GET"):
        req = urllib.request.Request(url, headers={"User-Agent": self.user_agent, **(headers or {})}, method=method)
        return urllib.request.urlopen(req, timeout=self.timeout_s)  # noqa: S310 - http(s) only, checked

    def _index(self, dir_rel: str) -> list[str]:
        """hrefs of a directory index (absolute urls)."""
        url = self._url(dir_rel.rstrip("/") + "/")
        with self._open(url) as resp:
            body = resp.read().decode("utf-8", "replace")
        p = _LinkParser()
        p.feed(body)
        return [urllib.parse.urljoin(url, h) for h in p.hrefs]

    def _crawl(self, dir_rel: str, depth: int, cat: _Catalog, seen: set[str]) -> None:
        if depth > self.max_depth or dir_rel in seen:
            return
        seen.add(dir_rel)
        try:
            links = self._index(dir_rel)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and depth == 0:
                return  # no such subtree (e.g. no tiles/)
            cat.reject(dir_rel + "/", f"directory index failed: HTTP {exc.code}")
            return
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"cannot list {self._url(dir_rel)}: {exc}") from exc
        files: list[str] = []
        subdirs: list[str] = []
        prefix = dir_rel.rstrip("/") + "/"
        for link in links:
            rel = self._relpath_of(link)
            if rel is None:
                if _looks_like_coadd(posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(link).path))):
                    cat.reject(link, f"link points outside the archive root {self._base()}")
                continue
            if not rel.startswith(prefix) or rel == prefix:
                continue  # parent / sibling / self links
            child = rel[len(prefix):]
            if child.endswith("/"):
                if "/" not in child.rstrip("/") and not child.startswith("."):
                    subdirs.append(rel.rstrip("/"))
            elif "/" not in child:
                files.append(child)
        names = set(files)
        for fn in files:
            cat.add(prefix + fn, names, None)
        for sd in sorted(set(subdirs)):
            self._crawl(sd, depth + 1, cat, seen)

    def list_entries(self) -> list[ArchiveEntry]:
        """All usable coadd entries under include (one HTTP request per directory)."""
        cat = _Catalog()
        seen: set[str] = set()
        t0 = time.perf_counter()
        for sub in self.include:
            self._crawl(sub.strip("/"), 0, cat, seen)
        entries = cat.entries()
        self._entries = {e.key: e for e in entries}
        self._rejected = list(cat.rejected)
        log.info("http archive %s: %d entries, %d rejected, %d directories in %.1fs",
                 self._base(), len(entries), len(cat.rejected), len(seen), time.perf_counter() - t0)
        return entries

    def list_rejected(self) -> list[RejectedEntry]:
        """Links skipped by the last listing, with the reason."""
        if not self._entries and not self._rejected:
            self.list_entries()
        return list(self._rejected)

    def _entry(self, key: str) -> ArchiveEntry:
        k = keys.parse_key(key)
        if k.key in self._entries:
            return self._entries[k.key]
        cat = _Catalog()
        if k.kind == "healpix":
            rel = keys.relpath_for_healpix_key(k.key)
            self._crawl(posixpath.dirname(rel), 0, cat, set())
        else:
            self._crawl(f"tiles/cumulative/{k.tileid}", 0, cat, set())
        for e in cat.entries():
            self._entries[e.key] = e
        if k.key not in self._entries:
            raise ArchiveEntryNotFoundError(f"{key}: not found under {self._base()}")
        return self._entries[k.key]

    def fetch(self, key: str) -> tuple[Path, Path | None]:
        """Download (or reuse from cache) a key's coadd and redrock files; returns local paths."""
        e = self._entry(key)
        sums = self._checksums(e.checksum_relpath) if e.checksum_relpath else {}
        coadd = self.download(e.coadd_relpath, expected_size=e.size,
                              sha256=sums.get(posixpath.basename(e.coadd_relpath)))
        rr = None
        if e.redrock_relpath:
            rr = self.download(e.redrock_relpath, sha256=sums.get(posixpath.basename(e.redrock_relpath)))
        return coadd, rr

    def _checksums(self, relpath: str) -> dict[str, str]:
        """{file name: sha256 hex} from a ``sha256sum``-format file (re-downloaded each call: it is small)."""
        url = self._url(relpath)
        try:
            with self._open(url) as resp:
                text = resp.read(4 << 20).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            log.warning("cannot read checksums %s: %s; downloads not verified", url, exc)
            return {}
        out = {}
        for line in text.splitlines():
            bits = line.strip().split()
            if len(bits) == 2 and len(bits[0]) == 64:
                out[posixpath.basename(bits[1].lstrip("*"))] = bits[0].lower()
        return out

    def download(self, relpath: str, expected_size: int | None = None, sha256: str | None = None) -> Path:
        """Fetch base_url/relpath into cache_dir/relpath; a cached copy is reused only while it matches the server.

        A cached file is checked against a HEAD (Content-Length, ETag, Last-Modified recorded in a
        ``.http.json`` sidecar at download time) and re-fetched if it is truncated or the server's copy
        changed. A ``.part`` is resumed with Range + If-Range (its recorded ETag or Last-Modified), so a
        file that changed on the server restarts instead of being spliced; sizes and an optional sha256
        are checked before the file takes its final name.
        """
        dest = keys.safe_join(self.cache_dir, relpath)
        url = self._url(relpath)
        if dest.is_file():
            stale = self._stale_reason(url, dest, expected_size, sha256)
            if stale is None:
                log.debug("cache hit %s", dest)
                return dest
            log.warning("cached %s is not the server's file (%s); fetching it again", dest, stale)
            dest.unlink(missing_ok=True)
            _meta_path(dest).unlink(missing_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                remote = self._download_once(url, part, expected_size)
                digest = None
                if sha256 is not None:
                    digest = _sha256(part)
                    if digest != sha256.lower():
                        _discard(part)
                        raise DownloadError(f"{url}: checksum mismatch: sha256 {digest}, expected {sha256}")
                os.replace(part, dest)
                _write_meta(dest, {**remote.to_dict(), "size": dest.stat().st_size, "sha256": digest, "url": url})
                _meta_path(part).unlink(missing_ok=True)
                return dest
            except DownloadError as exc:
                last = exc
                if any(m in str(exc) for m in _RETRY_ON) and attempt < self.retries:
                    log.warning("%s (attempt %d), trying again", exc, attempt + 1)
                    continue
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                last = exc
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404):
                    raise DownloadError(f"{url}: HTTP {exc.code}") from exc
                log.warning("download %s failed (attempt %d): %s", url, attempt + 1, exc)
        raise DownloadError(f"{url}: download failed after {self.retries + 1} attempts: {last}") from last

    def _stale_reason(self, url: str, dest: Path, expected_size: int | None, sha256: str | None) -> str | None:
        """Why a cached file cannot be reused (None: it matches the server, or the record when offline)."""
        size = dest.stat().st_size
        stored = _read_meta(dest)
        if expected_size is not None and size != expected_size:
            return f"{size} bytes, listing says {expected_size}"
        remote = self._head(url)
        if remote is None:  # server unreachable or no HEAD: trust only what was verified at download time
            if stored is None or stored.get("size") != size:
                return f"{size} bytes and no record of a complete download; the server cannot be asked"
            log.warning("cannot check %s against the server; using the cached copy recorded as complete", url)
            return None
        if remote.size is None and dest.name.endswith(".fits") and size % _FITS_BLOCK:
            return f"{size} bytes is not a whole number of {_FITS_BLOCK}-byte FITS blocks"
        local = _Remote.from_dict(stored or {}, size=size)
        if not local.same_as(remote):
            return f"local {local.describe()}, server {remote.describe()}"
        if sha256 is not None and (stored or {}).get("sha256") != sha256.lower():
            digest = _sha256(dest)
            if digest != sha256.lower():
                return f"sha256 {digest}, expected {sha256}"
            stored = {**(stored or {}), "sha256": digest}
        if stored is None or not stored.get("etag") and not stored.get("last_modified"):
            _write_meta(dest, {**(stored or {}), **remote.to_dict(), "size": size, "url": url})  # adopt validators
        return None

    def _download_once(self, url: str, part: Path, expected_size: int | None) -> _Remote:
        have = part.stat().st_size if part.exists() else 0
        stored = _Remote.from_dict(_read_meta(part) or {}) if have else None
        if have and stored.validator() is None:
            log.warning("%s: partial download %s has no recorded ETag/Last-Modified; restarting", url, part.name)
            _discard(part)
            have, stored = 0, None
        headers = {"Range": f"bytes={have}-", "If-Range": stored.validator()} if have else {}
        try:
            resp = self._open(url, headers)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # already complete, or .part is bogus
                remote = self._head(url)
                if remote is not None and remote.size == have and stored.same_as(remote):
                    return remote
                _discard(part)
                raise DownloadError(f"{url}: size mismatch: partial file has {have} bytes, server says "
                                    f"{remote.size if remote else None}; partial file discarded") from exc
            raise
        with resp:
            status = getattr(resp, "status", 200)
            remote = _Remote.of(resp.headers)
            if status == 206 and stored is not None:
                total = _total_from_content_range(resp.headers.get("Content-Range"))
                remote = _Remote(total, remote.etag, remote.last_modified)
                if not stored.same_as(remote):  # the server ignored If-Range and the file changed
                    _discard(part)
                    raise DownloadError(f"{url}: changed on the server since the partial download (had "
                                        f"{stored.describe()}, now {remote.describe()}); partial file discarded")
                mode = "ab"
                log.info("resuming %s at byte %d", url, have)
            else:
                if have:
                    log.info("%s: server sent the whole file (changed since the partial download, or no Range "
                             "support); restarting", url)
                total = _int_or_none(resp.headers.get("Content-Length"))
                remote = _Remote(total, remote.etag, remote.last_modified)
                have, mode = 0, "wb"
                _write_meta(part, remote.to_dict())  # validators for a later If-Range
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{url}: size mismatch: listing says {expected_size} bytes, server {total}")
            got = have
            next_log = got + 64 * _CHUNK
            try:
                with open(part, mode) as fh:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        got += len(chunk)
                        if got >= next_log:
                            log.info("%s: %d / %s bytes", url, got, total if total is not None else "?")
                            next_log = got + 64 * _CHUNK
            except http.client.IncompleteRead as exc:
                raise DownloadError(f"{url}: size mismatch: connection closed after {got} of {total} bytes "
                                    f"(kept {part.name} for resume)") from exc
        if total is not None and got != total:
            if got > total:
                _discard(part)
            raise DownloadError(f"{url}: size mismatch: received {got} bytes, server announced {total}")
        log.info("downloaded %s (%d bytes)", url, got)
        return remote

    def _head(self, url: str) -> _Remote | None:
        """Size and validators the server announces for url (None if it cannot be asked)."""
        try:
            with self._open(url, method="HEAD") as resp:
                return _Remote.of(resp.headers)
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return None


#: Download errors worth another attempt (resume or restart).
_RETRY_ON = ("size mismatch", "checksum mismatch", "changed on the server")
_FITS_BLOCK = 2880


@dataclass(frozen=True)
class _Remote:
    """What identifies one version of a remote file: size (bytes), ETag, Last-Modified."""

    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers) -> _Remote:
        return cls(_int_or_none(headers.get("Content-Length")), headers.get("ETag"), headers.get("Last-Modified"))

    @classmethod
    def from_dict(cls, d: dict, size: int | None = None) -> _Remote:
        return cls(size if size is not None else d.get("size"), d.get("etag"), d.get("last_modified"))

    def to_dict(self) -> dict:
        return {"size": self.size, "etag": self.etag, "last_modified": self.last_modified}

    def validator(self) -> str | None:
        """What If-Range may carry: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def same_as(self, other: _Remote) -> bool:
        """False if any of size, ETag, Last-Modified is known on both sides and differs."""
        return all(a is None or b is None or a == b for a, b in (
            (self.size, other.size), (self.etag, other.etag), (self.last_modified, other.last_modified)))

    def describe(self) -> str:
        return f"{self.size} bytes, ETag {self.etag}, Last-Modified {self.last_modified}"


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".http.json")


def _read_meta(path: Path) -> dict | None:
    try:
        d = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _write_meta(path: Path, meta: dict) -> None:
    tmp = _meta_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, _meta_path(path))


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _int_or_none(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _total_from_content_range(v: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not v or "/" not in v:
        return None
    return _int_or_none(v.rsplit("/", 1)[1])


# ----------------------------------------------------------------------------- mock


class MockArchive(SpectraArchive):
    """The seeded mock survey in the DESI data model, written under root on first use, then read like LocalArchive."""

    root: str = "lakehouse/archive"
    n_pixels: int = 12
    seed: int = 42
    spectra_scale: float = 1.0
    anomaly_fraction: float | None = None  # None: the generator's default
    survey: str | None = None  # None: the generator's default ("main")

    def describe(self) -> str:
        """One line saying what this archive is."""
        return (f"mock DESI survey at {Path(self.root).resolve()} (n_pixels={self.n_pixels}, seed={self.seed}, "
                f"spectra_scale={self.spectra_scale})")

    def _local(self) -> LocalArchive:
        return LocalArchive(root=self.root)

    def _has_coadds(self) -> bool:
        base = Path(self.root) / "healpix"
        return base.is_dir() and any(
            fn.startswith("coadd-") and fn.endswith(".fits") for _, _, fns in os.walk(base) for fn in fns)

    def ensure_written(self) -> list[Path]:
        """Write the mock survey if root has no coadd files yet (process-safe); returns files written."""
        if self._has_coadds():
            return []
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        with _file_lock(root / ".mock-write.lock"):
            if self._has_coadds():
                return []
            from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

            extra = {k: v for k, v in (("anomaly_fraction", self.anomaly_fraction), ("survey", self.survey))
                     if v is not None}
            cfg = MockSurveyConfig(n_pixels=self.n_pixels, seed=self.seed, spectra_scale=self.spectra_scale, **extra)
            log.info("writing mock survey into %s (%d pixels, seed %d)", root, self.n_pixels, self.seed)
            return list(write_mock_survey(root, cfg) or [])

    def list_entries(self) -> list[ArchiveEntry]:
        """All coadd entries of the mock survey (writing it first if needed)."""
        self.ensure_written()
        return self._local().list_entries()

    def list_rejected(self) -> list[RejectedEntry]:
        """Files skipped when listing the mock tree."""
        self.ensure_written()
        return self._local().list_rejected()

    def fetch(self, key: str) -> tuple[Path, Path | None]:
        """Local paths (coadd, redrock or None) of a mock partition key's files."""
        self.ensure_written()
        return self._local().fetch(key)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive inter-process lock on path (fcntl where available)."""
    fh = open(path, "a+")  # noqa: SIM115
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        yield
    finally:
        with contextlib.suppress(Exception):
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def copy_entry(archive: SpectraArchive, key: str, dest_root: str | Path) -> tuple[Path, Path | None]:
    """Fetch a key from any archive and copy its files into dest_root with release-relative paths."""
    coadd, rr = archive.fetch(key)
    k = keys.parse_key(key)
    if k.kind == "healpix":
        rel = keys.relpath_for_healpix_key(k.key)
    else:
        night = keys.parse_coadd_filename(coadd.name)[1]
        rel = keys.relpath_for_tile(k.tileid, k.petal, night)
    dst = keys.safe_join(dest_root, rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(coadd, dst)
    rr_dst = None
    if rr is not None:
        rr_dst = dst.with_name(rr.name)
        shutil.copy2(rr, rr_dst)
    return dst, rr_dst
