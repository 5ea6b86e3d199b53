"""The Delta writer: partition-scoped, idempotent, concurrent-safe, crash-safe."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable

from desi_assets.storage import delta
from desi_assets.storage.arrays import to_list_array, to_numpy_2d
from desi_assets.storage.tables import PREPROCESSED, TARGETS, table_spec


def _rows(key: str, n: int, healpix: int = 10378, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "coadd_key": [key] * n, "survey": "main", "program": "dark", "healpix": [healpix] * n,
        "hpxgroup": [healpix // 100] * n, "targetid": np.arange(n, dtype=np.int64) + healpix * 10_000,
        "flux": pl.Series(to_list_array(rng.normal(size=(n, 496)).astype(np.float32))),
        "norm": rng.uniform(1, 2, n),
    })


def test_write_is_partition_scoped_and_idempotent(tmp_path):
    uri = str(tmp_path / "pre")
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10378", 5), ["main-dark-10378"])
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10379", 3, 10379), ["main-dark-10379"])
    for _ in range(2):  # re-materialising replaces exactly those rows
        delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10378", 4, seed=1), ["main-dark-10378"])
    df = delta.read(uri)
    assert df.group_by("coadd_key").len().sort("coadd_key")["len"].to_list() == [4, 3]
    assert df["targetid"].n_unique() == df.height
    assert DeltaTable(uri).metadata().partition_columns == ["hpxgroup"]
    flux = to_numpy_2d(delta.read(uri, keys=["main-dark-10379"])["flux"])
    assert flux.shape == (3, 496)


def test_rows_outside_write_scope_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not in the write scope"):
        delta.write_partitions(str(tmp_path / "t"), PREPROCESSED, _rows("main-dark-1", 2), ["main-dark-2"])


def test_unsafe_key_is_refused_before_any_sql():
    with pytest.raises(ValueError, match="unsafe partition key"):
        delta.key_predicate(["x' OR '1'='1"])


def test_schema_errors_are_clear(tmp_path):
    bad = _rows("main-dark-1", 2).with_columns(extra=pl.lit(1))
    with pytest.raises(delta.SchemaError, match="no columns"):
        delta.write_partitions(str(tmp_path / "t"), PREPROCESSED, bad, ["main-dark-1"])
    with pytest.raises(delta.SchemaError, match="targetid"):
        delta.conform(pl.DataFrame({"coadd_key": ["a"], "hpxgroup": [1]}), TARGETS)


def test_unknown_table_and_missing_table_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown lakehouse table"):
        table_spec("nope")
    with pytest.raises(FileNotFoundError, match="materialize its asset first"):
        delta.read(str(tmp_path / "none"))


def _writer(args):
    uri, key, hp = args
    delta.write_partitions(uri, PREPROCESSED, _rows(key, 50, hp, seed=hp), [key])
    return key


def test_concurrent_writers_all_land(tmp_path):
    uri = str(tmp_path / "pre")
    jobs = [(uri, f"main-dark-{hp}", hp) for hp in (100, 101, 250, 251)]
    pool = mp.get_context("spawn").Pool(4)
    try:
        landed = pool.map(_writer, jobs)
    finally:  # close + join, not terminate: a worker signalled mid-get can hang on the queue's lock
        pool.close()
        pool.join()
    assert sorted(landed) == sorted(j[1] for j in jobs)
    df = delta.read(uri)
    assert df.height == 200 and df["coadd_key"].n_unique() == 4


CRASH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, polars as pl
    from desi_assets.storage import delta
    from desi_assets.storage.arrays import to_list_array
    from desi_assets.storage.tables import PREPROCESSED
    n = 150_000
    df = pl.DataFrame({"coadd_key": ["main-dark-1"] * n, "hpxgroup": [0] * n, "targetid": np.arange(n),
                       "flux": pl.Series(to_list_array(np.random.default_rng(0).normal(size=(n, 496)).astype(np.float32)))})
    print("writing", flush=True)
    delta.write_partitions(sys.argv[1], PREPROCESSED, df, ["main-dark-1"])
    print("done", flush=True)
""")


def test_killed_writer_leaves_previous_version(tmp_path):
    uri = str(tmp_path / "pre")
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-1", 7, 1), ["main-dark-1"])
    before = DeltaTable(uri).version()
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)  # parquet files are being written; the commit comes last
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dt = DeltaTable(uri)
    df = delta.read(uri)
    if dt.version() == before:  # killed before the commit: the old rows, intact
        assert df.height == 7
    else:  # the commit won the race: all new rows, never a mix
        assert df.height == 150_000
    assert delta.read(uri, version=before).height == 7


def _add_actions(dt: DeltaTable) -> pl.DataFrame:
    import pyarrow as pa

    return pl.from_arrow(pa.table(dt.get_add_actions(flatten=True)))


