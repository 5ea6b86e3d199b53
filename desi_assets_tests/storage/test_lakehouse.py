"""LakehouseResource: roots Polars cannot read are refused, the default root is read lazily, empty tables."""

import polars as pl
import pytest

from desi_assets.storage.lakehouse import LakehouseResource, check_root, default_root


@pytest.mark.parametrize("bad", ["with space", "per%cent", "hash#tag", "ünïcode"])
def test_a_root_polars_cannot_read_is_refused_with_a_clear_message(tmp_path, bad):
    with pytest.raises(ValueError, match="pola-rs/polars#20944"):
        LakehouseResource(root=str(tmp_path / bad / "lakehouse"))
    with pytest.raises(ValueError, match="without spaces"):
        check_root(f"s3://bucket/{bad}")


def test_the_refused_characters_really_break_polars(tmp_path):
    """Guards the rule above: if Polars learns to read such paths, this fails and the check can go."""
    from deltalake import write_deltalake

    uri = str(tmp_path / "with space" / "t")
    write_deltalake(uri, pl.DataFrame({"x": [1]}).to_arrow())
    with pytest.raises(Exception):  # noqa: B017 - FileNotFoundError on the %20-encoded path today
        pl.scan_delta(uri).collect()


def test_an_ordinary_root_is_accepted_and_tables_read_back(tmp_path):
    lh = LakehouseResource(root=str(tmp_path / "lake-house_1.0"))
    lh.ensure("ingest_errors")
    assert lh.exists("ingest_errors") and lh.read("ingest_errors").height == 0 and lh.row_count("ingest_errors") == 0
    lh.ensure("ingest_errors")  # idempotent
    assert lh.version("ingest_errors") == 0


def test_default_root_is_read_when_used_not_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("DESI_ARD_LAKEHOUSE", str(tmp_path / "from-env"))
    assert default_root() == str(tmp_path / "from-env")
    assert LakehouseResource().root == str(tmp_path / "from-env")
    monkeypatch.delenv("DESI_ARD_LAKEHOUSE")
    assert LakehouseResource().root == "lakehouse"
