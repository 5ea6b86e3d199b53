"""Tests for desi_assets.sources.reader: real DESI files of many shapes, bad input, LSF, speed."""

from __future__ import annotations

import shutil
from pathlib import Path

import healpy
import numpy as np
import polars as pl
import pytest
from astropy.io import fits

from desi_assets.science.wavelength import ARMS
from desi_assets.storage.ingest import spectra_frame
from desi_assets.sources.model import (
    DesiFileError,
    MissingHDUError,
    QualityFlag,
    ShapeMismatchError,
    TruncatedFileError,
    WavelengthGridError,
)
from desi_assets.sources.reader import (
    TARGET_SCHEMA,
    lsf_sigma_from_resolution,
    lsf_sigma_per_target,
    nominal_lsf_sigma,
    read_coadd,
)

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "desi-real"
if not REAL.is_dir():  # worktrees elsewhere: fall back to the shared checkout
    REAL = Path("/work/shared/data/desi-real")
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/desi-real not present")

IRON = "iron/tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits"
LOA = "loa/healpix/special/dark/272/27247/coadd-special-dark-27247.fits"
F26065 = "fuji/healpix/sv3/dark/260/26065/coadd-sv3-dark-26065.fits"
F169 = "fuji/tiles/cumulative/169/20210419/coadd-5-169-thru20210419.fits"
F9144 = "fuji/healpix/sv3/dark/91/9144/coadd-sv3-dark-9144.fits"
F80693_1 = "fuji/tiles/cumulative/80693/20210204/coadd-1-80693-thru20210204.fits"
F80693_2 = "fuji/tiles/cumulative/80693/20210204/coadd-2-80693-thru20210204.fits"
EVEREST = "everest/tiles/80605/test_coadd.fits"
CAT_HPX = "catalogs/QSO_cat_fuji_dark_healpix.fits.gz"
CAT_TILE = "catalogs/QSO_cat_fuji_dark_tile.fits.gz"

F = QualityFlag


# ----------------------------------------------------------------------------- synthetic files


def gaussian_resolution(n: int, npix: int, sigma_pix, ndiag: int = 11) -> np.ndarray:
    """(n, ndiag, npix) float32 resolution data of a point-sampled Gaussian, columns normalised."""
    sigma_pix = np.broadcast_to(np.asarray(sigma_pix, dtype=np.float64), (npix,))
    offsets = ndiag // 2 - np.arange(ndiag)
    k = np.exp(-0.5 * (offsets[:, None] / sigma_pix[None, :]) ** 2)
    k /= k.sum(axis=0, keepdims=True)
    return np.broadcast_to(k.astype(np.float32), (n, ndiag, npix)).copy()


def write_synthetic_coadd(
    path: Path,
    n: int = 20,
    seed: int = 0,
    sigma_pix=1.1,
    with_resolution: bool = True,
    with_scores: bool = False,
    targetids=None,
    drop: tuple[str, ...] = (),
    survey: str = "main",
    program: str = "dark",
    healpix: int = 10378,
) -> Path:
    """Write a small DESI-data-model healpix coadd (big-endian, uint32 MASK via BZERO) for tests."""
    rng = np.random.default_rng(seed)
    ra0, dec0 = healpy.pix2ang(64, healpix, nest=True, lonlat=True)
    hdus = [fits.PrimaryHDU()]
    ph = hdus[0].header
    ph["SURVEY"], ph["PROGRAM"], ph["HPXPIXEL"] = survey, program, healpix
    ph["HPXNSIDE"], ph["HPXNEST"], ph["SPGRP"] = 64, True, "healpix"
    tid = np.arange(1, n + 1, dtype=np.int64) + 39_600_000_000_000_000 if targetids is None else np.asarray(targetids)
    fm = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=tid),
        fits.Column("TARGET_RA", "D", array=np.full(n, ra0) + rng.normal(0, 0.01, n)),
        fits.Column("TARGET_DEC", "D", array=np.full(n, dec0) + rng.normal(0, 0.01, n)),
        fits.Column("COADD_FIBERSTATUS", "J", array=np.zeros(n, np.int32)),
        fits.Column("OBJTYPE", "3A", array=np.array(["TGT"] * n)),
        fits.Column("DESI_TARGET", "K", array=np.ones(n, np.int64)),
        fits.Column("COADD_NUMEXP", "I", array=np.full(n, 2, np.int16)),
        fits.Column("COADD_EXPTIME", "E", array=np.full(n, 1000.0, np.float32)),
    ], name="FIBERMAP")
    hdus.append(fm)
    ef = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.repeat(tid, 2)),
        fits.Column("NIGHT", "J", array=np.tile([20210101, 20210105], n)),
        fits.Column("MJD", "D", array=np.tile([59215.1, 59219.2], n)),
        fits.Column("TILEID", "J", array=np.tile([1000, 1001], n)),
        fits.Column("PETAL_LOC", "I", array=np.tile([3, 4], n)),
        fits.Column("FIBER", "J", array=np.tile([1500, 2000], n)),
    ], name="EXP_FIBERMAP")
    hdus.append(ef)
    for a, arm in ARMS.items():
        A = a.upper()
        npix = arm.npix
        hdus.append(fits.ImageHDU(arm.wavelength(), name=f"{A}_WAVELENGTH"))
        flux = (rng.normal(1.0, 0.1, (n, npix))).astype(np.float32)
        hdus.append(fits.ImageHDU(flux, name=f"{A}_FLUX"))
        hdus.append(fits.ImageHDU(np.full((n, npix), 100.0, np.float32), name=f"{A}_IVAR"))
        mask = np.zeros((n, npix), dtype=np.uint32)
        mask[:, :5] = 1 << 31  # exercise the unsigned convention
        hdus.append(fits.ImageHDU(mask, name=f"{A}_MASK"))
        if with_resolution:
            hdus.append(fits.ImageHDU(gaussian_resolution(n, npix, sigma_pix), name=f"{A}_RESOLUTION"))
    if with_scores:
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column("TARGETID", "K", array=tid)]
            + [fits.Column(f"MEDIAN_COADD_SNR_{A}", "E", array=np.full(n, 7.5, np.float32)) for A in "BRZ"],
            name="SCORES"))
    hdul = fits.HDUList([h for h in hdus if h.name not in drop])
    path.parent.mkdir(parents=True, exist_ok=True)
    hdul.writeto(path, overwrite=True)
    return path


