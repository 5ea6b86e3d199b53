"""`desi-ard fit-spectrum` on real spectra: SDSS NGC 3522 (ships in the ppxf wheel), the iron DESI galaxy, a stack."""

import json
from importlib import resources

import pytest

from desi_assets.cli import main
from desi_assets.science.physics.fit import LINE_NAMES
from desi_assets.science.physics.indices import INDEX_NAMES
from desi_assets.storage.tables import KINEMATICS_AND_LINES, PHYSICS_INDEX_DOCS, PHYSICS_LINE_DOCS, SPECTRAL_INDICES
from desi_assets_tests.conftest import DESI_REAL, SHARED_DATA

NGC3522 = resources.files("ppxf") / "spectra" / "NGC3522_SDSS_DR18.fits"
IRON = DESI_REAL / "iron/tiles/cumulative/80613/20210324/coadd-4-80613-thru20210324.fits"


def _run(capsys, *argv) -> dict:
    rc = main(["fit-spectrum", *map(str, argv)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out["kinematics"]["status"]
    return out


def test_table_registry_matches_the_science_names():
    assert tuple(PHYSICS_INDEX_DOCS) == INDEX_NAMES and tuple(PHYSICS_LINE_DOCS) == LINE_NAMES
    assert {f"{n}_err" for n in INDEX_NAMES} <= set(SPECTRAL_INDICES.schema.names)
    assert {f"ew_{n}_err" for n in LINE_NAMES} <= set(KINEMATICS_AND_LINES.schema.names)


def test_sdss_ngc3522(capsys):
    out = _run(capsys, NGC3522)
    k = out["kinematics"]
    assert out["instrument"] == "SDSS" and k["status"] == "ok"
    # SDSS: 97.4 ± 2.4 km/s (test_ngc3522_sigma_matches_sdss pins it)
    assert 85 < k["vdisp"] < 130 and 0 < k["vdisp_err"] < 10
    assert 1.7 < out["indices"]["dn4000"]["value"] < 2.2


@pytest.mark.skipif(not IRON.exists(), reason="shared real data absent")
def test_iron_desi_galaxy_gas(capsys):
    out = _run(capsys, IRON)
    k, lines = out["kinematics"], out["lines"]
    assert out["instrument"] == "DESI" and out["z"] == pytest.approx(0.3687, abs=1e-3)
    assert 80 < k["gas_sigma"] < 100  # STACK-NOTES: 87.5-90.8 km/s
    assert lines["halpha"]["flux"] / lines["halpha"]["flux_err"] > 50 and lines["halpha"]["ew"] > 50
    assert out["indices"]["dn4000"]["flag"] == "ok"


@pytest.mark.skipif(not (SHARED_DATA / "desi-stacks/stack-LRG.fits").exists(), reason="shared real data absent")
def test_lrg_stack_rest_frame(capsys):
    out = _run(capsys, SHARED_DATA / "desi-stacks/stack-LRG.fits", "--z", "0")
    assert out["instrument"] == "stack" and 180 < out["kinematics"]["vdisp"] < 280
    assert 1.5 < out["indices"]["dn4000"]["value"] < 1.9


def test_unknown_file_is_a_clear_error(tmp_path):
    from astropy.io import fits

    p = tmp_path / "x.fits"
    fits.HDUList([fits.PrimaryHDU()]).writeto(p)
    with pytest.raises(ValueError, match="not a DESI coadd"):
        main(["fit-spectrum", str(p)])


def test_ngc3522_sigma_matches_sdss():
    """NGC 3522: σ* within 2σ of SDSS's 97.4 ± 2.4 km/s with BC03 (2.5 Å), and the sharp C3K set agrees to 5% (the
    resolution bookkeeping is exact, so the templates' own resolution drops out). Needs WDISP rescaled to the sky
    lines' width (~1.18; with WDISP as stated both sets read ~107-111)."""
    from desi_assets.fit_spectrum import fit_one

    out = fit_one(NGC3522)
    bc03, c3k = out["kinematics"], fit_one(NGC3522, templates="c3k")["kinematics"]
    assert bc03["status"] == c3k["status"] == "ok"
    assert 1.1 < out["lsf_scale"] < 1.3
    assert abs(bc03["vdisp"] - 97.4) < 2 * 2.4 and 0 < bc03["vdisp_err"] < 4
    assert c3k["vdisp"] == pytest.approx(bc03["vdisp"], rel=0.05)
