"""Our reader against DESI's own: `read_coadd` returns what `desispec.io.read_spectra` returns, file by file.

desispec (0.70.0, the `reference` extra) is the reference reader of the DESI data model. For every real
file in shared/data/desi-real that it reads, our flux, ivar, mask, wavelength and TARGETIDs must be the
same values. Where it returns 0 spectra without a word (the everest file without a FIBERMAP), ours must
do better: a typed error that names the file and the missing HDU.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from desi_assets.science.wavelength import ARM_NAMES
from desi_assets.sources.model import MissingHDUError
from desi_assets.sources.reader import read_coadd
from desi_assets_tests.conftest import DESI_REAL

os.environ.setdefault("DESI_LOGLEVEL", "WARNING")  # desiutil's logger: no INFO lines per file
desispec_io = pytest.importorskip("desispec.io", reason="desispec is not installed (pip install -e '.[reference]')")

pytestmark = pytest.mark.skipif(not DESI_REAL.is_dir(), reason="shared/data/desi-real not present")

#: Every spectra-bearing FITS file (coadd-* and spectra-*), redrock files excluded.
REAL_FILES = sorted(p.relative_to(DESI_REAL).as_posix() for p in DESI_REAL.rglob("*.fits")
                    if not p.name.startswith("redrock")) if DESI_REAL.is_dir() else []
NO_FIBERMAP = "everest/tiles/80605/test_coadd.fits"


def _reference(rel: str):
    """desispec's Spectra of one real file (its warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return desispec_io.read_spectra(str(DESI_REAL / rel))


@pytest.mark.parametrize("rel", [r for r in REAL_FILES if r != NO_FIBERMAP])
def test_same_arrays_and_targetids_as_desispec(rel):
    ref = _reference(rel)
    assert ref.num_spectra() > 0, f"desispec read no spectra from {rel}"
    ours = read_coadd(DESI_REAL / rel)
    assert ours.nspec == ref.num_spectra()
    np.testing.assert_array_equal(ours.targets["targetid"].to_numpy(), np.asarray(ref.fibermap["TARGETID"]))
    assert sorted(ours.arms) == sorted(ref.bands) == sorted(ARM_NAMES)
    for arm in ref.bands:
        got = ours.arms[arm]
        np.testing.assert_array_equal(got.wave, ref.wave[arm], err_msg=f"{rel} {arm} wavelength")
        np.testing.assert_array_equal(got.flux, ref.flux[arm], err_msg=f"{rel} {arm} flux")
        np.testing.assert_array_equal(got.ivar, ref.ivar[arm], err_msg=f"{rel} {arm} ivar")
        np.testing.assert_array_equal(got.mask, ref.mask[arm], err_msg=f"{rel} {arm} mask")


def test_every_real_file_is_compared():
    assert len(REAL_FILES) >= 9 and NO_FIBERMAP in REAL_FILES  # the table in shared/data/README.md


def test_no_fibermap_gets_a_named_error_where_desispec_returns_nothing():
    ref = _reference(NO_FIBERMAP)
    assert ref.num_spectra() == 0  # desispec: 0 spectra, no error (25 are in the file)
    with pytest.raises(MissingHDUError, match="FIBERMAP") as exc:
        read_coadd(DESI_REAL / NO_FIBERMAP)
    assert exc.value.hdu == "FIBERMAP" and Path(exc.value.path).name == "test_coadd.fits"
