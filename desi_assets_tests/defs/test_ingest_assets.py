"""raw_spectra and preprocessed_spectra: asset context, materialize, idempotency, bad files, key validation."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from desi_assets.defs.ingest.assets import IngestConfig, coadd_ingest
from desi_assets.defs.partitions import coadds_partitions
from desi_assets.defs.resources import make_resources
from desi_assets.sources.keys import InvalidPartitionKeyError
from desi_assets.storage.arrays import to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets_tests.conftest import survey_keys


def _materialize(keys, resources, instance, selection=None, raise_on_error=True):
    instance.add_dynamic_partitions(coadds_partitions.name, [k for k in keys
                                    if not instance.has_dynamic_partition(coadds_partitions.name, k)])
    return [dg.materialize([coadd_ingest], selection=selection, partition_key=k, resources=resources,
                           instance=instance, raise_on_error=raise_on_error) for k in keys]


def test_raw_spectra_with_asset_context(small_survey, lakehouse_root, instance):
    key = survey_keys(small_survey)[0]
    instance.add_dynamic_partitions(coadds_partitions.name, [key])
    res = make_resources(lakehouse_root, str(small_survey))
    ctx = dg.build_asset_context(partition_key=key, resources=res, instance=instance)
    assert list(coadd_ingest(ctx, IngestConfig(make_plot=False))) == []  # recorded per partition, as events
    raw, pre = ctx.op_execution_context.get_events()
    assert (raw.asset_key.path, pre.asset_key.path) == (["raw_spectra"], ["preprocessed_spectra"])
    assert raw.partition == pre.partition == key
    rows = raw.metadata["rows"].value
    t = LakehouseResource(root=lakehouse_root).read("targets")
    assert t["coadd_key"].unique().to_list() == [key]
    assert t.height == rows == raw.metadata["batch_rows"].value == raw.metadata["table_rows"].value > 0
    assert pre.metadata["rows"].value == int(t["usable"].sum())
    assert pre.metadata["excluded_unusable"].value == raw.metadata["flagged_unusable"].value


def test_preprocess_alone_reads_spectra_back_and_matches(small_survey, lakehouse_root, instance):
    key = survey_keys(small_survey)[0]
    res = make_resources(lakehouse_root, str(small_survey))
    lh = LakehouseResource(root=lakehouse_root)
    _materialize([key], res, instance)
    first = lh.read("preprocessed_spectra").sort("targetid")
    version, spectra_version = lh.version("preprocessed_spectra"), lh.version("spectra")
    [result] = _materialize([key], res, instance, selection=["preprocessed_spectra"])
    mats = result.get_asset_materialization_events()
    assert [m.asset_key.path for m in mats] == [["preprocessed_spectra"]]
    assert lh.version("preprocessed_spectra") == version + 1 and lh.version("spectra") == spectra_version
    again = lh.read("preprocessed_spectra").sort("targetid")
    assert again["targetid"].to_list() == first["targetid"].to_list()
    assert np.array_equal(to_numpy_2d(again["flux"]), to_numpy_2d(first["flux"]))
    assert np.allclose(again["norm"].to_numpy(), first["norm"].to_numpy())


def test_materialize_is_idempotent_and_preprocesses(small_survey, lakehouse_root, instance):
    keys = survey_keys(small_survey)[:2]
    res = make_resources(lakehouse_root, str(small_survey))
    lh = LakehouseResource(root=lakehouse_root)
    _materialize(keys, res, instance)
    assert lh.read("ingest_errors").height == 0  # exists (empty) after a clean run: reading it never raises
    counts = {t: lh.read(t).height for t in ("targets", "spectra", "preprocessed_spectra")}
    _materialize(keys[:1], res, instance)  # re-run one partition
    assert {t: lh.read(t).height for t in counts} == counts
    t = lh.read("targets")
    assert t["targetid"].n_unique() == t.height
    pre = lh.read("preprocessed_spectra")
    assert pre.height == int(t["usable"].sum())
    flux = to_numpy_2d(pre["flux"])
    assert flux.shape[1] == 496 and np.all(np.isfinite(flux))
    assert np.allclose(np.median(np.abs(flux), axis=1), 1.0, atol=1e-3)
    sp = lh.read("spectra", keys=keys[:1])
    assert len(sp["flux_b"][0]) == 2751 and len(sp["lsf_sigma"][0]) == 496


def test_corrupt_file_fails_its_partition_only(survey_copy, lakehouse_root, instance):
    keys = survey_keys(survey_copy)[:3]
    bad = next(survey_copy.rglob(f"coadd-{keys[1]}.fits"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])  # truncated
    res = make_resources(lakehouse_root, str(survey_copy))
    results = _materialize(keys, res, instance, raise_on_error=False)
    assert [r.success for r in results] == [True, False, True]
    errors = LakehouseResource(root=lakehouse_root).read("ingest_errors")
    assert errors["coadd_key"].to_list() == [keys[1]]
    assert errors["error_type"][0] == "TruncatedFileError"
    assert str(bad) in errors["message"][0] or str(bad) == errors["file"][0]
    landed = LakehouseResource(root=lakehouse_root).read("targets")["coadd_key"].unique().sort().to_list()
    assert landed == sorted([keys[0], keys[2]])


def test_wrong_partition_key_is_rejected_and_recorded(small_survey, lakehouse_root, instance):
    res = make_resources(lakehouse_root, str(small_survey))
    bad_keys = ["main-dark-99999999", "../../etc-passwd-1", "main-nightly-10", "../../etc"]
    for bad in bad_keys:
        instance.add_dynamic_partitions(coadds_partitions.name, [bad])
        ctx = dg.build_asset_context(partition_key=bad, resources=res, instance=instance)
        with pytest.raises(dg.Failure, match="invalid partition key"):
            list(coadd_ingest(ctx, IngestConfig()))
    errors = LakehouseResource(root=lakehouse_root).read("ingest_errors").sort("failed_at")
    assert errors["coadd_key"].to_list() == bad_keys
    assert set(errors["error_type"]) == {InvalidPartitionKeyError.__name__}
    assert set(errors["hpxgroup"]) == {-1} and set(errors["outcome"]) == {"failed"}


def test_consumers_read_and_join(small_survey, lakehouse_root, instance):
    import duckdb
    from deltalake import DeltaTable

    keys = survey_keys(small_survey)[:2]
    _materialize(keys, make_resources(lakehouse_root, str(small_survey)), instance)
    lh = LakehouseResource(root=lakehouse_root)
    for name in ("targets", "spectra", "preprocessed_spectra"):
        assert pl.scan_delta(lh.table_uri(name)).select(pl.len()).collect().item() > 0
    ctx = pl.SQLContext(targets=lh.scan("targets"), pre=lh.scan("preprocessed_spectra"))
    sql = ctx.execute("SELECT t.spectype, count(*) AS n FROM targets t JOIN pre p "
                      "ON t.coadd_key = p.coadd_key AND t.targetid = p.targetid GROUP BY t.spectype").collect()
    con = duckdb.connect()
    con.register("targets", DeltaTable(lh.table_uri("targets")).to_pyarrow_dataset())
    con.register("pre", DeltaTable(lh.table_uri("preprocessed_spectra")).to_pyarrow_dataset())
    n_duck = con.execute("SELECT count(*) FROM targets t JOIN pre p USING (coadd_key, targetid)").fetchone()[0]
    assert sql["n"].sum() == n_duck == lh.read("preprocessed_spectra").height