def test_fast_path_commits_once_and_leaves_one_file_per_key(tmp_path):
    uri = str(tmp_path / "pre")
    keys = ["main-dark-10378", "main-dark-10379"]
    both = pl.concat([_rows(keys[0], 5), _rows(keys[1], 3, 10379)])
    delta.write_partitions(uri, PREPROCESSED, both, keys)
    v = DeltaTable(uri).version()
    delta.write_partitions(uri, PREPROCESSED, _rows(keys[0], 2, seed=3), [keys[0]])
    dt = DeltaTable(uri)
    assert dt.version() == v + 1  # one commit: removes and adds together
    assert dt.history(1)[0]["desi_ard.replaced"] == f"coadd_key = '{keys[0]}'"  # what it replaced, in the log
    acts = _add_actions(dt).sort("min.coadd_key")
    assert acts["min.coadd_key"].to_list() == keys and acts["max.coadd_key"].to_list() == keys
    assert acts["num_records"].to_list() == [2, 3]
    assert acts["min.targetid"].to_list() == [103780000, 103790000]  # stats for pruning
    # the old version is still readable (time travel) and has the first rows
    assert delta.read(uri, version=v).group_by("coadd_key").len().sort("coadd_key")["len"].to_list() == [5, 3]
    got = delta.read(uri, keys=[keys[0]]).sort("targetid")
    assert np.array_equal(to_numpy_2d(got["flux"]), to_numpy_2d(_rows(keys[0], 2, seed=3)["flux"]))


def test_compacted_files_mixing_keys_are_rewritten_correctly(tmp_path):
    uri = str(tmp_path / "pre")
    for i, key in enumerate(["main-dark-10378", "main-dark-10379", "main-dark-10380"]):
        delta.write_partitions(uri, PREPROCESSED, _rows(key, 4, healpix=10378 + i), [key])  # all hpxgroup 103
    DeltaTable(uri).optimize.compact()
    acts = _add_actions(DeltaTable(uri))
    assert acts.height == 1 and acts["min.coadd_key"][0] != acts["max.coadd_key"][0]
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10379", 2, healpix=10379, seed=5), ["main-dark-10379"])
    df = delta.read(uri)
    assert df.group_by("coadd_key").len().sort("coadd_key")["len"].to_list() == [4, 2, 4]
    assert df["targetid"].n_unique() == df.height


def test_a_key_spanning_hpxgroups_is_split_into_one_file_per_group(tmp_path):
    uri = str(tmp_path / "pre")
    rows = _rows("tile-1000-3", 6)
    rows = rows.with_columns(hpxgroup=pl.Series([103, 104] * 3, dtype=pl.Int32))  # interleaved groups
    delta.write_partitions(uri, PREPROCESSED, rows, ["tile-1000-3"])
    acts = _add_actions(DeltaTable(uri)).sort("partition.hpxgroup")
    assert acts["num_records"].to_list() == [3, 3]
    got = delta.read(uri).sort("targetid")
    assert got["hpxgroup"].to_list() == [103, 104] * 3
    assert np.array_equal(to_numpy_2d(got["flux"]), to_numpy_2d(rows["flux"]))


def _narrower(drop: str):
    """PREPROCESSED as an older version of the code knew it: without column `drop`, an older doc on `targetid`."""
    from dataclasses import replace

    schema = PREPROCESSED.schema.remove(PREPROCESSED.schema.get_field_index(drop))
    i = schema.get_field_index("targetid")
    return replace(PREPROCESSED, schema=schema.set(i, schema.field(i).with_metadata({"doc": "an older description"})))


@pytest.mark.parametrize("compacted", [False, True])
def test_a_column_added_to_the_spec_is_added_to_an_existing_table(tmp_path, compacted):
    """Upgrading the code adds the new nullable column; old rows read back null, new rows carry it."""
    uri, old = str(tmp_path / "pre"), _narrower("norm")
    for i, key in enumerate(["main-dark-10378", "main-dark-10379"]):
        delta.write_partitions(uri, old, _rows(key, 3, healpix=10378 + i).drop("norm"), [key])
    if compacted:  # files mixing keys take delta-rs's predicate-overwrite path
        DeltaTable(uri).optimize.compact()
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10379", 2, healpix=10379, seed=5), ["main-dark-10379"])
    df = delta.read(uri).sort("coadd_key")
    assert df.group_by("coadd_key").len().sort("coadd_key")["len"].to_list() == [3, 2]
    assert df.filter(pl.col("coadd_key") == "main-dark-10378")["norm"].null_count() == 3
    assert df.filter(pl.col("coadd_key") == "main-dark-10379")["norm"].null_count() == 0
    docs = {f.name: dict(f.metadata) for f in DeltaTable(uri).schema().fields}
    assert docs["targetid"] == {"doc": PREPROCESSED.schema.field("targetid").metadata[b"doc"].decode()}


def test_a_column_dropped_from_the_spec_is_a_clear_error(tmp_path):
    uri = str(tmp_path / "pre")
    delta.write_partitions(uri, PREPROCESSED, _rows("main-dark-10378", 3), ["main-dark-10378"])
    with pytest.raises(delta.SchemaError, match=r"no longer writes.*rebuild it"):
        delta.write_partitions(uri, _narrower("norm"), _rows("main-dark-10378", 3).drop("norm"), ["main-dark-10378"])
    assert delta.read(uri).height == 3  # nothing lost
