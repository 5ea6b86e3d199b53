"""Partition keys for coadd files and safe path handling (pure Python, no Dagster).

Key formats
-----------
- healpix coadd: ``{survey}-{program}-{healpix}``, e.g. ``main-dark-10378``
  (survey in SURVEYS, program in PROGRAMS, healpix an nside-64 nested pixel 0..49151);
- tile coadd: ``tile-{tileid}-{petal}``, e.g. ``tile-80613-4`` (petal 0..9).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SURVEYS: tuple[str, ...] = ("cmx", "main", "special", "sv1", "sv2", "sv3")
PROGRAMS: tuple[str, ...] = ("backup", "bright", "dark", "other")
HPX_NSIDE = 64
N_HEALPIX = 12 * HPX_NSIDE * HPX_NSIDE  # 49152
N_PETALS = 10
#: `hpxgroup` of rows that belong to no healpix file (tile coadds, unparseable keys).
TILE_HPXGROUP = -1

_SURVEY_RE = "|".join(SURVEYS)
_PROGRAM_RE = "|".join(PROGRAMS)
_HPX_KEY_RE = re.compile(rf"^(?P<survey>{_SURVEY_RE})-(?P<program>{_PROGRAM_RE})-(?P<healpix>0|[1-9][0-9]{{0,4}})$")
_TILE_KEY_RE = re.compile(r"^tile-(?P<tileid>0|[1-9][0-9]{0,8})-(?P<petal>[0-9])$")

#: ``coadd-{survey}-{program}-{pix}.fits`` (also redrock-…).
HPX_FILE_RE = re.compile(
    rf"^(?P<prefix>coadd|redrock)-(?P<survey>{_SURVEY_RE})-(?P<program>{_PROGRAM_RE})-(?P<healpix>[0-9]+)\.fits$"
)
#: ``coadd-{petal}-{tile}-thru{night}.fits`` (also redrock-…).
TILE_FILE_RE = re.compile(
    r"^(?P<prefix>coadd|redrock)-(?P<petal>[0-9])-(?P<tileid>[0-9]+)-thru(?P<night>[0-9]{8})\.fits$"
)


class InvalidPartitionKeyError(ValueError):
    """A string that is not a valid coadd partition key (or a filename that maps to none)."""


class UnsafePathError(ValueError):
    """A relative path that would resolve outside its root directory."""


@dataclass(frozen=True)
class CoaddKey:
    """A parsed partition key; healpix keys fill survey/program/healpix, tile keys tileid/petal."""

    kind: str  # "healpix" | "tile"
    survey: str | None = None
    program: str | None = None
    healpix: int | None = None
    tileid: int | None = None
    petal: int | None = None

    @property
    def key(self) -> str:
        """The canonical partition-key string."""
        if self.kind == "healpix":
            return f"{self.survey}-{self.program}-{self.healpix}"
        return f"tile-{self.tileid}-{self.petal}"

    @property
    def hpxgroup(self) -> int | None:
        """healpix // 100 for healpix keys, None for tile keys."""
        return None if self.healpix is None else hpxgroup(self.healpix)

    def __str__(self) -> str:
        return self.key


def hpxgroup(healpix: int) -> int:
    """DESI pixel group of an nside-64 nested pixel (healpix // 100)."""
    return int(healpix) // 100


def key_hpxgroup(key: str | CoaddKey) -> int:
    """Physical partition (`hpxgroup`) of every row of a key: file healpix // 100; TILE_HPXGROUP for tiles or junk."""
    try:
        k = key if isinstance(key, CoaddKey) else parse_key(key)
    except InvalidPartitionKeyError:
        return TILE_HPXGROUP
    return TILE_HPXGROUP if k.healpix is None else hpxgroup(k.healpix)


def healpix_key(survey: str, program: str, healpix: int) -> str:
    """Build (and validate) a healpix partition key."""
    return parse_key(f"{survey}-{program}-{int(healpix)}").key


def tile_key(tileid: int, petal: int) -> str:
    """Build (and validate) a tile partition key."""
    return parse_key(f"tile-{int(tileid)}-{int(petal)}").key


