"""The catalog join (any subset of layers), primary flag, quality flags, and every GE gate on a corrupted partition."""

import polars as pl
import pytest

from desi_assets.storage import catalog as cat
from desi_assets.storage import synthetic_catalog as sc
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import CATALOG, CATALOG_COLUMNS


@pytest.fixture
def lake(tmp_path):
    return LakehouseResource(root=str(tmp_path / "lake"))


def test_join_with_missing_layers_names_their_columns(lake):
    keys = sc.write_synthetic(lake, [1000], per_pixel=15, layers=("spectral_indices",), spectra=False)
    j = cat.join_partitions(lake, keys)
    assert j.layers_present == ["spectral_indices"]
    assert set(j.layers_missing) == {"anomaly_scores", "kinematics_and_lines", "stellar_populations", "cosmic_web"}
    assert "logmass_p50" in j.missing_columns["stellar_populations"]
    assert "web_class" in j.missing_columns["cosmic_web"]
    assert j.missing_columns["embeddings"] == ["embedding_model_version"]
    rows = cat.to_catalog_rows(j)
    assert rows.height == 15 and rows["dn4000"].null_count() == 0
    cov = j.coverage()
    assert cov["spectral_indices"] == 1.0 and cov["cosmic_web"] == 0.0
    # absent layers: their flag bits are set, present ones are not
    flags = rows["catalog_flags"].to_list()
    assert all(f & cat.CatalogFlag.WEB_NOT_OK and not f & cat.CatalogFlag.INDICES_NOT_OK for f in flags)
    lake.write_partitions("catalog", rows, keys)  # conforms to the registered schema (absent columns null)
    back = lake.read("catalog")
    assert back.columns == CATALOG.schema.names and back["web_class"].null_count() == 15


def test_join_with_only_targets(lake):
    keys = sc.write_synthetic(lake, [1001], per_pixel=5, layers=(), spectra=False)
    j = cat.join_partitions(lake, keys)
    assert j.layers_present == [] and cat.to_catalog_rows(j).height == 5


def test_every_catalog_column_is_documented_with_a_unit_key():
    for f in CATALOG.schema:
        if f.name in CATALOG_COLUMNS:
            assert f.metadata[b"doc"] and b"unit" in f.metadata, f.name
    assert CATALOG.schema.field("ra").metadata[b"unit"] == b"deg"
    assert CATALOG.schema.field("vdisp").metadata[b"unit"] == b"km/s"


def test_primary_prefers_low_zwarn_then_high_snr():
    df = pl.DataFrame({"targetid": [7, 7, 7, 8], "coadd_key": ["a", "b", "c", "a"], "zwarn": [4, 0, 0, 0],
                       "snr_median": [50.0, 2.0, 3.0, 1.0]})
    out = cat.with_primary(df, df.head(0)).sort(["targetid", "coadd_key"])
    assert out["primary"].to_list() == [False, False, True, True]
    assert out["n_coadds"].to_list() == [3, 3, 3, 1]


def test_primary_sees_coadds_in_other_partitions(lake):
    sc.write_synthetic(lake, [1000], per_pixel=4, layers=(), spectra=False)
    other = sc.target_rows(1000, 4).with_columns(coadd_key=pl.lit("sv3-dark-1000"), zwarn=pl.lit(0, pl.Int64),
                                                median_coadd_snr_b=pl.lit(99.0), median_coadd_snr_r=pl.lit(99.0),
                                                median_coadd_snr_z=pl.lit(99.0))
    lake.write_partitions("targets", other, ["sv3-dark-1000"])
    rows = cat.to_catalog_rows(cat.join_partitions(lake, ["main-dark-1000"]))
    assert not rows["primary"].any() and (rows["n_coadds"] == 2).all()


@pytest.fixture(scope="module")
def good_rows(tmp_path_factory):
    lake = LakehouseResource(root=str(tmp_path_factory.mktemp("gates") / "lake"))
    keys = sc.write_synthetic(lake, [1500], per_pixel=30, spectra=False)
    rows = cat.to_catalog_rows(cat.join_partitions(lake, keys))
    return rows.with_columns(logmass_p16=pl.lit(9.8), logmass_p50=pl.lit(10.0), logmass_p84=pl.lit(10.3))


def _gates(rows, n_targets=None):
    return {o.gate: o for o in cat.evaluate_gates(rows, rows.height if n_targets is None else n_targets,
                                                  cat.GateLimits())}


def test_clean_partition_passes_every_gate(good_rows):
    res = _gates(good_rows)
    assert set(res) == set(cat.GATES) and all(o.passed for o in res.values()), {g: o.failures for g, o in res.items()}


CORRUPTIONS = {
    "catalog_keys": lambda d: pl.concat([d, d.head(1)]),
    "catalog_coordinates": lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(95.0)
                                                    .otherwise(pl.col("dec")).alias("dec")),
    "catalog_percentiles_ordered": lambda d: d.with_columns(logmass_p16=pl.lit(10.5)),
    "catalog_physical_ranges": lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(700.0)
                                                        .otherwise(pl.col("vdisp")).alias("vdisp")),
    "catalog_null_fractions": lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(None)
                                                       .otherwise(pl.col("z")).alias("z")),
}


@pytest.mark.parametrize("gate", list(CORRUPTIONS))
def test_each_gate_stops_its_corrupted_partition(good_rows, gate):
    bad = CORRUPTIONS[gate](good_rows)
    res = _gates(bad, n_targets=bad.height)
    assert not res[gate].passed
    assert res[gate].failures


def test_physical_range_gate_catches_dn4000_logmass_and_web_class(good_rows):
    for corrupt in (good_rows.with_columns(dn4000=pl.lit(3.5)), good_rows.with_columns(logmass_p50=pl.lit(14.0),
                                                                                        logmass_p84=pl.lit(14.5)),
                    good_rows.with_columns(web_class=pl.lit(5, pl.Int8))):
        assert not _gates(corrupt)["catalog_physical_ranges"].passed


def test_a_few_noisy_outliers_pass_but_are_flagged(good_rows):
    one = good_rows.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(3.4).otherwise(pl.col("dn4000"))
                                 .alias("dn4000"))  # 1 of 30 = 3% <= 5%
    res = _gates(one)["catalog_physical_ranges"]
    assert res.passed and res.statistics["out_of_range_dn4000"] == pytest.approx(1 / 30)
    flagged = cat.with_flags(one, 0.5, 1.0)["catalog_flags"].to_list()
    assert flagged[0] & cat.CatalogFlag.OUT_OF_PHYSICAL_RANGE and not flagged[1] & cat.CatalogFlag.OUT_OF_PHYSICAL_RANGE


def test_a_small_partition_may_have_two_outliers_but_not_three(good_rows):
    small = good_rows.head(8)
    for n_bad, ok in ((1, True), (2, True), (3, False)):
        rows = small.with_columns(pl.when(pl.int_range(pl.len()) < n_bad).then(3.4).otherwise(pl.col("dn4000"))
                                  .alias("dn4000"))
        assert _gates(rows, n_targets=rows.height)["catalog_physical_ranges"].passed is ok, n_bad


def test_row_count_gate_stops_a_partition_that_lost_rows(good_rows):
    res = _gates(good_rows.head(good_rows.height - 2), n_targets=good_rows.height)
    assert not res["catalog_row_count"].passed
    assert res["catalog_row_count"].statistics == {"rows": good_rows.height - 2, "targets": good_rows.height}
