"""The one Delta writer/reader: partition-scoped atomic overwrites with conflict retry.

A partition-scoped write replaces exactly the rows of some ``coadd_key`` values in one Delta
commit. Two ways, same result:

- **Fast path** (local tables whose existing files for those keys each hold one key): the
  Parquet files are written by pyarrow, one per (key, ``hpxgroup``), and committed with the
  old files' removes through ``DeltaTable.create_write_transaction``: one atomic commit, no
  rows rewritten. pyarrow encodes the list columns of ``spectra`` ~4x faster than delta-rs's
  writer (measured: 4,600 vs 1,200 spectra/s), which made the writer the ingest bottleneck.
- **General path** (remote stores, or files that mix keys after ``compact``):
  ``write_deltalake(mode="overwrite", predicate="coadd_key IN (...)")``.

Files written but not committed (a crash, a lost race) are never referenced; ``vacuum``
removes them.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import ColumnProperties, CommitProperties, DeltaTable, Field, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

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


#: Rows per Parquet row group in bulk (spectra) tables: one spectrum's read decodes ~3 MB, not the whole file.
BULK_ROW_GROUP_ROWS = 32


def writer_properties(spec: TableSpec) -> WriterProperties | None:
    """Parquet settings of a table: bulk tables are uncompressed, without stats on list columns."""
    if not spec.bulk:
        return None
    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    coded = ColumnProperties(dictionary_enabled=True, statistics_enabled="NONE")
    return WriterProperties(compression="UNCOMPRESSED", column_properties={
        c: coded if c in spec.dictionary_lists else plain for c in spec.list_columns()})


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
        evolve_schema(DeltaTable(uri, storage_options=storage_options), spec)
    except TableNotFoundError:
        _create(uri, spec, storage_options)
    if _is_local(uri) and not storage_options:
        added: list[AddAction] = []  # written once, reused by every retry

        def _commit() -> bool:
            dt = DeltaTable(uri)
            removes = _single_key_files(dt, keys)
            if removes is None:  # some file mixes keys (compacted): let delta-rs rewrite it
                return False
            if not added:
                added.extend(_write_files(uri, spec, table))
            dt.create_write_transaction([*added, *removes], mode="append", schema=spec.schema,
                                        partition_by=list(spec.partition_by) or None,
                                        commit_properties=CommitProperties(
                                            custom_metadata={"desi_ard.replaced": predicate}))
            return True

        if _with_retry(_commit):
            return table.num_rows
        for a in added:  # never committed
            os.remove(os.path.join(uri, a.path))
    _with_retry(_write)
    return table.num_rows


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _single_key_files(dt: DeltaTable, keys: Sequence[str]) -> list[RemoveAction] | None:
    """Removes for the files holding rows of `keys`, or None if such a file also holds other keys."""
    acts = pa.table(dt.get_add_actions(flatten=True))
    if acts.num_rows == 0:
        return []
    lo = acts.column("min.coadd_key") if "min.coadd_key" in acts.column_names else None
    hi = acts.column("max.coadd_key") if "max.coadd_key" in acts.column_names else None
    if lo is None or hi is None:
        return None
    lo, hi = lo.cast(pa.string()), hi.cast(pa.string())
    if lo.null_count or hi.null_count:
        return None  # a file without stats: cannot tell which keys it holds
    touches = pa.array([False] * acts.num_rows)
    for k in sorted(set(keys)):
        touches = pc.or_(touches, pc.and_(pc.less_equal(lo, k), pc.greater_equal(hi, k)))
    hit = pc.indices_nonzero(touches).to_pylist()
    if any(lo[i].as_py() != hi[i].as_py() for i in hit):
        return None
    part_cols = [c for c in acts.column_names if c.startswith("partition.")]
    now = int(time.time() * 1000)
    out = []
    for i in hit:
        pv = {c.removeprefix("partition."): _pv(acts.column(c)[i].as_py()) for c in part_cols}
        out.append(RemoveAction(path=acts.column("path")[i].as_py(), data_change=True, deletion_timestamp=now,
                                size=acts.column("size_bytes")[i].as_py(), partition_values=pv))
    return out


def _pv(v) -> str | None:
    return None if v is None else str(v)


def _write_files(uri: str, spec: TableSpec, table: pa.Table) -> list[AddAction]:
    """Write `table` as Parquet files under uri, one per (coadd_key, partition values); their add actions."""
    part = list(spec.partition_by)
    group_cols = ["coadd_key", *part]
    idx = pa.table({c: table.column(c) for c in group_cols}).append_column(
        "__row", pa.array(range(table.num_rows), pa.int64()))
    groups = idx.group_by(group_cols, use_threads=False).aggregate([("__row", "list")])
    data_cols = [c for c in table.column_names if c not in part]
    bulk = spec.bulk
    list_cols = set(spec.list_columns())
    actions = []
    for g in range(groups.num_rows):
        rows = np.sort(groups.column("__row_list")[g].values.to_numpy())
        if rows[-1] - rows[0] + 1 == rows.size:  # the usual case (a file's rows, one hpxgroup): no copy
            sub = table.select(data_cols).slice(int(rows[0]), int(rows.size))
        else:
            sub = table.select(data_cols).take(pa.array(rows))
        pvals = {c: _pv(groups.column(c)[g].as_py()) for c in part}
        rel_dir = "/".join(f"{c}={'__HIVE_DEFAULT_PARTITION__' if v is None else v}" for c, v in pvals.items())
        rel = (rel_dir + "/" if rel_dir else "") + f"part-{uuid.uuid4().hex}.parquet"
        path = os.path.join(uri.removeprefix("file://"), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(sub, path, compression="none" if bulk else "snappy",
                       use_dictionary=_dictionary_columns(spec, data_cols) if bulk else True,
                       write_statistics=[c for c in data_cols if c not in list_cols],
                       row_group_size=BULK_ROW_GROUP_ROWS if bulk else max(sub.num_rows, 1))
        st = os.stat(path)
        actions.append(AddAction(path=rel, size=st.st_size, partition_values=pvals,
                                 modification_time=int(st.st_mtime * 1000), data_change=True,
                                 stats=json.dumps(_stats(sub, list_cols))))
    return actions


def _dictionary_columns(spec: TableSpec, data_cols: list[str]) -> list[str]:
    """Parquet leaf paths to dictionary-encode in a bulk table: scalars and `spec.dictionary_lists`."""
    lists = set(spec.list_columns())
    return ([c for c in data_cols if c not in lists]
            + [f"{c}.list.element" for c in spec.dictionary_lists if c in data_cols])


def _stats(t: pa.Table, skip: set[str]) -> dict:
    """Delta file statistics: numRecords and, per scalar column, min/max/null count (JSON-safe values)."""
    mins, maxs, nulls = {}, {}, {}
    for name in t.column_names:
        if name in skip:
            continue
        col = t.column(name)
        nulls[name] = col.null_count
        typ = col.type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_string(typ)
                or pa.types.is_large_string(typ)) or col.null_count == len(col):
            continue
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, float) and not (lo == lo and abs(lo) != float("inf") and abs(hi) != float("inf")):
            continue  # NaN/Inf are not valid JSON stats
        mins[name], maxs[name] = lo, hi
    return {"numRecords": t.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def evolve_schema(dt: DeltaTable, spec: TableSpec) -> list[str]:
    """Add the nullable columns `spec` gained since the table was written, and update changed column docs.

    Returns the added names; rows written before keep nulls there. Any other drift (a column the
    spec dropped, a new non-nullable column) raises a SchemaError that says how to rebuild the table.
    """
    fields = {f.name: f for f in dt.schema().fields}
    have = set(fields)
    gone = sorted(have - set(spec.schema.names))
    new = [f for f in spec.schema if f.name not in have]
    rebuild = f"rebuild it: delete {dt.table_uri} and rematerialize its asset"
    if gone:
        raise SchemaError(f"table {spec.name!r} has columns {gone} that this version no longer writes; {rebuild}")
    if any(not f.nullable for f in new):
        raise SchemaError(f"table {spec.name!r} lacks required columns {[f.name for f in new if not f.nullable]}; "
                          f"{rebuild}")
    for f in spec.schema:  # delta-rs refuses writes whose field metadata differs from the table's
        want = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        if f.name in fields and want and dict(fields[f.name].metadata) != want:
            dt.alter.set_column_metadata(f.name, want)
    if new:
        dt.alter.add_columns([Field.from_arrow(f) for f in new])
    return [f.name for f in new]


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


def ensure_table(uri: str, spec: TableSpec, storage_options: dict[str, str] | None = None) -> None:
    """Create the table empty (with its registered schema) unless it exists."""
    _create(uri, spec, storage_options)


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
    try:
        evolve_schema(DeltaTable(uri, storage_options=storage_options), spec)
    except TableNotFoundError:
        pass
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


def row_count(uri: str, storage_options: dict[str, str] | None = None) -> int:
    """Rows in the current version of a table, from the Delta log's file statistics (no data read); 0 if absent."""
    try:
        acts = pa.table(DeltaTable(uri, storage_options=storage_options).get_add_actions(flatten=True))
    except TableNotFoundError:
        return 0
    return int(pc.sum(acts.column("num_records")).as_py() or 0) if acts.num_rows else 0


def exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """True when a Delta table exists at uri."""
    try:
        DeltaTable(uri, storage_options=storage_options)
        return True
    except TableNotFoundError:
        return False