def edit_fits(src: Path, dst: Path, fn) -> Path:
    """Copy src to dst with fn(hdul) applied in memory."""
    with fits.open(src) as h:
        hl = fits.HDUList([hdu.copy() for hdu in h])
    fn(hl)
    dst.parent.mkdir(parents=True, exist_ok=True)
    hl.writeto(dst, overwrite=True)
    return dst


@pytest.fixture
def synth(tmp_path) -> Path:
    return write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits")


# ----------------------------------------------------------------------------- real files

# (relpath, expected: an exception type or a dict of expectations)
REAL_CASES = [
    (IRON, dict(kind="tile", key="tile-80613-4", n=1, survey=None, redrock=True,
                flags=[0], z=[0.3687], tileid=[80613], petal=[4], fiber=[2233], nexp=[30])),
    (LOA, dict(kind="healpix", key="special-dark-27247", n=1, survey="special", program="dark",
               healpix=27247, redrock=True, flags=[0], nexp=[20])),
    (F26065, dict(kind="healpix", key="sv3-dark-26065", n=5, survey="sv3", program="dark", healpix=26065,
                  redrock=False,
                  flags=[F.BAD_FIBERSTATUS | F.BAD_TARGETID | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                         F.BAD_FIBERSTATUS | F.BAD_TARGETID | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                         F.NO_REDSHIFT | F.NO_REDROCK,
                         F.BAD_FIBERSTATUS | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                         F.NO_REDSHIFT | F.NO_REDROCK])),
    (F169, dict(kind="tile", key="tile-169-5", n=5, survey=None, redrock=False,
                flags=[F.BAD_FIBERSTATUS | F.BAD_TARGETID | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                       F.BAD_FIBERSTATUS | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK,
                       F.BAD_FIBERSTATUS | F.BAD_TARGETID | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                       F.BAD_FIBERSTATUS | F.BAD_TARGETID | F.NO_DATA | F.ALL_ZERO_FLUX | F.NO_REDSHIFT | F.NO_REDROCK | F.NOT_TARGET,
                       F.NO_REDSHIFT | F.NO_REDROCK],
                tileid=[169] * 5, petal=[5] * 5, fiber=[2500, 2501, 2502, 2503, 2504], nexp=[2] * 5)),
    (F9144, dict(kind="healpix", key="sv3-dark-9144", n=2, survey="sv3", program="dark", healpix=9144,
                 redrock=False, flags=[F.NO_REDSHIFT | F.NO_REDROCK] * 2, coords_null=True)),
    (F80693_1, dict(kind="tile", key="tile-80693-1", n=5, survey=None, redrock=False,
                    flags=[F.NO_REDSHIFT | F.NO_REDROCK] * 5, tileid=[80693] * 5, petal=[1] * 5)),
    (F80693_2, dict(kind="tile", key="tile-80693-2", n=5, survey=None, redrock=False,
                    flags=[F.NO_REDSHIFT | F.NO_REDROCK] * 5, tileid=[80693] * 5, petal=[2] * 5)),
    (EVEREST, MissingHDUError),
    (CAT_HPX, MissingHDUError),
    (CAT_TILE, MissingHDUError),
]


