"""Tests for desi_assets.sources.keys: partition keys, file names, release paths, safe joins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desi_assets.sources.keys import (
    CoaddKey,
    InvalidPartitionKeyError,
    UnsafePathError,
    healpix_key,
    hpxgroup,
    is_valid_key,
    key_for_coadd_path,
    parse_coadd_filename,
    parse_key,
    redrock_name_for,
    relpath_for_healpix_key,
    relpath_for_tile,
    safe_join,
    tile_key,
)


@pytest.mark.parametrize("key,expected", [
    ("main-dark-10378", CoaddKey("healpix", "main", "dark", 10378)),
    ("sv1-bright-0", CoaddKey("healpix", "sv1", "bright", 0)),
    ("special-other-49151", CoaddKey("healpix", "special", "other", 49151)),
    ("cmx-backup-7", CoaddKey("healpix", "cmx", "backup", 7)),
    ("tile-80613-4", CoaddKey("tile", tileid=80613, petal=4)),
    ("tile-0-0", CoaddKey("tile", tileid=0, petal=0)),
])
def test_parse_valid(key, expected):
    k = parse_key(key)
    assert k == expected
    assert k.key == key == str(k)
    assert is_valid_key(key)


@pytest.mark.parametrize("key", [
    "", "main-dark", "main-dark-", "main-dark--1", "main-dark-49152", "main-dark-010378",
    "main-grey-10", "dr1-dark-10", "MAIN-dark-10", "main-dark-10 ", " main-dark-10", "main-dark-10/x",
    "main-dark-1e3", "tile-80613", "tile-80613-10", "tile--1-4", "tile-80613-4-extra", "../main-dark-10",
    "main-dark-10\n", "tile-x-1", "main_dark_10", "main-dark-١٢",
])
def test_parse_invalid(key):
    with pytest.raises(InvalidPartitionKeyError) as ei:
        parse_key(key)
    assert repr(key) in str(ei.value) and "expected" in str(ei.value) or "outside" in str(ei.value)
    assert not is_valid_key(key)
    assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("key,why", [("", "the key is empty"), ("   ", "the key is empty"),
                                     ("../../etc", "path separators or '..'"), ("main-dark-1/../2", "path separators")])
def test_junk_keys_are_refused_saying_why(key, why):
    with pytest.raises(InvalidPartitionKeyError, match="invalid partition key") as ei:
        parse_key(key)
    assert why in str(ei.value) and "expected" in str(ei.value)


def test_key_hpxgroup_is_the_one_answer_per_key():
    from desi_assets.sources.keys import TILE_HPXGROUP, key_hpxgroup

    assert key_hpxgroup("main-dark-10378") == hpxgroup(10378) == 103
    assert key_hpxgroup(parse_key("sv3-bright-99")) == 0
    assert key_hpxgroup("tile-80613-4") == key_hpxgroup("not a key") == TILE_HPXGROUP == -1


def test_parse_non_string():
    with pytest.raises(InvalidPartitionKeyError, match="string"):
        parse_key(10378)  # type: ignore[arg-type]


def test_builders_and_hpxgroup():
    assert healpix_key("main", "dark", 10378) == "main-dark-10378"
    assert tile_key(80613, 4) == "tile-80613-4"
    with pytest.raises(InvalidPartitionKeyError):
        healpix_key("main", "dark", 49152)
    assert hpxgroup(10378) == 103 and hpxgroup(99) == 0 and hpxgroup(49151) == 491
    assert parse_key("main-dark-27247").hpxgroup == 272
    assert parse_key("tile-1-1").hpxgroup is None


@pytest.mark.parametrize("path,key", [
    ("/x/healpix/main/dark/103/10378/coadd-main-dark-10378.fits", "main-dark-10378"),
    ("coadd-special-dark-27247.fits", "special-dark-27247"),
    (Path("tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits"), "tile-80613-4"),
    ("redrock-4-80613-thru20210324.fits", "tile-80613-4"),
])
def test_key_for_coadd_path(path, key):
    assert key_for_coadd_path(path) == key


@pytest.mark.parametrize("name", [
    "test_coadd.fits", "coadd-main-dark-10378.fits.tmp", "spectra-main-dark-10378.fits",
    "coadd-main-dark-99999.fits", "coadd-4-80613-thru2021.fits", "coadd-main-dark-10378.fit",
])
def test_key_for_bad_names(name):
    with pytest.raises(InvalidPartitionKeyError):
        key_for_coadd_path(name)


def test_parse_coadd_filename_night():
    k, night = parse_coadd_filename("coadd-4-80613-thru20210324.fits")
    assert (k.key, night) == ("tile-80613-4", 20210324)
    assert parse_coadd_filename("coadd-main-dark-1.fits")[1] is None


def test_relpaths():
    assert relpath_for_healpix_key("main-dark-10378") == \
        "healpix/main/dark/103/10378/coadd-main-dark-10378.fits"
    assert relpath_for_healpix_key("sv3-dark-91") == "healpix/sv3/dark/0/91/coadd-sv3-dark-91.fits"
    assert relpath_for_tile(80613, 4, 20210324) == \
        "tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits"
    with pytest.raises(InvalidPartitionKeyError):
        relpath_for_healpix_key("tile-80613-4")
    with pytest.raises(InvalidPartitionKeyError):
        relpath_for_healpix_key("../../etc/passwd")
    assert redrock_name_for("coadd-main-dark-5.fits") == "redrock-main-dark-5.fits"
    with pytest.raises(InvalidPartitionKeyError):
        redrock_name_for("spectra-main-dark-5.fits")


def test_relpath_roundtrip():
    for key in ("main-dark-10378", "special-bright-0", "sv2-other-49151"):
        rel = relpath_for_healpix_key(key)
        assert key_for_coadd_path(rel) == key
        assert int(rel.split("/")[3]) == hpxgroup(parse_key(key).healpix)


def test_safe_join_ok(tmp_path):
    assert safe_join(tmp_path, "a/b/c.fits") == (tmp_path / "a/b/c.fits").resolve()
    assert safe_join(str(tmp_path), "a/./b") == (tmp_path / "a/b").resolve()
    (tmp_path / "inside").mkdir()
    os.symlink(tmp_path / "inside", tmp_path / "link_in")
    assert safe_join(tmp_path, "link_in/x") == (tmp_path / "inside/x").resolve()


@pytest.mark.parametrize("rel", [
    "../x", "a/../../x", "a/..", "/etc/passwd", "..", "", "a\\..\\..\\x", "C:/Windows", "a/\x00b",
])
def test_safe_join_rejects(tmp_path, rel):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path / "root", rel)


def test_safe_join_rejects_symlink_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "evil")
    with pytest.raises(UnsafePathError, match="outside root"):
        safe_join(root, "evil/secret.fits")
    assert isinstance(UnsafePathError("x"), ValueError)
