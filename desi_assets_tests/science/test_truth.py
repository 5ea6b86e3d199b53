import polars as pl

from desi_assets.science.truth import read_truth_columns


def test_reads_every_truth_file_with_the_columns_each_has(tmp_path):
    (tmp_path / "a").mkdir()
    pl.DataFrame({"targetid": [1, 2], "logmass": [10.0, 11.0], "x": [0, 0]}).write_parquet(tmp_path / "a/truth-1.parquet")
    pl.DataFrame({"targetid": [3], "sfh_kind": ["frosted"]}).write_parquet(tmp_path / "truth-2.parquet")
    pl.DataFrame({"targetid": [9]}).write_parquet(tmp_path / "other.parquet")
    t = read_truth_columns(tmp_path, ["targetid", "logmass", "sfh_kind"])
    assert sorted(t["targetid"].to_list()) == [1, 2, 3] and set(t.columns) == {"targetid", "logmass", "sfh_kind"}
    assert read_truth_columns(tmp_path / "missing") is None and read_truth_columns(None) is None


def test_float_column_is_nan_for_nulls_and_missing_columns():
    import numpy as np

    from desi_assets.science.truth import float_column

    df = pl.DataFrame({"a": [1, None, 3]})
    assert np.array_equal(float_column(df, "a"), [1.0, np.nan, 3.0], equal_nan=True)
    assert np.isnan(float_column(df, "b")).all() and float_column(df, "b").shape == (3,)