def parse_key(key: str) -> CoaddKey:
    """Parse a partition key string into a CoaddKey; raises InvalidPartitionKeyError."""
    if not isinstance(key, str):
        raise InvalidPartitionKeyError(f"partition key must be a string, got {type(key).__name__}")
    if not key.strip():
        raise InvalidPartitionKeyError(_invalid(key, "the key is empty"))
    if "/" in key or "\\" in key or ".." in key:
        raise InvalidPartitionKeyError(_invalid(key, "keys never hold path separators or '..'"))
    m = _HPX_KEY_RE.fullmatch(key)
    if m:
        pix = int(m["healpix"])
        if pix >= N_HEALPIX:
            raise InvalidPartitionKeyError(
                f"invalid partition key {key!r}: healpix {pix} outside 0..{N_HEALPIX - 1} (nside {HPX_NSIDE})")
        return CoaddKey("healpix", survey=m["survey"], program=m["program"], healpix=pix)
    m = _TILE_KEY_RE.fullmatch(key)
    if m:
        return CoaddKey("tile", tileid=int(m["tileid"]), petal=int(m["petal"]))
    raise InvalidPartitionKeyError(_invalid(key))


def _invalid(key: str, why: str = "") -> str:
    return (f"invalid partition key {key!r}: {why + '; ' if why else ''}expected '{{survey}}-{{program}}-{{healpix}}' "
            f"with survey in {SURVEYS}, program in {PROGRAMS}, healpix 0..{N_HEALPIX - 1}, or "
            f"'tile-{{tileid}}-{{petal}}' with petal 0..9")


def is_valid_key(key: str) -> bool:
    """True if key parses as a partition key."""
    try:
        parse_key(key)
    except InvalidPartitionKeyError:
        return False
    return True


def parse_coadd_filename(name: str) -> tuple[CoaddKey, int | None]:
    """(key, night or None) for a coadd/redrock file name; raises InvalidPartitionKeyError."""
    base = os.path.basename(str(name))
    m = HPX_FILE_RE.fullmatch(base)
    if m:
        return parse_key(f"{m['survey']}-{m['program']}-{int(m['healpix'])}"), None
    m = TILE_FILE_RE.fullmatch(base)
    if m:
        return parse_key(f"tile-{int(m['tileid'])}-{int(m['petal'])}"), int(m["night"])
    raise InvalidPartitionKeyError(
        f"{base!r} is not a DESI coadd file name ('coadd-{{survey}}-{{program}}-{{healpix}}.fits' or "
        f"'coadd-{{petal}}-{{tile}}-thru{{night}}.fits')")


def key_for_coadd_path(path: str | Path) -> str:
    """Partition key of a coadd (or redrock) file from its file name; raises InvalidPartitionKeyError."""
    return parse_coadd_filename(str(path))[0].key


def redrock_name_for(coadd_name: str) -> str:
    """The sibling redrock file name of a coadd file name (coadd-… → redrock-…)."""
    base = os.path.basename(str(coadd_name))
    if not base.startswith("coadd-"):
        raise InvalidPartitionKeyError(f"{base!r} is not a coadd file name")
    return "redrock-" + base[len("coadd-"):]


def relpath_for_healpix_key(key: str) -> str:
    """Release-tree relative path of a healpix key's coadd file (POSIX separators)."""
    k = parse_key(key)
    if k.kind != "healpix":
        raise InvalidPartitionKeyError(f"{key!r} is a tile key; its path needs the night (use relpath_for_tile)")
    pix = k.healpix
    return f"healpix/{k.survey}/{k.program}/{hpxgroup(pix)}/{pix}/coadd-{k.survey}-{k.program}-{pix}.fits"


def relpath_for_tile(tileid: int, petal: int, night: int) -> str:
    """Release-tree relative path of a cumulative tile coadd (POSIX separators)."""
    return f"tiles/cumulative/{int(tileid)}/{int(night)}/coadd-{int(petal)}-{int(tileid)}-thru{int(night)}.fits"


def safe_join(root: str | Path, relpath: str | Path) -> Path:
    """root/relpath resolved; raises UnsafePathError if it is absolute or escapes root (.., symlinks)."""
    rel = str(relpath)
    if not rel or "\x00" in rel:
        raise UnsafePathError(f"empty or NUL-containing relative path {relpath!r}")
    rel_posix = rel.replace("\\", "/")
    if rel_posix.startswith("/") or os.path.isabs(rel) or re.match(r"^[A-Za-z]:", rel_posix):
        raise UnsafePathError(f"absolute path {relpath!r} not allowed under {str(root)!r}")
    if any(part == ".." for part in rel_posix.split("/")):
        raise UnsafePathError(f"path {relpath!r} contains '..' and may escape {str(root)!r}")
    root_resolved = Path(root).resolve()
    target = (root_resolved / rel_posix).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(f"path {relpath!r} resolves to {str(target)!r}, outside root {str(root_resolved)!r}")
    return target