def test_real_cases_cover_every_coadd_file():
    """Every coadd-*.fits / test_coadd.fits in desi-real has an expectation spelled out below."""
    if not REAL.is_dir():
        pytest.skip("no desi-real")
    found = {str(p.relative_to(REAL)) for p in REAL.rglob("coadd-*.fits")} | {EVEREST}
    assert found <= {c[0] for c in REAL_CASES}, found - {c[0] for c in REAL_CASES}


@needs_real
@pytest.mark.parametrize("rel,expected", REAL_CASES, ids=[c[0].split("/")[-1] for c in REAL_CASES])
def test_real_file(rel, expected):
    path = REAL / rel
    if isinstance(expected, type):
        with pytest.raises(expected) as ei:
            read_coadd(path)
        assert str(path) in str(ei.value)
        if expected is MissingHDUError:
            assert ei.value.hdu == "FIBERMAP" and "FIBERMAP" in str(ei.value)
        return
    c = read_coadd(path)
    t = c.targets
    assert c.kind == expected["kind"]
    assert c.coadd_key == expected["key"]
    assert c.nspec == expected["n"] == t.height
    assert c.survey == expected["survey"]
    if "program" in expected:
        assert c.program == expected["program"]
    assert c.healpix == expected.get("healpix")
    assert (c.redrock_path is not None) == expected["redrock"]
    assert ("REDROCK" in c.missing) != expected["redrock"]
    # schema is fixed
    assert dict(t.schema) == TARGET_SCHEMA
    # arms: standard grids, shapes, dtypes
    assert set(c.arms) == {"b", "r", "z"}
    for a, ad in c.arms.items():
        assert np.allclose(ad.wave, ARMS[a].wavelength())
        assert ad.flux.shape == ad.ivar.shape == ad.mask.shape == (c.nspec, ARMS[a].npix)
        assert ad.flux.dtype == np.float32 and ad.ivar.dtype == np.float32 and ad.mask.dtype == np.int32
        assert ad.flux.dtype.isnative and ad.ivar.dtype.isnative and ad.mask.dtype.isnative
        assert ad.lsf_sigma.shape == (c.nspec, ARMS[a].npix) and ad.lsf_sigma.dtype == np.float32
        assert ad.lsf_rows_sampled >= 1
        assert np.all((ad.lsf_sigma > 0.4) & (ad.lsf_sigma < 1.2))  # DESI LSF sigma ~0.5-1 Å
    assert t["quality_flags"].to_list() == [int(v) for v in expected["flags"]]
    assert t["quality_reason"].to_list() == [QualityFlag.describe(int(v)) for v in expected["flags"]]
    if "z" in expected:
        assert t["z"].to_list() == pytest.approx(expected["z"], abs=1e-4)
    for col in ("tileid", "fiber", "nexp"):
        if col in expected:
            assert t[col].to_list() == expected[col]
    if "petal" in expected:
        assert t["petal_loc"].to_list() == expected["petal"]
    if expected.get("coords_null"):
        assert t["target_ra"].null_count() == c.nspec
        assert t["healpix"].to_list() == [expected["healpix"]] * c.nspec
    else:
        ra, dec = t["target_ra"].to_numpy(), t["target_dec"].to_numpy()
        pix = healpy.ang2pix(64, ra, dec, nest=True, lonlat=True)
        if c.kind == "healpix":
            assert t["healpix"].to_list() == [c.healpix] * c.nspec
            assert np.all(pix == c.healpix)
        else:
            assert t["healpix"].to_list() == pix.tolist()
    assert t["masked_frac"].is_between(0, 1).all()


