"""The lakehouse resource: one root URI, tables at {root}/delta/{table}, models and plots beside them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
from dagster import ConfigurableResource
from pydantic import Field

from desi_assets.storage import delta
from desi_assets.storage.tables import table_spec

DEFAULT_ROOT = os.environ.get("DESI_ARD_LAKEHOUSE", "lakehouse")


class LakehouseResource(ConfigurableResource):
    """Local path or object-store URI (file://, s3://) holding Delta tables, models and plots."""

    root: str = Field(default=DEFAULT_ROOT, description="Lakehouse root: a path or a URI such as s3://bucket/ard")
    storage_options: dict[str, str] = Field(default_factory=dict, description="deltalake/LanceDB storage options")
    artifacts_dir: str | None = Field(default=None, description="Local dir for plots/models when root is remote")

    @property
    def is_local(self) -> bool:
        """True when the root is a local filesystem path."""
        return "://" not in self.root or self.root.startswith("file://")

    def _local_root(self) -> Path:
        return Path(self.root.removeprefix("file://")).resolve()

    def table_uri(self, name: str) -> str:
        """URI of a registered table."""
        table_spec(name)
        if self.is_local:
            return str(self._local_root() / "delta" / name)
        return f"{self.root.rstrip('/')}/delta/{name}"

    def artifact_dir(self, kind: str) -> Path:
        """Local directory for artifacts of a kind (plots, models), created on demand."""
        base = Path(self.artifacts_dir) if self.artifacts_dir else (
            self._local_root() if self.is_local else Path(".desi-ard-artifacts"))
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

    def exists(self, name: str) -> bool:
        """True when the table has been created."""
        return delta.exists(self.table_uri(name), self._so())

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
