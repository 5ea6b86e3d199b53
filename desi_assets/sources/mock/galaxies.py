"""Mock galaxy spectra: BC03 continua (science.stellar_populations.sps) plus nebular lines.

Nebular lines are Gaussians with fluxes tied to the SFR (Kennicutt & Evans 2012) and
line ratios with scatter; gas attenuation is A_V/0.44.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from desi_assets.science.indices import dn4000, hdelta_a
from desi_assets.science.stellar_populations.sps import (  # noqa: F401  (re-exported for the mock)
    C_KMS, DLNL, L_SUN, REST_MAX, REST_MIN, ZMET_GRID, SSPGrid, bc03_path, broaden_loglam, calzetti_k,
    galaxy_properties, load_ssp_grid, properties_from_weights, rest_continuum, rest_continuum_from_weights,
    rest_slice, rest_wave, sfh_weights, sfh_weights_frosted, sfh_weights_quenched, zmet_weights,
)

#: Truth `sfh_kind` of mock galaxies: delayed-τ (the fits' prior family), delayed-τ with a recent burst on
#: top ("frosted"), delayed-τ truncated to zero SFR ("quenched"), and young constant-SFR starbursts.
SFH_KINDS = ("delayed_tau", "frosted", "quenched", "starburst")

#: Nebular lines: name → (vacuum rest λ Å, DESI-REFERENCE §4).
LINES: dict[str, float] = {
    "oii_3726": 3727.092, "oii_3729": 3729.875, "neiii_3869": 3869.86, "hdelta": 4102.892,
    "hgamma": 4341.692, "hbeta": 4862.71, "oiii_4959": 4960.295, "oiii_5007": 5008.240,
    "oi_6300": 6302.046, "nii_6548": 6549.861, "halpha": 6564.60, "nii_6584": 6585.273,
    "sii_6716": 6718.294, "sii_6731": 6732.674,
}
LINE_NAMES = tuple(LINES)
#: Ceilings of the rest-frame EW (Å) of ordinary (non-anomalous) mock galaxies: starbursts reach them;
#: the injected extreme emitters (anomalies.py, rest [OIII] EW ≥ 300 Å added) lie clearly beyond.
EW_MAX_NORMAL = {"halpha": 650.0, "oiii_5007": 150.0}
LINE_WAVES = np.array([LINES[k] for k in LINE_NAMES])


def restframe_indices(tstart_gyr, tau_gyr, zmet, av, vdisp) -> tuple[np.ndarray, np.ndarray]:
    """Dn4000 and HδA (Å) of the noiseless, emission-line-free rest-frame model (vacuum bands)."""
    wr = (3700.0, 4300.0)
    w = rest_wave()[rest_slice(wr)]
    sel = (w > 3700) & (w < 4300)
    spec = rest_continuum(tstart_gyr, tau_gyr, zmet, av, vdisp, wave_range=wr)[:, sel]
    return dn4000(w[sel], spec), hdelta_a(w[sel], spec)


def age_weights_for(sfh_kind, tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac, quench_age_gyr) -> np.ndarray:
    """Mass formed per SSP age bin (n, 221) of mock galaxies from their truth columns (Gyr; NaN where unused)."""
    kind = np.asarray(sfh_kind, dtype=object)
    tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac, quench_age_gyr = (
        np.atleast_1d(np.asarray(a, np.float64))
        for a in (tstart_gyr, tau_gyr, burst_age_gyr, burst_mass_frac, quench_age_gyr))
    bad = ~np.isin(kind, SFH_KINDS)
    if bad.any():
        raise ValueError(f"unknown sfh_kind {sorted(set(kind[bad].tolist()))}; known: {SFH_KINDS}")
    w = sfh_weights(tstart_gyr, tau_gyr)
    f = np.flatnonzero(kind == "frosted")
    if f.size:
        w[f] = sfh_weights_frosted(tstart_gyr[f], tau_gyr[f], burst_age_gyr[f], burst_mass_frac[f])
    q = np.flatnonzero(kind == "quenched")
    if q.size:
        w[q] = sfh_weights_quenched(tstart_gyr[q], tau_gyr[q], quench_age_gyr[q])
    return w


def restframe_indices_from_weights(age_weights, zmet, av, vdisp) -> tuple[np.ndarray, np.ndarray]:
    """Dn4000 and HδA (Å) of the noiseless, line-free rest-frame model of any SFH (n, 221) (vacuum bands)."""
    wr = (3700.0, 4300.0)
    w = rest_wave()[rest_slice(wr)]
    sel = (w > 3700) & (w < 4300)
    spec = rest_continuum_from_weights(age_weights, zmet, av, vdisp, wave_range=wr)[:, sel]
    return dn4000(w[sel], spec), hdelta_a(w[sel], spec)


def draw_line_ratios(rng: np.random.Generator, n: int) -> np.ndarray:
    """Intrinsic (unattenuated) line fluxes relative to Hα (n, nlines), star-forming ratios with scatter."""
    r = np.zeros((n, len(LINE_NAMES)))
    col = {k: i for i, k in enumerate(LINE_NAMES)}
    oiii_hb = 10 ** rng.uniform(-0.6, 0.6, n)
    nii_ha = 10 ** rng.uniform(-1.3, -0.35, n)
    oii_ha = 10 ** rng.normal(-0.05, 0.15, n)
    oii_ratio = rng.uniform(0.6, 1.0, n)  # [OII] 3726/3729 flux ratio
    r[:, col["halpha"]] = 1.0
    r[:, col["hbeta"]] = 1 / 2.86
    r[:, col["hgamma"]] = 0.468 / 2.86
    r[:, col["hdelta"]] = 0.259 / 2.86
    r[:, col["oiii_5007"]] = oiii_hb / 2.86
    r[:, col["oiii_4959"]] = oiii_hb / 2.86 / 2.98
    r[:, col["nii_6584"]] = nii_ha
    r[:, col["nii_6548"]] = nii_ha / 3.05
    r[:, col["oii_3726"]] = oii_ha * oii_ratio / (1 + oii_ratio)
    r[:, col["oii_3729"]] = oii_ha / (1 + oii_ratio)
    r[:, col["neiii_3869"]] = 0.05 * oiii_hb / 2.86
    sii = 10 ** rng.uniform(-0.8, -0.45, n)
    sii_ratio = rng.uniform(1.1, 1.45, n)  # 6716/6731
    r[:, col["sii_6716"]] = sii * sii_ratio / (1 + sii_ratio)
    r[:, col["sii_6731"]] = sii / (1 + sii_ratio)
    r[:, col["oi_6300"]] = 10 ** rng.uniform(-1.7, -1.2, n)
    return r


def add_gaussian_lines(flux: np.ndarray, wave: np.ndarray, centers: np.ndarray, sigmas: np.ndarray,
                       fluxes: np.ndarray, halfwidth_pix: int = 40) -> None:
    """Add pixel-integrated Gaussians in place: centers/sigmas (Å, observed), fluxes (flux·Å), all (n, L)."""
    n, L = centers.shape
    step = wave[1] - wave[0]
    i0 = np.rint((centers - wave[0]) / step).astype(np.int64)
    off = np.arange(-halfwidth_pix, halfwidth_pix + 1)
    idx = i0[..., None] + off  # (n, L, K)
    ok = (idx >= 0) & (idx < len(wave)) & (fluxes[..., None] != 0)
    idxc = np.clip(idx, 0, len(wave) - 1)
    lo = (wave[idxc] - 0.5 * step - centers[..., None]) / (np.sqrt(2) * sigmas[..., None])
    hi = (wave[idxc] + 0.5 * step - centers[..., None]) / (np.sqrt(2) * sigmas[..., None])
    val = 0.5 * (erf(hi) - erf(lo)) * fluxes[..., None] / step
    rows = np.broadcast_to(np.arange(n)[:, None, None], idx.shape)
    np.add.at(flux, (rows[ok], idxc[ok]), val[ok])