@needs_real
def test_iron_matches_direct_astropy_read():
    path = REAL / IRON
    c = read_coadd(path)
    with fits.open(path) as h:
        for a in "brz":
            A = a.upper()
            ad = c.arms[a]
            np.testing.assert_array_equal(ad.wave, h[f"{A}_WAVELENGTH"].data)
            np.testing.assert_array_equal(ad.flux, h[f"{A}_FLUX"].data)
            np.testing.assert_array_equal(ad.ivar, h[f"{A}_IVAR"].data)
            np.testing.assert_array_equal(ad.mask, h[f"{A}_MASK"].data)
        fm = h["FIBERMAP"].data
        assert c.targets["targetid"].to_list() == fm["TARGETID"].tolist()
        assert c.targets["target_ra"].to_list() == fm["TARGET_RA"].tolist()
        assert c.targets["coadd_exptime"].to_list() == pytest.approx(fm["COADD_EXPTIME"].tolist())
        # SV1 file: targeting bits come from the SV1_ columns
        assert c.targets["bgs_target"].to_list() == fm["SV1_BGS_TARGET"].tolist()
        assert c.targets["median_coadd_snr_r"].to_list() == pytest.approx(h["SCORES"].data["MEDIAN_COADD_SNR_R"].tolist())
    with fits.open(REAL / IRON.replace("coadd-", "redrock-")) as r:
        zs = r["REDSHIFTS"].data
        assert c.targets["z"].to_list() == zs["Z"].tolist()
        assert c.targets["zerr"].to_list() == zs["ZERR"].tolist()
        assert c.targets["spectype"].to_list() == [s.strip() for s in zs["SPECTYPE"]]
        assert c.targets["npixels"].to_list() == zs["NPIXELS"].tolist()
    assert c.targets["z"][0] == pytest.approx(0.3687, abs=1e-4)


@needs_real
def test_loa_header_pixel_matches_ang2pix():
    c = read_coadd(REAL / LOA)
    with fits.open(REAL / LOA) as h:
        assert h[0].header["HPXPIXEL"] == 27247
    row = c.targets.row(0, named=True)
    assert healpy.ang2pix(64, row["target_ra"], row["target_dec"], nest=True, lonlat=True) == 27247
    assert row["healpix"] == 27247 and not c.warnings


@needs_real
def test_redrock_none_and_explicit(tmp_path):
    c = read_coadd(REAL / IRON, redrock_path=None)
    assert c.redrock_path is None and c.targets["z"].null_count() == 1
    assert c.targets["quality_flags"][0] & F.NO_REDSHIFT
    # explicit redrock from elsewhere
    rr = REAL / IRON.replace("coadd-", "redrock-")
    c2 = read_coadd(REAL / IRON, redrock_path=rr)
    assert c2.targets["z"][0] == pytest.approx(0.36874, abs=1e-5)
    with pytest.raises(FileNotFoundError):
        read_coadd(REAL / IRON, redrock_path=tmp_path / "nope.fits")


@needs_real
def test_redrock_matched_by_targetid_not_position(tmp_path):
    src = REAL / IRON
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    rr = REAL / IRON.replace("coadd-", "redrock-")

    def add_rows(hl):
        zs = hl["REDSHIFTS"].data
        new = fits.BinTableHDU.from_columns(zs.columns, nrows=3, name="REDSHIFTS")
        # row 0: a different target; row 1: ours; row 2: a duplicate of ours (ignored: first wins)
        for c in zs.columns.names:
            new.data[c][1] = zs[c][0]
            new.data[c][2] = zs[c][0]
            new.data[c][0] = zs[c][0]
        new.data["TARGETID"][0] = 123
        new.data["Z"][0] = 2.5
        new.data["Z"][2] = 9.9
        hl["REDSHIFTS"] = new

    edit_fits(rr, tmp_path / rr.name, add_rows)
    c = read_coadd(dst)
    assert c.targets["z"].to_list() == pytest.approx([0.36874], abs=1e-5)
    assert any("repeated TARGETIDs" in w for w in c.warnings)


# ----------------------------------------------------------------------------- bad input


