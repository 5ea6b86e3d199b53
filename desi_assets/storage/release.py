"""Named releases: the Delta version of every table pinned in a manifest, which time travel and maintenance honour.

A manifest lives at {lakehouse artifacts}/releases/{name}.json. Vacuum keeps every pinned version's files
(`pinned_versions` -> DeltaTable.vacuum(keep_versions=...)), and expired-log cleanup is switched off on pinned
tables, so a release reads identically after compaction and vacuum.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from desi_assets.storage import catalog as catalog_mod
from desi_assets.storage.tables import REGISTRY

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Table property that stops delta-rs deleting old commit files (which time travel to a pinned version needs).
NO_LOG_CLEANUP = {"delta.enableExpiredLogCleanup": "false"}


class ReleaseError(ValueError):
    """A release name is invalid or unknown."""


def releases_dir(lakehouse) -> Path:
    """Directory holding the release manifests."""
    return lakehouse.artifact_dir("releases")


def manifest_path(lakehouse, name: str) -> Path:
    """Path of release `name`'s manifest (the name is validated)."""
    if not _NAME.fullmatch(name or ""):
        raise ReleaseError(f"invalid release name {name!r}: use letters, digits, '.', '_' or '-' (e.g. dr1-v1)")
    return releases_dir(lakehouse) / f"{name}.json"


def list_releases(lakehouse) -> list[str]:
    """Names of the releases made in this lakehouse."""
    return sorted(p.stem for p in releases_dir(lakehouse).glob("*.json"))


def load_manifest(lakehouse, name: str) -> dict:
    """The manifest of release `name`; a ReleaseError naming the known releases if there is none."""
    path = manifest_path(lakehouse, name)
    if not path.exists():
        raise ReleaseError(f"no release {name!r} in {path.parent}; known: {list_releases(lakehouse) or 'none'}")
    return json.loads(path.read_text())


def code_version() -> str:
    """Package version plus the git commit of the source tree when available."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("desi-ard")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def model_versions(lakehouse) -> dict[str, str]:
    """Model pointer name -> current version (anomaly model, embedding model, ...)."""
    out = {}
    for p in sorted(lakehouse.artifact_dir("models").glob("*.json")):
        try:
            out[p.stem] = str(json.loads(p.read_text()).get("version"))
        except (OSError, ValueError):
            continue
    return out


def catalog_gate_results(lakehouse, limits: catalog_mod.GateLimits) -> dict:
    """The catalog gates over the whole current catalog (row count against all ingested targets)."""
    if not lakehouse.exists("catalog"):
        return {"passed": False, "gates": {}, "reason": "no catalog table"}
    rows = lakehouse.read("catalog")
    outcomes = catalog_mod.evaluate_gates(rows, lakehouse.row_count("targets"), limits)
    return {"passed": all(o.passed for o in outcomes),
            "gates": {o.gate: {"passed": o.passed, "failures": o.failures} for o in outcomes}}


def make_release(lakehouse, name: str, limits: catalog_mod.GateLimits | None = None, replace: bool = False,
                 run_checks: bool = True) -> tuple[dict, bool]:
    """Pin every existing table's current version as release `name`; returns (manifest, made). Kept if it exists."""
    from deltalake import DeltaTable

    path = manifest_path(lakehouse, name)
    if path.exists() and not replace:
        return json.loads(path.read_text()), False
    so = dict(lakehouse.storage_options) or None
    tables = {}
    for table in REGISTRY:
        if not lakehouse.exists(table):
            continue
        dt = DeltaTable(lakehouse.table_uri(table), storage_options=so)
        version = dt.version()
        if (dt.metadata().configuration or {}).get("delta.enableExpiredLogCleanup") != "false":
            dt.alter.set_table_properties(NO_LOG_CLEANUP, raise_if_not_exists=False)
        tables[table] = {"version": version, "rows": _rows_at(dt, version, so),
                         "uri": lakehouse.table_uri(table)}
    manifest = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tables": tables,
                "models": model_versions(lakehouse), "code_version": code_version(),
                "checks": catalog_gate_results(lakehouse, limits or catalog_mod.GateLimits()) if run_checks else
                {"passed": None, "gates": {}, "reason": "not run (run_checks=False)"},
                "path": str(path)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    tmp.replace(path)
    return manifest, True


def _rows_at(dt, version: int, storage_options: dict | None) -> int:
    """Rows of the table at `version`, from the Delta log's file statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    old = DeltaTable(dt.table_uri, version=version, storage_options=storage_options)
    acts = pa.table(old.get_add_actions(flatten=True))
    return int(pc.sum(acts.column("num_records")).as_py() or 0) if acts.num_rows else 0


def pinned_versions(lakehouse, table: str) -> list[int]:
    """Every version of `table` that some release pins (vacuum must keep their files)."""
    out = set()
    for name in list_releases(lakehouse):
        v = load_manifest(lakehouse, name)["tables"].get(table, {}).get("version")
        if v is not None:
            out.add(int(v))
    return sorted(out)
