"""The lakehouse resource: one root URI, tables at {root}/delta/{table}, models and plots beside them."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
from dagster import ConfigurableResource
from pydantic import Field

from desi_assets.storage import delta
from desi_assets.storage.tables import table_spec

#: Characters a lakehouse path may hold: delta-rs percent-encodes any other (a space, %, #, non-ASCII) in the
#: table URI and Polars then cannot find the Parquet files (pola-rs/polars#20944), so such roots are refused.
_PATH_CHARS = re.compile(r"[A-Za-z0-9/._~+@,=:()!$&'*;-]*")


#: Local directory for models, plots, archives and the Dagster instance when the lakehouse root is remote.
REMOTE_ARTIFACTS_DIR = ".desi-ard-artifacts"


def local_state_dir(root: str) -> Path:
    """Local directory for a root's non-Delta state: the root itself if local, else ./.desi-ard-artifacts."""
    if "://" in root and not root.startswith("file://"):
        return Path(REMOTE_ARTIFACTS_DIR).resolve()
    return Path(root.removeprefix("file://")).resolve()


def default_root() -> str:
    """Lakehouse root when none is configured: $DESI_ARD_LAKEHOUSE (read at call time), else ./lakehouse."""
    return os.environ.get("DESI_ARD_LAKEHOUSE", "lakehouse")


def check_root(root: str) -> str:
    """The root unchanged; a ValueError naming the character if a reader could not open tables under it."""
    path = str(Path(root.removeprefix("file://")).resolve()) if "://" not in root or root.startswith("file://") \
        else root.split("://", 1)[1]
    bad = sorted({c for c in path if not _PATH_CHARS.fullmatch(c)})
    if bad:
        raise ValueError(f"lakehouse root {path!r} holds {bad}: Delta readers (Polars, pola-rs/polars#20944) "
                         f"cannot open tables under such a path; choose a root without spaces, '%', '#' or "
                         f"non-ASCII characters")
    return root


class LakehouseResource(ConfigurableResource):
    """Local path or object-store URI (file://, s3://) holding Delta tables, models and plots."""

    root: str = Field(default_factory=default_root,
                      description="Lakehouse root: a path or a URI such as s3://bucket/ard ($DESI_ARD_LAKEHOUSE)")
    storage_options: dict[str, str] = Field(default_factory=dict, description="deltalake/LanceDB storage options")
    artifacts_dir: str | None = Field(default=None, description="Local dir for plots/models (default: the root "
                                      "if local, ./.desi-ard-artifacts if remote: Delta tables go to s3://, "
                                      "model files and plots stay on local disk)")

    @property
    def is_local(self) -> bool:
        """True when the root is a local filesystem path."""
        return "://" not in self.root or self.root.startswith("file://")

    def _local_root(self) -> Path:
        return Path(self.root.removeprefix("file://")).resolve()

    def model_post_init(self, context) -> None:
        """Refuse a root whose tables Polars could not read back (see check_root)."""
        super().model_post_init(context)
        check_root(self.root)

    def table_uri(self, name: str) -> str:
        """URI of a registered table."""
        table_spec(name)
        if self.is_local:
            return str(self._local_root() / "delta" / name)
        return f"{self.root.rstrip('/')}/delta/{name}"

    def artifact_dir(self, kind: str) -> Path:
        """Local directory for artifacts of a kind (plots, models), created on demand."""
        base = Path(self.artifacts_dir) if self.artifacts_dir else local_state_dir(self.root)
        path = base / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _so(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def write_partitions(self, name: str, data: pl.DataFrame | pa.Table, keys: Sequence[str]) -> int:
        """Atomically replace the rows of the given partition keys; returns rows written."""
        return delta.write_partitions(self.table_uri(name), table_spec(name), data, keys, self._so())

    def overwrite(self, name: str, data: pl.DataFrame | pa.Table) -> int:
        """Replace a whole unpartitioned table; returns rows written."""
        return delta.overwrite_table(self.table_uri(name), table_spec(name), data, self._so())

    def append(self, name: str, data: pl.DataFrame | pa.Table) -> int:
        """Append rows to a table; returns rows written."""
        return delta.append(self.table_uri(name), table_spec(name), data, self._so())

    def read(self, name: str, keys: Sequence[str] | None = None, columns: Sequence[str] | None = None,
             version: int | None = None) -> pl.DataFrame:
        """Read a table, optionally only some partitions, columns or an older version."""
        return delta.read(self.table_uri(name), keys, columns, version, self._so())

    def scan(self, name: str) -> pl.LazyFrame:
        """Lazy Polars scan of a table."""
        return pl.scan_delta(self.table_uri(name), storage_options=self._so())

    def ensure(self, name: str) -> None:
        """Create a registered table, empty, if it does not exist yet (so reading it never raises)."""
        delta.ensure_table(self.table_uri(name), table_spec(name), self._so())

    def row_count(self, name: str) -> int:
        """Rows in a table now (from Delta file statistics, no data read); 0 if it does not exist."""
        return delta.row_count(self.table_uri(name), self._so())

    def exists(self, name: str) -> bool:
        """True when the table has been created."""
        return delta.exists(self.table_uri(name), self._so())

    def columns(self, name: str) -> list[str]:
        """Columns the table really has now (its schema may lag the registry until the next write)."""
        from deltalake import DeltaTable
        return [f.name for f in DeltaTable(self.table_uri(name), storage_options=self._so()).schema().fields]

    def version(self, name: str) -> int | None:
        """Current Delta version of a table (None if it does not exist)."""
        from deltalake import DeltaTable
        if not self.exists(name):
            return None
        return DeltaTable(self.table_uri(name), storage_options=self._so()).version()

    def publish_model(self, name: str, path: Path, version: str, meta: dict) -> Path:
        """Record `path` as the current version of model `name` (atomic pointer file); returns the pointer."""
        import json

        pointer = self.artifact_dir("models") / f"{name}.json"
        tmp = pointer.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"name": name, "version": version, "path": str(path), **meta}, indent=1,
                                  default=str))
        tmp.replace(pointer)
        return pointer

    def current_model(self, name: str) -> dict:
        """Pointer of the current version of model `name`; a clear error if it was never trained."""
        import json

        pointer = self.artifact_dir("models") / f"{name}.json"
        if not pointer.exists():
            raise FileNotFoundError(f"no {name} in {pointer.parent}; materialize the `{name}` asset first")
        return json.loads(pointer.read_text())