@needs_real
def test_truncated_file(tmp_path):
    src = REAL / LOA
    data = src.read_bytes()
    for cut in (len(data) // 2, len(data) - 5000, 3000):
        bad = tmp_path / f"cut{cut}" / src.name
        bad.parent.mkdir()
        bad.write_bytes(data[:cut])
        with pytest.raises(TruncatedFileError) as ei:
            read_coadd(bad)
        assert str(bad) in str(ei.value)


def test_truncated_synthetic_within_flux(tmp_path, synth):
    data = synth.read_bytes()
    with fits.open(synth) as h:
        loc = h.fileinfo(h.index_of("R_FLUX"))["datLoc"]
    bad = tmp_path / "cut" / synth.name
    bad.parent.mkdir()
    bad.write_bytes(data[: loc + 100])
    with pytest.raises(TruncatedFileError, match="truncated"):
        read_coadd(bad)


@pytest.mark.parametrize("content", [b"", b"hello world, not FITS at all" * 10, b"\x00" * 2880])
def test_not_fits(tmp_path, content):
    p = tmp_path / "coadd-main-dark-5.fits"
    p.write_bytes(content)
    with pytest.raises(TruncatedFileError, match="not a FITS file") as ei:
        read_coadd(p)
    assert str(p) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_coadd(tmp_path / "coadd-main-dark-5.fits")


@pytest.mark.parametrize("hdu", ["B_FLUX", "R_IVAR", "Z_WAVELENGTH", "FIBERMAP"])
def test_missing_required_hdu(tmp_path, hdu):
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", drop=(hdu,))
    with pytest.raises(MissingHDUError) as ei:
        read_coadd(p)
    assert ei.value.hdu == hdu
    assert hdu in str(ei.value) and str(p) in str(ei.value)


@needs_real
def test_real_file_with_b_flux_removed(tmp_path):
    dst = edit_fits(REAL / LOA, tmp_path / Path(LOA).name, lambda hl: hl.pop(hl.index_of("B_FLUX")))
    with pytest.raises(MissingHDUError, match="B_FLUX"):
        read_coadd(dst)


def test_missing_targetid_column(tmp_path, synth):
    def strip(hl):
        fm = hl["FIBERMAP"]
        cols = [c for c in fm.columns if c.name != "TARGETID"]
        hl["FIBERMAP"] = fits.BinTableHDU.from_columns(cols, name="FIBERMAP")

    dst = edit_fits(synth, tmp_path / "x" / synth.name, strip)
    with pytest.raises(MissingHDUError, match="TARGETID"):
        read_coadd(dst)


def test_optional_hdus_missing(tmp_path):
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", drop=("B_MASK", "EXP_FIBERMAP"),
                              with_resolution=False)
    c = read_coadd(p)
    assert {"B_MASK", "B_RESOLUTION", "R_RESOLUTION", "Z_RESOLUTION", "EXP_FIBERMAP", "REDROCK"} <= set(c.missing)
    assert not c.arms["b"].mask.any() and c.arms["r"].mask.any()
    assert c.arms["b"].lsf_rows_sampled == 0
    ad = c.arms["b"]
    np.testing.assert_allclose(ad.lsf_sigma, np.broadcast_to(nominal_lsf_sigma("b", ad.wave), ad.flux.shape))
    assert c.targets["nexp"].null_count() == c.nspec


def test_missing_arm_allowed_when_not_required(tmp_path):
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits",
                              drop=("Z_WAVELENGTH", "Z_FLUX", "Z_IVAR", "Z_MASK", "Z_RESOLUTION"))
    with pytest.raises(MissingHDUError, match="Z_WAVELENGTH"):
        read_coadd(p)
    c = read_coadd(p, require_all_arms=False)
    assert set(c.arms) == {"b", "r"} and "Z_ARM" in c.missing
    assert (c.targets["quality_flags"] & int(F.MISSING_ARM) != 0).all()


@pytest.mark.parametrize("what", ["ivar_shape", "flux_rows", "wave_len", "mask_shape"])
def test_shape_mismatch(tmp_path, synth, what):
    def fn(hl):
        if what == "ivar_shape":
            hl["B_IVAR"].data = hl["B_IVAR"].data[:, :-1].copy()
        elif what == "flux_rows":
            hl["R_FLUX"].data = hl["R_FLUX"].data[:-1].copy()
            hl["R_IVAR"].data = hl["R_IVAR"].data[:-1].copy()
        elif what == "wave_len":
            hl["Z_WAVELENGTH"].data = hl["Z_WAVELENGTH"].data[:-3].copy()
        else:
            hl["B_MASK"].data = hl["B_MASK"].data[:, :10].copy()

    dst = edit_fits(synth, tmp_path / what / synth.name, fn)
    with pytest.raises(ShapeMismatchError) as ei:
        read_coadd(dst)
    assert str(dst) in str(ei.value)


def test_nan_and_zero_rows_flagged(tmp_path, synth):
    def fn(hl):
        hl["B_FLUX"].data[1, 100] = np.nan
        hl["Z_FLUX"].data[2, :] = np.inf
        for A in "BRZ":
            hl[f"{A}_FLUX"].data[3] = 0.0
            hl[f"{A}_FLUX"].data[4] = 0.0
            hl[f"{A}_IVAR"].data[4] = 0.0

    c = read_coadd(edit_fits(synth, tmp_path / "e" / synth.name, fn))
    q = c.targets["quality_flags"].to_list()
    assert q[0] == F.NO_REDSHIFT | F.NO_REDROCK  # no redrock file beside it
    assert q[1] & F.NONFINITE_FLUX and not q[1] & F.ALL_ZERO_FLUX
    assert q[2] & F.NONFINITE_FLUX
    assert q[3] & F.ALL_ZERO_FLUX and not q[3] & F.NO_DATA
    assert q[4] & F.ALL_ZERO_FLUX and q[4] & F.NO_DATA
    mf = c.targets["masked_frac"].to_list()
    assert mf[4] == 1.0 and mf[0] == pytest.approx(15 / 7958, rel=1e-6)  # 5 masked pixels per arm
    assert mf[1] > mf[0]
    assert "NONFINITE_FLUX" in c.targets["quality_reason"][1]


