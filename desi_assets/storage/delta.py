"""The one Delta writer/reader: partition-scoped atomic overwrites with conflict retry."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
from deltalake import ColumnProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from desi_assets.storage.tables import TableSpec

_SAFE_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class SchemaError(ValueError):
    """Data handed to the writer does not match the registered table schema."""


def conform(df: pl.DataFrame | pa.Table, spec: TableSpec) -> pa.Table:
    """Cast a frame to the table's Arrow schema; missing nullable columns become null."""
    table = df.to_arrow() if isinstance(df, pl.DataFrame) else df
    extra = set(table.column_names) - set(spec.schema.names)
    if extra:
        raise SchemaError(f"table {spec.name!r} has no columns {sorted(extra)}")
    cols = []
    for field in spec.schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            if not field.nullable and col.null_count:
                raise SchemaError(f"{spec.name}.{field.name} is not nullable but has {col.null_count} nulls")
        else:
            if not field.nullable:
                raise SchemaError(f"{spec.name}: required column {field.name!r} is missing")
            col = pa.nulls(table.num_rows, field.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=spec.schema)


def writer_properties(spec: TableSpec) -> WriterProperties | None:
    """Parquet settings of a table: bulk tables are uncompressed, without stats on list columns."""
    if not spec.bulk:
        return None
    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    return WriterProperties(compression="UNCOMPRESSED", column_properties={c: plain for c in spec.list_columns()})


def key_predicate(keys: Sequence[str]) -> str:
    """SQL predicate selecting the rows of the given partition keys (keys are validated)."""
    if not keys:
        raise ValueError("at least one partition key is needed")
    for k in keys:
        if not k or set(k) - _SAFE_KEY_CHARS:
            raise ValueError(f"refusing unsafe partition key in predicate: {k!r}")
    if len(keys) == 1:
        return f"coadd_key = '{keys[0]}'"
    return "coadd_key IN (" + ", ".join(f"'{k}'" for k in sorted(set(keys))) + ")"


def _with_retry(fn, attempts: int = 8):
    for attempt in range(attempts):
        try:
            return fn()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt + random.random() * 0.05)
        except DeltaError as exc:  # concurrent first create races surface as generic errors
            if "already exists" in str(exc).lower() and attempt < attempts - 1:
                time.sleep(0.05 + random.random() * 0.1)
                continue
            raise


def write_partitions(uri: str, spec: TableSpec, data: pl.DataFrame | pa.Table, keys: Sequence[str],
                     storage_options: dict[str, str] | None = None) -> int:
    """Replace exactly the rows of `keys` with `data` in one atomic Delta commit; returns rows written."""
    table = conform(data, spec)
    present = set(table.column("coadd_key").to_pylist())
    if present - set(keys):
        raise ValueError(f"rows for partitions {sorted(present - set(keys))} not in the write scope {list(keys)}")
    predicate = key_predicate(keys)

    def _write():
        write_deltalake(uri, table, mode="overwrite", predicate=predicate, writer_properties=writer_properties(spec),
                        partition_by=list(spec.partition_by) or None, storage_options=storage_options)

    try:
        DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        _create(uri, spec, storage_options)
    _with_retry(_write)
    return table.num_rows


def _create(uri: str, spec: TableSpec, storage_options: dict[str, str] | None) -> None:
    def _mk():
        try:
            DeltaTable(uri, storage_options=storage_options)
            return
        except TableNotFoundError:
            pass
        write_deltalake(uri, spec.schema.empty_table(), mode="append", description=spec.description,
                        partition_by=list(spec.partition_by) or None, storage_options=storage_options)
    _with_retry(_mk)


def overwrite_table(uri: str, spec: TableSpec, data: pl.DataFrame | pa.Table,
                    storage_options: dict[str, str] | None = None) -> int:
    """Replace a whole (unpartitioned) table in one commit; returns rows written."""
    table = conform(data, spec)
    _with_retry(lambda: write_deltalake(uri, table, mode="overwrite", schema_mode="overwrite",
                                        partition_by=list(spec.partition_by) or None,
                                        storage_options=storage_options))
    return table.num_rows


def append(uri: str, spec: TableSpec, data: pl.DataFrame | pa.Table,
           storage_options: dict[str, str] | None = None) -> int:
    """Append rows in one commit; returns rows written."""
    table = conform(data, spec)
    _with_retry(lambda: write_deltalake(uri, table, mode="append",
                                        partition_by=list(spec.partition_by) or None,
                                        storage_options=storage_options))
    return table.num_rows


def read(uri: str, keys: Sequence[str] | None = None, columns: Sequence[str] | None = None,
         version: int | None = None, storage_options: dict[str, str] | None = None) -> pl.DataFrame:
    """Read a table (optionally only some partitions/columns, or an older version) into Polars."""
    try:
        dt = DeltaTable(uri, version=version, storage_options=storage_options)
    except TableNotFoundError:
        raise FileNotFoundError(f"Delta table {uri} does not exist yet; materialize its asset first") from None
    lf = pl.scan_delta(dt)
    if keys is not None:
        lf = lf.filter(pl.col("coadd_key").is_in(list(keys)))
    if columns is not None:
        lf = lf.select(list(columns))
    return lf.collect()


def exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """True when a Delta table exists at uri."""
    try:
        DeltaTable(uri, storage_options=storage_options)
        return True
    except TableNotFoundError:
        return False