def test_duplicate_targetids_flagged_no_row_lost(tmp_path):
    tid = np.array([5, 6, 5, 7, -1, -1, 8], dtype=np.int64)
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", n=7, targetids=tid)
    c = read_coadd(p)
    assert c.nspec == 7 and c.targets["targetid"].to_list() == tid.tolist()
    dup = [(v & F.DUPLICATE_TARGETID) != 0 for v in c.targets["quality_flags"].to_list()]
    assert dup == [True, False, True, False, True, True, False]
    bad = [(v & F.BAD_TARGETID) != 0 for v in c.targets["quality_flags"].to_list()]
    assert bad == [False, False, False, False, True, True, False]
    # exposure summary joined per TARGETID, duplicates included
    assert c.targets["nexp"].to_list() == [4, 2, 4, 2, 4, 4, 2]


def test_synthetic_exposure_summary_and_snr(tmp_path):
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", n=3, with_scores=True)
    c = read_coadd(p)
    r = c.targets.row(0, named=True)
    assert (r["nexp"], r["first_night"], r["last_night"]) == (2, 20210101, 20210105)
    assert r["min_mjd"] == pytest.approx(59215.1) and r["max_mjd"] == pytest.approx(59219.2)
    assert r["mean_mjd"] == pytest.approx(59217.15)
    assert (r["fiber"], r["petal_loc"], r["tileid"]) == (1500, 3, 1000)
    assert r["median_coadd_snr_b"] == pytest.approx(7.5)  # from SCORES
    assert r["coadd_numexp"] == 2 and r["healpix"] == 10378
    # without SCORES: computed flux*sqrt(ivar) median over good pixels, ~1.0*10
    c2 = read_coadd(write_synthetic_coadd(tmp_path / "b" / "coadd-main-dark-10378.fits", n=3))
    assert c2.targets["median_coadd_snr_b"].to_numpy() == pytest.approx(10.0, rel=0.02)


def test_header_only_key_for_odd_filename(tmp_path):
    p = write_synthetic_coadd(tmp_path / "weird.fits", n=2, survey="sv1", program="bright", healpix=123)
    c = read_coadd(p)
    assert c.coadd_key == "sv1-bright-123" and c.kind == "healpix"


def test_odd_filename_without_header_keys(tmp_path, synth):
    def fn(hl):
        for k in ("HPXPIXEL", "SURVEY", "PROGRAM", "SPGRP"):
            del hl[0].header[k]

    dst = edit_fits(synth, tmp_path / "odd.fits", fn)
    with pytest.raises(DesiFileError, match="partition key"):
        read_coadd(dst)


# ----------------------------------------------------------------------------- LSF


def test_lsf_moments_exact():
    for s in (0.7, 1.0, 1.3):
        res = gaussian_resolution(1, 50, s)
        sig = lsf_sigma_from_resolution(res)[0]
        # point-sampled Gaussian truncated at ±5 px: variance equals sigma² to <1e-3
        assert np.allclose(sig[10:40], s * 0.8, rtol=2e-3)


def test_lsf_recovered_from_file(tmp_path):
    # sigma varying along the arm, like DESI's: 0.9 → 1.3 pixels
    sig_pix = {a: np.linspace(0.9, 1.3, arm.npix) for a, arm in ARMS.items()}
    tmp = tmp_path / "coadd-main-dark-10378.fits"
    n = 40
    rng = np.random.default_rng(3)
    write_synthetic_coadd(tmp, n=n, sigma_pix=1.0)

    def fn(hl):
        for a, arm in ARMS.items():
            A = a.upper()
            res = gaussian_resolution(n, arm.npix, sig_pix[a])
            res *= rng.uniform(0.98, 1.02, (n, 1, 1)).astype(np.float32)  # normalisation noise: no effect
            res[::7] = 0.0  # some empty rows must be skipped
            hl[f"{A}_RESOLUTION"].data = res

    dst = edit_fits(tmp, tmp_path / "l" / tmp.name, fn)
    c = read_coadd(dst, lsf_per_target=False)
    for a, ad in c.arms.items():
        assert 1 <= ad.lsf_rows_sampled <= 16
        truth = sig_pix[a] * 0.8
        inner = slice(6, -6)  # columns whose ±5 diagonals fall inside the arm
        rel = np.abs(ad.lsf_sigma[:, inner] / truth[inner] - 1)
        assert rel.max() < 0.02, (a, rel.max())
        # edges are filled, finite and positive
        assert np.isfinite(ad.lsf_sigma).all() and (ad.lsf_sigma > 0).all()


def test_lsf_per_target_from_each_row(tmp_path):
    """Each fibre its own LSF width (±10 %): recovered row by row; rows without RESOLUTION get the file's LSF."""
    n = 30
    tmp = tmp_path / "coadd-main-dark-10378.fits"
    write_synthetic_coadd(tmp, n=n, sigma_pix=1.0)
    scale = np.random.default_rng(5).uniform(0.9, 1.1, n)
    empty = [4, 17]

    def fn(hl):
        for a, arm in ARMS.items():
            base = np.linspace(0.9, 1.3, arm.npix)
            res = np.concatenate([gaussian_resolution(1, arm.npix, base * s) for s in scale])
            res[empty] = 0.0
            hl[f"{a.upper()}_RESOLUTION"].data = res

    path = edit_fits(tmp, tmp_path / "p" / tmp.name, fn)
    c, per_file = read_coadd(path), read_coadd(path, lsf_per_target=False)
    inner = slice(6, -6)
    ok = np.setdiff1d(np.arange(n), empty)
    for a, ad in c.arms.items():
        assert ad.lsf_rows_sampled == n - len(empty)
        truth = np.linspace(0.9, 1.3, ARMS[a].npix)[None, :] * scale[:, None] * 0.8
        rel = np.abs(ad.lsf_sigma[ok][:, inner] / truth[ok][:, inner] - 1)
        assert rel.max() < 0.01, (a, rel.max())
        med = np.median(ad.lsf_sigma[ok], axis=0)
        np.testing.assert_allclose(ad.lsf_sigma[empty], np.broadcast_to(med, (len(empty), med.size)), rtol=1e-5)
        # one LSF per file misses each fibre's width by up to the spread of the scales
        assert np.abs(per_file.arms[a].lsf_sigma[ok][:, inner] / truth[ok][:, inner] - 1).max() > 0.05
    np.testing.assert_allclose(lsf_sigma_per_target(fits.getdata(path, "B_RESOLUTION")), c.arms["b"].lsf_sigma,
                               rtol=1e-6)
    # the spectra table carries each target's binned LSF
    rows = spectra_frame(c)
    lsf = np.array(rows.column("lsf_sigma").to_pylist())
    assert lsf.shape == (n, 496)
    assert np.corrcoef(lsf[ok, 10], scale[ok])[0, 1] > 0.99


def test_lsf_rows_zero_uses_nominal(synth):
    c = read_coadd(synth, lsf_rows=0)
    assert c.arms["r"].lsf_rows_sampled == 0
    ad = c.arms["r"]
    np.testing.assert_allclose(ad.lsf_sigma, np.broadcast_to(nominal_lsf_sigma("r", ad.wave), ad.flux.shape))


def test_nominal_lsf_sane():
    for a, arm in ARMS.items():
        s = nominal_lsf_sigma(a, arm.wavelength())
        assert s.dtype == np.float32 and np.all((s > 0.5) & (s < 1.0))


# ----------------------------------------------------------------------------- speed


def test_500_spectra_per_target_and_sampled_lsf_agree(tmp_path):
    """500 DESI-sized spectra with one RESOLUTION for all: the per-target LSF equals the sampled file LSF.

    Reader speed is measured by bench/readers.py, not asserted here.
    """
    p = write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", n=500, with_scores=True)
    per_target, sampled = read_coadd(p), read_coadd(p, lsf_per_target=False)
    assert per_target.nspec == sampled.nspec == 500
    for a in ARMS:
        assert per_target.arms[a].lsf_rows_sampled == 500 and sampled.arms[a].lsf_rows_sampled == 16
        np.testing.assert_allclose(per_target.arms[a].lsf_sigma, sampled.arms[a].lsf_sigma, rtol=1e-5)


def test_schema_dtypes_polars(synth):
    c = read_coadd(synth)
    assert list(c.targets.columns) == list(TARGET_SCHEMA)
    assert c.targets["healpix"].dtype == pl.Int64


def test_zero_spectra_file(tmp_path):
    c = read_coadd(write_synthetic_coadd(tmp_path / "coadd-main-dark-10378.fits", n=0))
    assert c.nspec == 0 and dict(c.targets.schema) == TARGET_SCHEMA
    assert c.arms["z"].flux.shape == (0, ARMS["z"].npix)
    assert np.isfinite(c.arms["z"].lsf_sigma).all()


def test_directory_is_not_fits(tmp_path):
    d = tmp_path / "coadd-main-dark-1.fits"
    d.mkdir()
    with pytest.raises(TruncatedFileError):
        read_coadd(d)


def test_binary_tables_read_without_astropy_columns_match_astropy(tmp_path):
    """_BinTable (the fast path for FIBERMAP/REDSHIFTS) returns what astropy returns, column by column."""
    from desi_assets.sources.reader import _Fits, _BinTable

    n = 7
    cols = fits.ColDefs([
        fits.Column("TARGETID", "K", array=np.arange(n, dtype=np.int64) + 2**40),
        fits.Column("FIBERSTATUS", "J", array=np.arange(n, dtype=np.int32)),
        fits.Column("UBITS", "J", bzero=2**31, array=np.array([0, 1, 2**31, 2**32 - 1, 5, 6, 7], dtype=np.uint32)),
        fits.Column("SPECTYPE", "6A", array=np.array(["GALAXY", "QSO", "STAR", "", "QSO", "STAR", "GALAXY"])),
        fits.Column("COEFF", "3E", array=np.arange(3 * n, dtype=np.float32).reshape(n, 3)),
        fits.Column("ok", "L", array=np.array([True, False] * 3 + [True])),
        fits.Column("SCALED", "I", array=np.arange(n, dtype=np.int16)),
    ])
    path = tmp_path / "t.fits"
    hdu = fits.BinTableHDU.from_columns(cols, name="REDSHIFTS")
    hdu.header["TSCAL7"], hdu.header["TZERO7"] = 0.5, 10.0  # raw 0..6 -> 10..13
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    f = _Fits(path)
    try:
        fast = f.data("REDSHIFTS")
        assert isinstance(fast, _BinTable) and len(fast) == n
        ref = fits.getdata(path, "REDSHIFTS")
        assert fast.columns.names == list(ref.columns.names)
        for name in ref.columns.names:
            got = np.asarray(fast[name])
            got = np.char.decode(got, "ascii") if got.dtype.kind == "S" else got  # astropy decodes text
            assert np.array_equal(got, np.asarray(ref[name])), name
        assert np.allclose(fast["SCALED"], 10 + 0.5 * np.arange(n))
        assert fast["OK"].dtype == bool and fast["ubits"].dtype == np.uint32  # case-insensitive names
    finally:
        f.close()


# ----------------------------------------------------------------------------- grids and redrock files


def test_arm_with_a_non_desi_pixel_count_is_refused(tmp_path, synth):
    def fn(hl):  # B arm with 2,000 pixels, every B array consistent (only the grid is wrong)
        hl["B_WAVELENGTH"].data = hl["B_WAVELENGTH"].data[:2000].copy()
        for what in ("FLUX", "IVAR", "MASK"):
            hl[f"B_{what}"].data = hl[f"B_{what}"].data[:, :2000].copy()
        hl["B_RESOLUTION"].data = hl["B_RESOLUTION"].data[:, :, :2000].copy()

    dst = edit_fits(synth, tmp_path / "cut" / synth.name, fn)
    with pytest.raises(WavelengthGridError, match="B_WAVELENGTH has 2000 pixels, DESI's b arm has 2751") as ei:
        read_coadd(dst)
    assert str(dst) in str(ei.value) and isinstance(ei.value, ShapeMismatchError)


def test_wavelength_in_nm_is_flagged_unusable_with_a_warning(tmp_path, synth):
    def fn(hl):
        hl["R_WAVELENGTH"].data = hl["R_WAVELENGTH"].data / 10.0

    c = read_coadd(edit_fits(synth, tmp_path / "nm" / synth.name, fn))
    assert all(q & F.NONSTANDARD_WAVELENGTH for q in c.targets["quality_flags"].to_list())
    assert F.NONSTANDARD_WAVELENGTH & QualityFlag.unusable_mask()
    assert any("R_WAVELENGTH is not the DESI grid" in w and "nm instead of" in w for w in c.warnings)
    assert read_coadd(synth).targets["quality_flags"].to_numpy().max() & F.NONSTANDARD_WAVELENGTH == 0


def test_redrock_that_matches_no_target_flags_every_row(tmp_path, synth):
    rr = tmp_path / "rr" / "redrock-main-dark-10378.fits"  # another pixel's redshifts: no TARGETID in common
    rr.parent.mkdir()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.arange(1, 21, dtype=np.int64)),
        fits.Column("Z", "D", array=np.full(20, 0.5)), fits.Column("ZWARN", "K", array=np.zeros(20, np.int64)),
    ], name="REDSHIFTS")]).writeto(rr)
    c = read_coadd(synth, rr)
    assert all(q & F.NO_REDROCK and q & F.NO_REDSHIFT for q in c.targets["quality_flags"].to_list())
    assert any("matches none of the 20 TARGETIDs" in w for w in c.warnings)
    assert F.NO_REDROCK & QualityFlag.unusable_mask() and F.NO_REDROCK & QualityFlag.file_level_mask()
