"""The mock DESI survey: patch of nside-64 pixels, targets in a 3-D web, spectra, files on disk.

Per pixel: tracer counts (program mix), positions drawn from the cosmic-web pool with the
tracer's n(z) imposed, anomaly hosts, noiseless observed-frame models (BC03 galaxies,
power-law QSOs, Planck+lines stars) scaled to a magnitude and the fibre aperture, then per
arm: resolution matrix, measured DESI noise and sky-line residuals, masks, instrumental anomalies,
redrock rows whose DELTACHI2/ZWARN follow S/N; then bad fibres (no data) inserted in every file.
Truth line fluxes are the in-fibre, dust-attenuated observed fluxes (1e-17 erg/s/cm²);
logmass is the total surviving stellar mass (log M☉), sfr the 100-Myr mean (M☉/yr), both from the galaxy's
actual SFH weights (sfh_kind: delayed_tau, frosted, quenched, starburst); phot_g … phot_w2 are the noiseless
total AB fluxes (nanomaggies) of the same SED through the DECam/WISE curves, behind FIBERMAP FLUX_* (which add
Legacy-Surveys-DR9-like noise, datamodel.PHOT_DEPTH_5SIGMA).
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import healpy as hp
import numpy as np
import polars as pl

from desi_assets.science.stellar_populations import photometry as PH
from desi_assets.science.wavelength import ARMS
from desi_assets.sources.mock import anomalies as A
from desi_assets.sources.mock import galaxies as G
from desi_assets.sources.mock import instrument as I
from desi_assets.sources.mock import quasars as Q
from desi_assets.sources.mock import stars as S
from desi_assets.sources.mock.structure import (COSMO, CosmicWeb, comoving_distance, luminosity_distance_cm,
                                                radec_to_unit, xyz_to_radecz)

NSIDE = 64
PATCH_CENTER = (150.1, 2.2)  # deg (COSMOS field, inside the DESI footprint)
C_KMS = 299792.458
_AGE_Z = np.linspace(0, 5, 501)
_AGE_T = COSMO.age(_AGE_Z).value


@dataclass(frozen=True)
class MockSurveyConfig:
    """Mock survey settings: pixel count, seed, per-pixel size scale, release cadence (s), anomaly rate, file sizes.

    Spectra per file are lognormal with a spread of `count_spread` (e-folds; DR1's counts span orders of
    magnitude), rescaled so the mean is `mean_spectra` × spectra_scale and clipped to `max_spectra`
    (memory: ~1.3 MB per spectrum while a file is simulated); `bad_fibre_fraction` of each file's rows
    are unassigned, stuck, broken or sky fibres without data (at least 2 per file). `frosted_fraction` and
    `quenched_fraction` of the BGS and LRG galaxies (starbursts excepted) get SFHs outside the delayed-τ family:
    an old population plus a recent burst of 0.5–5% of the mass, or a delayed-τ truncated 0.1–2 Gyr ago.
    """

    n_pixels: int = 12
    seed: int = 42
    spectra_scale: float = 1.0
    release_every: float | None = None
    anomaly_fraction: float = 0.015
    survey: str = "main"
    mean_spectra: float = 700.0
    count_spread: float = 1.0
    max_spectra: int = 2000
    bad_fibre_fraction: float = 0.04
    frosted_fraction: float = 0.05
    quenched_fraction: float = 0.05


@dataclass
class PixelSimulation:
    """One simulated coadd in memory: targets, per-arm arrays, noiseless models, redrock rows and truth."""

    pixel: int
    program: str
    survey: str
    fibermap: dict[str, np.ndarray]
    exp_fibermap: dict[str, np.ndarray]
    arms: dict[str, dict[str, np.ndarray]]  # arm → wave, flux, ivar, mask, resolution
    noiseless: dict[str, np.ndarray]  # arm → model after resolution, before noise/instrument anomalies
    redshifts: dict[str, np.ndarray]
    tsnr2: dict[str, np.ndarray]
    truth: pl.DataFrame
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- patch and programs
def patch_pixels(n_pixels: int) -> np.ndarray:
    """Contiguous patch of nside-64 NESTED pixels grown breadth-first around PATCH_CENTER."""
    start = hp.ang2pix(NSIDE, *PATCH_CENTER, nest=True, lonlat=True)
    out, seen, queue = [], {start}, [start]
    c = radec_to_unit(np.array([PATCH_CENTER[0]]), np.array([PATCH_CENTER[1]]))[0]
    while len(out) < n_pixels:
        queue.sort(key=lambda p: -np.dot(hp.pix2vec(NSIDE, p, nest=True), c))
        p = queue.pop(0)
        out.append(int(p))
        for q in hp.get_all_neighbours(NSIDE, p, nest=True):
            if q >= 0 and q not in seen:
                seen.add(int(q))
                queue.append(int(q))
    return np.array(out, dtype=np.int64)


def pixel_programs(n_pixels: int, seed: int) -> list[str]:
    """Program of each pixel: mostly dark, ~25% bright, ≥1 backup for n ≥ 3 (seeded order)."""
    if n_pixels == 1:
        return ["dark"]
    nb = max(1, round(n_pixels / 12))
    nbr = max(1, round(0.25 * n_pixels)) if n_pixels >= 3 else 0
    progs = ["backup"] * nb + ["bright"] * nbr
    progs += ["dark"] * (n_pixels - len(progs))
    rng = np.random.default_rng([seed, 1])
    return [progs[i] for i in rng.permutation(n_pixels)]


def pixel_counts(cfg: MockSurveyConfig, programs: list[str]) -> np.ndarray:
    """Spectra per pixel (incl. bad fibres): heavy-tailed lognormal, mean cfg.mean_spectra × spectra_scale."""
    rng = np.random.default_rng([cfg.seed, 2])
    rel = {"dark": 1.0, "bright": 0.75, "backup": 0.45}
    raw = np.array([rel.get(p, 1.0) for p in programs]) * rng.lognormal(0.0, cfg.count_spread, len(programs))
    total = cfg.mean_spectra * len(programs) * cfg.spectra_scale
    hi = max(cfg.max_spectra * cfg.spectra_scale, 8)
    n = raw * total / raw.sum()
    for _ in range(4):  # clip the largest files, give their excess to the others
        n = np.clip(n, 8, hi)
        free = n < hi
        if not free.any() or n.sum() >= total * 0.999:
            break
        n[free] *= 1 + (total - n.sum()) / n[free].sum()
    return np.maximum(np.rint(np.minimum(n, hi)), 8).astype(np.int64)


# ---------------------------------------------------------------- 3-D structure and pool
_SHELLS_Z = np.array([0.005, 0.08, 0.16, 0.3, 0.5, 0.8, 1.1, 1.6, 2.2, 3.0, 4.2])


@functools.lru_cache(maxsize=4)
def _web_and_pool(seed: int, n_pixels: int):
    pix = patch_pixels(n_pixels)
    vec = np.array(hp.pix2vec(NSIDE, pix, nest=True)).T
    center = vec.mean(0)
    center /= np.linalg.norm(center)
    corners = np.concatenate([hp.boundaries(NSIDE, int(p), nest=True).T for p in pix])
    radius = np.degrees(np.arccos(np.clip(corners @ center, -1, 1)).max()) + 0.05
    cra, cdec = np.degrees(np.arctan2(center[1], center[0])) % 360, np.degrees(np.arcsin(center[2]))
    rng = np.random.default_rng([seed, 3])
    web = CosmicWeb.build(rng, cra, cdec, radius, zmax=_SHELLS_Z[-1] + 0.1)
    dedges = comoving_distance(_SHELLS_Z)
    pools = []
    for s in range(len(_SHELLS_Z) - 1):
        dlo, dhi = dedges[s], dedges[s + 1]
        want = 1600 * n_pixels
        got, xyzs = 0, []
        for _ in range(8):
            xyz, _comp = web.sample(rng, int(want * 2.2), dlo, dhi)
            d = np.linalg.norm(xyz, axis=1)
            ra, dec, z = xyz_to_radecz(xyz)
            p = hp.ang2pix(NSIDE, ra, dec, nest=True, lonlat=True)
            keep = np.isin(p, pix) & (d > dlo) & (d < dhi)
            xyzs.append(xyz[keep])
            got += keep.sum()
            if got >= want:
                break
        xyz = np.concatenate(xyzs)[:want]
        vol = (2 * np.pi * (1 - np.cos(np.radians(radius)))) / 3 * (dhi**3 - dlo**3)
        pools.append((xyz, np.full(len(xyz), len(xyz) / vol)))
    xyz = np.concatenate([p[0] for p in pools])
    dens = np.concatenate([p[1] for p in pools])
    ra, dec, z = xyz_to_radecz(xyz)
    p = hp.ang2pix(NSIDE, ra, dec, nest=True, lonlat=True)
    # sampling weight ∝ 1 / (pool density × dV/dz) so that tracer n(z) can be imposed
    dvdz = COSMO.differential_comoving_volume(np.clip(z, 1e-3, None)).value
    base = 1.0 / (dens * dvdz)
    return web, pix, {"xyz": xyz, "ra": ra, "dec": dec, "z": z, "pix": p, "base": base}


# ---------------------------------------------------------------- target populations
TRACER_MIX = {
    "dark": {"ELG": 0.57, "LRG": 0.21, "QSO": 0.08, "MWS": 0.14},
    "bright": {"BGS": 0.78, "MWS": 0.19, "QSO": 0.03},
    "backup": {"MWS": 0.88, "BGS": 0.08, "QSO": 0.04},
}


def tracer_nz(tracer: str, z: np.ndarray) -> np.ndarray:
    """Unnormalised n(z) of a tracer (DESI-like shapes)."""
    z = np.asarray(z)
    if tracer == "BGS":
        return np.where((z > 0.01) & (z < 0.6), z**2 * np.exp(-((z / 0.16) ** 1.6)), 0)
    if tracer == "LRG":
        return np.where((z > 0.4) & (z < 1.1), np.exp(-0.5 * ((z - 0.78) / 0.17) ** 2), 0)
    if tracer == "ELG":
        return np.where((z > 0.6) & (z < 1.6), np.exp(-0.5 * ((z - 1.05) / 0.28) ** 2) + 0.15, 0)
    if tracer == "QSO":
        # DESI QSO targets: broad peak near z ≈ 1.7 and the high-z tail (~6% above z = 3.3, to z ≈ 4.2)
        return np.where((z > 0.2) & (z < 4.3), np.exp(-0.5 * ((z - 1.7) / 0.72) ** 2)
                        + 0.14 * np.exp(-0.5 * ((z - 3.65) / 0.3) ** 2), 0)
    raise ValueError(tracer)


def _mag_draw(rng, n, lo, hi, slope):
    """Magnitudes with number counts ∝ 10^(slope·m) in [lo, hi]."""
    u = rng.uniform(size=n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _fnu_band(wave: np.ndarray, flux: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Mean F_ν (erg/s/cm²/Hz) in a top-hat band; flux in 1e-17 erg/s/cm²/Å."""
    m = (wave >= lo) & (wave <= hi)
    return (flux[:, m] * wave[m] ** 2).mean(1) * 1e-17 / 2.998e18


BANDS = {"g": (4000.0, 5500.0), "r": (5600.0, 6900.0), "z": (8400.0, 9800.0)}


def _scale_to_mag(wave, flux, mag, band):
    lo, hi = BANDS[band]
    f = _fnu_band(wave, flux, lo, hi)
    return 10 ** (-0.4 * (mag + 48.6)) / np.maximum(f, 1e-45)


def _interp_rows(rest_wave_log: np.ndarray, spec: np.ndarray, wave_obs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Sample each row of a log-λ rest spectrum at λ_obs/(1+z) (linear interpolation, vectorised)."""
    x = (np.log(wave_obs)[None, :] - np.log1p(z)[:, None] - np.log(rest_wave_log[0])) / G.DLNL
    i = np.clip(np.floor(x).astype(np.int64), 0, spec.shape[1] - 2)
    t = np.clip(x - i, 0, 1).astype(np.float32)
    a = np.take_along_axis(spec, i, axis=1)
    b = np.take_along_axis(spec, i + 1, axis=1)
    return a * (1 - t) + b * t


#: Fraction of the star-forming (blue) galaxies of a tracer that are young starbursts.
STARBURST_FRACTION = {"BGS": 0.2, "ELG": 0.2, "LRG": 0.0}


def _galaxy_params(rng, tracer, z):
    n = len(z)
    tmax = np.interp(z, _AGE_Z, _AGE_T) - 0.05
    red = {"LRG": np.ones(n, bool), "ELG": np.zeros(n, bool), "BGS": rng.uniform(size=n) < 0.4}[tracer]
    ts = np.where(red, rng.uniform(0.55, 0.98, n) * tmax, rng.uniform(0.15, 0.9, n) * tmax)
    if tracer == "ELG":
        ts = rng.uniform(0.3, 0.7, n) * tmax
    tau = np.where(red, rng.uniform(0.2, 1.2, n), np.exp(rng.uniform(np.log(1.5), np.log(15), n)))
    zmet = np.where(red, 10 ** rng.uniform(-0.1, 0.4, n), 10 ** rng.uniform(-0.7, 0.1, n))
    av = np.where(red, rng.uniform(0, 0.35, n), rng.uniform(0.1, 1.2, n))
    vdisp = np.where(red, rng.uniform(140, 350, n), rng.uniform(50, 150, n))
    gas = rng.uniform(30, 110, n)
    # young starbursts: the stars formed over the last 5 Myr–1 Gyr at a nearly constant rate (high sSFR,
    # Dn4000 ≈ 0.97–1.1, EW(Hα) of a few hundred Å), mostly metal-poor and not very dusty
    burst = ~red & (rng.uniform(size=n) < STARBURST_FRACTION[tracer])
    ts = np.where(burst, np.exp(rng.uniform(np.log(0.005), np.log(1.0), n)), ts)
    tau = np.where(burst, rng.uniform(5.0, 15.0, n), tau)
    zmet = np.where(burst, 10 ** rng.uniform(-0.7, -0.2, n), zmet)
    av = np.where(burst, rng.uniform(0.05, 0.6, n), av)
    vdisp = np.where(burst, rng.uniform(40, 90, n), vdisp)
    return dict(tstart_gyr=np.maximum(ts, 0.005), tau_gyr=tau, zmet_zsun=zmet, av=av, vdisp=vdisp,
                gas_sigma_kms=gas, red=red, burst=burst)


#: Tracers whose galaxies can be frosted or quenched (MockSurveyConfig.frosted_fraction / quenched_fraction).
SFH_VARIANT_TRACERS = ("BGS", "LRG")
#: Frosting bursts: lookback age log-uniform in BURST_AGE_GYR, mass fraction log-uniform in BURST_MASS_FRAC.
BURST_AGE_GYR = (0.01, 1.0)
BURST_MASS_FRAC = (0.005, 0.05)
#: Quenching: SFR set to zero over the last quench_age, log-uniform in QUENCH_AGE_GYR (at most 0.7 tstart).
QUENCH_AGE_GYR = (0.1, 2.0)


def _sfh_variants(rng, tracer, p, tmax, frosted_fraction, quenched_fraction):
    """Add sfh_kind, burst_age_gyr, burst_mass_frac, quench_age_gyr to galaxy parameters p (own Generator rng).

    Frosted galaxies have an old population (the red ranges of _galaxy_params, redrawn where the galaxy was
    blue) plus a burst; quenched ones keep their delayed-τ (τ ≥ 1.5 Gyr for red ones, so that the
    truncation matters) and stop forming stars quench_age ago. Every draw is made for every row.
    """
    n = len(tmax)
    u = rng.uniform(size=n)
    old = {"tstart_gyr": rng.uniform(0.55, 0.98, n) * tmax, "tau_gyr": rng.uniform(0.2, 1.2, n),
           "zmet_zsun": 10 ** rng.uniform(-0.1, 0.4, n), "av": rng.uniform(0, 0.35, n),
           "vdisp": rng.uniform(140, 350, n)}
    burst_age = np.exp(rng.uniform(*np.log(BURST_AGE_GYR), n))
    burst_frac = np.exp(rng.uniform(*np.log(BURST_MASS_FRAC), n))
    q_tau = rng.uniform(1.5, 5.0, n)
    q_age = np.exp(rng.uniform(*np.log(QUENCH_AGE_GYR), n))
    eligible = ~p["burst"] & (tracer in SFH_VARIANT_TRACERS)
    fro = eligible & (u < frosted_fraction)
    que = eligible & ~fro & (u < frosted_fraction + quenched_fraction)
    p = dict(p)
    for k, v in old.items():
        p[k] = np.where(fro & ~p["red"], v, p[k])
    p["tau_gyr"] = np.where(que & p["red"], np.maximum(p["tau_gyr"], q_tau), p["tau_gyr"])
    kind = np.where(p["burst"], "starburst", np.where(fro, "frosted", np.where(que, "quenched", "delayed_tau")))
    p["sfh_kind"] = kind.astype(object)
    p["burst_age_gyr"] = np.where(fro, burst_age, np.nan)
    p["burst_mass_frac"] = np.where(fro, burst_frac, np.nan)
    p["quench_age_gyr"] = np.where(que, np.minimum(q_age, 0.7 * p["tstart_gyr"]), np.nan)
    return p


def _rest_ew(obs, wave, centers, lflux, z):
    """Rest-frame EW (Å) of lines (n, L) against the model continuum obs; NaN where the line is off the grid."""
    step = wave[1] - wave[0]
    i = np.rint((centers - wave[0]) / step).astype(np.int64)
    on = (i >= 8) & (i < wave.size - 8)
    ic = np.clip(i, 8, wave.size - 9)
    rows = np.arange(len(obs))[:, None]
    cont = 0.5 * (obs[rows, ic - 8] + obs[rows, ic + 8])
    return np.where(on, lflux / np.maximum(cont, 1e-30) / (1 + z[:, None]), np.nan)


def _simulate_galaxies(rng, tracer, z, wave, rng_sfh=None, config: MockSurveyConfig = MockSurveyConfig()):
    """Observed-frame galaxy models (n, nwave) and truth columns for one tracer (SFH variants drawn from rng_sfh).

    Truth phot_g … phot_w2 are the total (not in-fibre) noiseless AB fluxes (nanomaggies) of the same SED
    through the DECam/WISE curves, nebular lines included; mag_norm is the continuum's magnitude in mag_band.
    """
    n = len(z)
    p = _galaxy_params(rng, tracer, z)
    rng_sfh = np.random.default_rng([config.seed, 14]) if rng_sfh is None else rng_sfh
    p = _sfh_variants(rng_sfh, tracer, p, np.interp(z, _AGE_Z, _AGE_T) - 0.05, config.frosted_fraction,
                      config.quenched_fraction)
    wa = G.age_weights_for(p["sfh_kind"], p["tstart_gyr"], p["tau_gyr"], p["burst_age_gyr"], p["burst_mass_frac"],
                           p["quench_age_gyr"])
    wr = (min(wave[0] / (1 + z.max()), 3700.0), max(wave[-1] / (1 + z.min()), 4300.0))
    rest = G.rest_continuum_from_weights(wa, p["zmet_zsun"], p["av"], p["vdisp"], wave_range=wr)
    rw = G.rest_wave()[G.rest_slice(wr)]
    sel = (rw > 3700) & (rw < 4300)
    dn = G.dn4000(rw[sel], rest[:, sel])
    hd = G.hdelta_a(rw[sel], rest[:, sel])
    props = G.properties_from_weights(wa, p["zmet_zsun"])
    dl = luminosity_distance_cm(z)
    per_msun = G.L_SUN / (4 * np.pi * dl**2 * (1 + z)) / 1e-17
    obs = _interp_rows(rw, rest, wave, z) * per_msun[:, None].astype(np.float32)
    # total photometry of the same SED per M☉ formed (native BC03, real curves): it sets the mass
    phot = PH.sed_band_fluxes(wa, p["zmet_zsun"], p["av"], z, per_msun)
    band, (lo, hi, slope) = {"BGS": ("r", (15.0, 19.5, 0.35)), "LRG": ("z", (18.6, 21.1, 0.3)),
                             "ELG": ("g", (21.6, 23.4, 0.3))}[tracer]
    mag = _mag_draw(rng, n, lo, hi, slope)
    mass = 10 ** (-0.4 * (mag - 22.5)) / np.maximum(phot[:, PH.BAND_NAMES.index(band.upper())], 1e-300)
    phot *= mass[:, None]
    obs = obs * mass[:, None].astype(np.float32)
    sfr = mass * props["sfr_per_msun"]
    # nebular lines (intrinsic Hα from SFR, Kennicutt & Evans 2012), attenuated with A_V/0.44
    boost = {"ELG": 2.5, "BGS": 1.0, "LRG": 0.4}[tracer]
    # young, metal-poor bursts emit more ionising photons per unit SFR than Kennicutt's 100-Myr calibration
    # assumes, and have high-excitation [OIII]/Hβ
    lha = sfr * 10**41.27 * boost * np.where(p["burst"], 1.5, 1.0)
    ratios = G.draw_line_ratios(rng, n)
    hi_ex = np.where(p["burst"], 10 ** rng.uniform(0.1, 0.5, n), 1.0)
    for name in ("oiii_5007", "oiii_4959", "neiii_3869"):
        ratios[:, G.LINE_NAMES.index(name)] *= hi_ex
    a_gas = p["av"][:, None] / 0.44 * G.calzetti_k(G.LINE_WAVES)[None, :] / 4.05
    lflux = (lha / (4 * np.pi * dl**2) / 1e-17)[:, None] * ratios * 10 ** (-0.4 * a_gas)
    centers = G.LINE_WAVES[None, :] * (1 + z[:, None])
    sig = centers * p["gas_sigma_kms"][:, None] / C_KMS
    obs = obs.astype(np.float64)
    # ordinary galaxies stay below the ceilings of G.EW_MAX_NORMAL (rest Å); extreme emitters lie beyond
    ew = _rest_ew(obs, wave, centers, lflux, z)
    k_ha, k_o3 = G.LINE_NAMES.index("halpha"), G.LINE_NAMES.index("oiii_5007")
    over = np.nan_to_num(ew[:, k_ha] / G.EW_MAX_NORMAL["halpha"], nan=0.0)
    lflux /= np.maximum(over, 1.0)[:, None]
    ew = _rest_ew(obs, wave, centers, lflux, z)
    over = np.maximum(np.nan_to_num(ew[:, k_o3] / G.EW_MAX_NORMAL["oiii_5007"], nan=0.0), 1.0)
    for name in ("oiii_5007", "oiii_4959", "neiii_3869"):
        lflux[:, G.LINE_NAMES.index(name)] /= over
    ew = _rest_ew(obs, wave, centers, lflux, z)
    G.add_gaussian_lines(obs, wave, centers, sig, lflux)
    phot += PH.line_band_fluxes(centers, lflux)
    truth = {
        "logmass": np.log10(mass * props["live_frac"]), "sfr": sfr, "age_gyr": props["age_mw_gyr"],
        "tstart_gyr": p["tstart_gyr"], "tau_gyr": p["tau_gyr"], "zmet_zsun": p["zmet_zsun"], "av": p["av"],
        "vdisp": p["vdisp"], "gas_sigma_kms": p["gas_sigma_kms"], "dn4000": dn, "hdelta_a": hd,
        "mag_norm": mag, "mag_band": np.full(n, band), "is_starburst": p["burst"].astype(np.float64),
        "ew_halpha": ew[:, k_ha], "ew_oiii_5007": ew[:, k_o3], "sfh_kind": p["sfh_kind"],
        "burst_age_gyr": p["burst_age_gyr"], "burst_mass_frac": p["burst_mass_frac"],
        "quench_age_gyr": p["quench_age_gyr"],
    }
    for k, b in enumerate(PH.BAND_NAMES):
        truth[f"phot_{b.lower()}"] = phot[:, k]
    for k, name in enumerate(G.LINE_NAMES):
        truth[f"flux_{name}"] = lflux[:, k]
    return obs, truth


def _simulate_qsos(rng, z, wave):
    n = len(z)
    flux, par = Q.qso_model(rng, wave, z)
    mag = _mag_draw(rng, n, 17.5, 22.7, 0.4)
    flux *= _scale_to_mag(wave, flux, mag, "r")[:, None]
    return flux, {"qso_alpha": par["qso_alpha"], "qso_fwhm_kms": par["qso_fwhm_kms"],
                  "qso_civ_shift_kms": par["qso_civ_shift_kms"], "mag_norm": mag, "mag_band": np.full(n, "r")}


def _simulate_stars(rng, program, n, wave):
    cls_p = np.array([0.26, 0.34, 0.2, 0.14, 0.05, 0.01])
    ranges = [(3200, 3700), (3700, 5200), (5200, 6000), (6000, 7500), (7500, 10000), (10000, 15000)]
    k = rng.choice(6, n, p=cls_p)
    lo = np.array([r[0] for r in ranges])[k]
    hi = np.array([r[1] for r in ranges])[k]
    teff = rng.uniform(lo, hi)
    z = rng.normal(0, 80, n) / C_KMS
    flux = S.star_model(rng, wave, teff, z)
    lo_m, hi_m = {"dark": (16.0, 20.3), "bright": (15.0, 19.0), "backup": (11.5, 17.0)}[program]
    mag = _mag_draw(rng, n, lo_m, hi_m, 0.3)
    flux *= _scale_to_mag(wave, flux, mag, "r")[:, None]
    return flux, z, {"teff": teff, "mag_norm": mag, "mag_band": np.full(n, "r"), "subtype": S.spectral_class(teff)}


def _pick_from_pool(rng, pool, avail, tracer, n):
    """Choose n pool indices in this pixel with weight ∝ n_tracer(z)/(density·dV/dz), no replacement."""
    idx = np.flatnonzero(avail)
    w = tracer_nz(tracer, pool["z"][idx]) * pool["base"][idx]
    ok = w > 0
    idx, w = idx[ok], w[ok]
    n = min(n, idx.size)
    keys = rng.exponential(size=idx.size) / w  # Efraimidis–Spirakis
    return idx[np.argpartition(keys, n - 1)[:n]] if n else idx[:0]


def _random_in_pixel(rng, pix, n):
    """Uniform (ra, dec) inside one nested nside-64 pixel (rejection in its bounding cap)."""
    vec = np.array(hp.pix2vec(NSIDE, int(pix), nest=True))
    cb = hp.boundaries(NSIDE, int(pix), nest=True).T
    rad = np.degrees(np.arccos(np.clip(cb @ vec, -1, 1)).max()) + 0.01
    from desi_assets.sources.mock.structure import _random_in_cap

    out = []
    while sum(len(o) for o in out) < n:
        u = _random_in_cap(rng, 4 * n + 16, vec, rad)
        ra = np.degrees(np.arctan2(u[:, 1], u[:, 0])) % 360
        dec = np.degrees(np.arcsin(u[:, 2]))
        keep = hp.ang2pix(NSIDE, ra, dec, nest=True, lonlat=True) == pix
        out.append(np.stack([ra[keep], dec[keep]], 1))
    rd = np.concatenate(out)[:n]
    return rd[:, 0], rd[:, 1]


# ---------------------------------------------------------------- one pixel
def plan_healpix(config: MockSurveyConfig, index: int) -> dict:
    """Targets of one pixel without spectra: tracer, ra/dec, z (observed), anomaly class/amplitude (cheap)."""
    web, pixels, pool = _web_and_pool(config.seed, config.n_pixels)
    programs = pixel_programs(config.n_pixels, config.seed)
    counts = pixel_counts(config, programs)
    pix, program, ntot = int(pixels[index]), programs[index], int(counts[index])
    rng = np.random.default_rng([config.seed, 100, index])
    rng_bad = np.random.default_rng([config.seed, 101, index])
    n_bad = min(max(2, int(rng_bad.binomial(ntot, config.bad_fibre_fraction))), max(ntot - 4, 0))
    ntot -= n_bad

    # --- tracer counts and positions
    mix = TRACER_MIX[program]
    names = list(mix)
    ntr = rng.multinomial(ntot, [mix[k] for k in names])
    avail = pool["pix"] == pix
    # the pool is shared by all pixels; each pixel uses its own points only
    avail = avail.copy()
    rows = []
    for name, n in zip(names, ntr):
        if n == 0:
            continue
        if name == "MWS":
            ra, dec = _random_in_pixel(rng, pix, n)
            rows.append(dict(tracer=np.full(n, name), ra=ra, dec=dec, z=np.full(n, np.nan), xyz=np.full((n, 3), np.nan)))
            continue
        sel = _pick_from_pool(rng, pool, avail, name, n)
        avail[sel] = False
        m = len(sel)
        rows.append(dict(tracer=np.full(m, name), ra=pool["ra"][sel], dec=pool["dec"][sel],
                         z=pool["z"][sel], xyz=pool["xyz"][sel]))
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    n = len(cat["ra"])
    tracer = cat["tracer"]
    order = rng.permutation(n)  # files are not sorted by class
    cat = {k: v[order] for k, v in cat.items()}
    tracer = cat["tracer"]

    # --- anomalies: assign classes cycling through all seven, hosts by eligibility
    n_anom = int(rng.binomial(n, config.anomaly_fraction)) if config.anomaly_fraction > 0 else 0
    if config.anomaly_fraction > 0 and n >= 60:
        n_anom = max(n_anom, 1)
    anom_cls = np.full(n, None, dtype=object)
    anom_amp = np.full(n, np.nan)
    anom_detail = np.full(n, None, dtype=object)
    cyc = [A.ANOMALY_CLASSES[(index * 3 + k) % len(A.ANOMALY_CLASSES)] for k in range(n_anom)]
    taken = np.zeros(n, bool)
    z_cos = cat["z"].copy()
    for cls in cyc:
        if cls in ("bal", "mislabeled_highz_qso"):
            cand = np.flatnonzero((tracer == "QSO") & (cat["z"] > (2.0 if cls == "bal" else 2.1)) & ~taken)
            if cand.size == 0:  # promote a galaxy host into a high-z QSO at its sky position
                cand = np.flatnonzero(np.isin(tracer, ["ELG", "LRG", "BGS"]) & ~taken)[:1]
                if cand.size:  # moved off the web: no web truth for it
                    tracer[cand] = "QSO"
                    cat["z"][cand] = rng.uniform(2.1, 3.4)
                    z_cos[cand] = cat["z"][cand]
                    cat["xyz"][cand] = np.nan
        elif cls == "extreme_emitter":
            cand = np.flatnonzero(np.isin(tracer, ["ELG", "BGS"]) & (cat["z"] < 0.9) & ~taken)
            if cand.size == 0:
                cand = np.flatnonzero(np.isin(tracer, ["ELG", "BGS", "LRG"]) & ~taken)[:1]
                cat["z"][cand] = rng.uniform(0.2, 0.85, cand.size)
                z_cos[cand] = cat["z"][cand]
                cat["xyz"][cand] = np.nan
        elif cls == "broad_line_galaxy":
            cand = np.flatnonzero(np.isin(tracer, ["ELG", "BGS", "LRG"]) & (cat["z"] < 0.9) & ~taken)
            if cand.size == 0:
                cand = np.flatnonzero(np.isin(tracer, ["ELG", "BGS", "LRG"]) & ~taken)[:1]
                cat["z"][cand] = rng.uniform(0.2, 0.85, cand.size)
                z_cos[cand] = cat["z"][cand]
                cat["xyz"][cand] = np.nan
        else:
            cand = np.flatnonzero(~taken)
        if cand.size == 0:
            continue
        j = int(rng.choice(cand))
        taken[j] = True
        anom_cls[j] = cls
        anom_amp[j] = A.draw_amplitude(rng, cls)

    # --- peculiar velocities → observed redshift
    is_xgal = tracer != "MWS"
    vpec = rng.normal(0, 150, n)
    z_obs = np.where(is_xgal, (1 + np.nan_to_num(cat["z"])) * (1 + vpec / C_KMS) - 1, np.nan)
    return dict(web=web, pix=pix, program=program, rng=rng, cat=cat, tracer=tracer, n=n, z_cos=z_cos,
                z_obs=z_obs, is_xgal=is_xgal, anom_cls=anom_cls, anom_amp=anom_amp, anom_detail=anom_detail,
                n_bad=n_bad, rng_bad=rng_bad)


def simulate_healpix(config: MockSurveyConfig, index: int) -> PixelSimulation:
    """Simulate pixel number `index` (0-based within the patch) of a survey, fully in memory."""
    from desi_assets.sources.mock import datamodel as D

    P = plan_healpix(config, index)
    web, pix, program, rng, cat, tracer, n = (P[k] for k in ("web", "pix", "program", "rng", "cat", "tracer", "n"))
    z_cos, z_obs, is_xgal = P["z_cos"], P["z_obs"], P["is_xgal"]
    anom_cls, anom_amp, anom_detail = P["anom_cls"], P["anom_amp"], P["anom_detail"]
    wave = I.model_wave()

    # --- spectra (noiseless, observed frame, padded grid)
    model = np.zeros((n, wave.size), dtype=np.float64)
    tcols: dict[str, np.ndarray] = {}

    def put(idx, d):
        for k, v in d.items():
            if k not in tcols:
                tcols[k] = np.full(n, None, dtype=object) if np.asarray(v).dtype.kind in "UO" else np.full(n, np.nan)
            tcols[k][idx] = v

    spectype = np.where(tracer == "QSO", "QSO", np.where(tracer == "MWS", "STAR", "GALAXY"))
    subtype = np.full(n, "", dtype=object)
    rng_sfh = np.random.default_rng([config.seed, 14, index])  # own streams: the others stay as they were
    rng_phot = np.random.default_rng([config.seed, 15, index])
    for name in ("BGS", "LRG", "ELG"):
        idx = np.flatnonzero(tracer == name)
        if idx.size:
            idx = idx[np.argsort(z_obs[idx], kind="stable")]  # z-sorted chunks need less rest range
            for chunk in np.array_split(idx, max(1, idx.size // 200)):
                m, tr = _simulate_galaxies(rng, name, z_obs[chunk], wave, rng_sfh, config)
                model[chunk] = m
                put(chunk, tr)
    idx = np.flatnonzero(tracer == "QSO")
    if idx.size:
        m, tr = _simulate_qsos(rng, z_obs[idx], wave)
        model[idx] = m
        put(idx, tr)
    idx = np.flatnonzero(tracer == "MWS")
    if idx.size:
        m, zs, tr = _simulate_stars(rng, program, idx.size, wave)
        model[idx] = m
        z_obs[idx] = zs
        subtype[idx] = tr.pop("subtype")
        put(idx, tr)

    # --- fibre aperture: the spectrum holds the in-fibre flux (FIBERFLUX), magnitudes are total
    psf = np.isin(tracer, ["QSO", "MWS"])
    fiberfrac = np.where(psf, 0.78, np.clip(rng.normal(0.55, 0.1, n) - 0.5 * np.clip(0.25 - np.nan_to_num(z_obs), 0, None),
                                            0.2, 0.75))
    photo_total = _total_photometry(wave, model, tcols, spectype)
    for b in PH.BAND_NAMES:
        tcols[f"phot_{b.lower()}"] = photo_total[b]
    model *= fiberfrac[:, None]
    for k in list(tcols):
        if k.startswith("flux_"):
            tcols[k] = tcols[k] * fiberfrac

    # --- physical anomalies on the model
    for j in np.flatnonzero(anom_cls != None):  # noqa: E711
        cls, amp = anom_cls[j], anom_amp[j]
        if cls == "bal":
            anom_detail[j] = A.apply_bal(rng, model[j], wave, z_obs[j], amp)
        elif cls == "extreme_emitter":
            lam = 5008.240 * (1 + z_obs[j])
            near = np.abs(wave - lam) < 60
            cont = np.median(model[j, near]) if near.any() else np.median(model[j])
            f5007 = amp * (1 + z_obs[j]) * max(cont, 1e-3)
            sig = lam * 60 / C_KMS
            G.add_gaussian_lines(model[j:j + 1], wave,
                                 np.array([[lam, 4960.295 * (1 + z_obs[j]), 4862.71 * (1 + z_obs[j])]]),
                                 np.array([[sig, sig, sig]]), np.array([[f5007, f5007 / 2.98, f5007 / 5.0]]))
            ew_own = float(np.nan_to_num(tcols["ew_oiii_5007"][j])) if "ew_oiii_5007" in tcols else 0.0
            anom_detail[j] = (f"flux_oiii_5007_added={f5007:.3g} ew_oiii_5007_total={ew_own + amp:.0f} "
                              f"(ordinary galaxies <= {G.EW_MAX_NORMAL['oiii_5007']:.0f})")
            if "ew_oiii_5007" in tcols:
                tcols["ew_oiii_5007"][j] = ew_own + amp
            for k, f in (("flux_oiii_5007", f5007), ("flux_oiii_4959", f5007 / 2.98), ("flux_hbeta", f5007 / 5.0)):
                if k in tcols:
                    tcols[k][j] = np.nan_to_num(tcols[k][j]) + f
        elif cls == "broad_line_galaxy":
            cont = np.median(model[j])
            sig = amp / 2.3548 / C_KMS
            lines = np.array([[6564.60, 4862.71, 4341.69]]) * (1 + z_obs[j])
            ew = rng.uniform(40, 200)
            fl = ew * (1 + z_obs[j]) * max(cont, 1e-3) * np.array([[1.0, 1 / 3.1, 1 / 6.5]])
            G.add_gaussian_lines(model[j:j + 1], wave, lines, lines * sig, fl, halfwidth_pix=300)
            anom_detail[j] = f"ew_halpha_broad={ew:.0f}"

    # --- exposures, fibres, instrument
    expo = D.make_exposures(rng, pix, program, n)
    fibre_scale = rng.normal(1.0, 0.02, n)
    texp, nexp = expo["coadd_exptime"], expo["nexp"]
    arms, noiseless = {}, {}
    for arm in ARMS:
        sl = I.arm_slice(arm)
        w = wave[sl][I.PAD:-I.PAD]
        rdat = I.resolution_data(arm, fibre_scale)
        mR = I.apply_resolution(model[:, sl], rdat)
        sig = I.noise_sigma(mR, w, arm, program, texp)
        flux = mR + rng.normal(size=mR.shape) * sig + I.sky_residuals(rng, arm, program, texp)
        ivar = 1.0 / sig**2
        mask = np.zeros(mR.shape, dtype=np.int32)
        # cosmics caught by the pipeline in one input exposure
        ncr = rng.poisson(0.25, n)
        for j in np.flatnonzero(ncr):
            for _ in range(ncr[j]):
                i0 = int(rng.integers(0, w.size - 3))
                px = slice(i0, i0 + int(rng.integers(1, 4)))
                _lose_one_exposure(rng, flux, ivar, mask, sig, j, px, int(nexp[j]), spike=rng.uniform(20, 200))
        arms[arm] = {"wave": w, "flux": flux, "ivar": ivar, "mask": mask,
                     "resolution": rdat[:, :, I.PAD:-I.PAD], "sigma": sig}
        noiseless[arm] = mR.astype(np.float32)
    # one bad CCD column per file, in one input exposure of the fibres of one petal
    bad_arm = ["b", "r", "z"][int(rng.integers(0, 3))]
    col = int(rng.integers(100, ARMS[bad_arm].npix - 100))
    bad_petal = int(rng.integers(0, 10))
    a = arms[bad_arm]
    for j in np.flatnonzero(expo["petal_first"] == bad_petal):
        _lose_one_exposure(rng, a["flux"], a["ivar"], a["mask"], a["sigma"], j, slice(col, col + 2), int(nexp[j]),
                           spike=rng.uniform(5, 30))

    # --- instrumental anomalies on the observed arrays
    for j in np.flatnonzero(anom_cls != None):  # noqa: E711
        cls, amp = anom_cls[j], anom_amp[j]
        if cls == "calibration_jump":
            arm = ["b", "r", "z"][int(rng.integers(0, 3))]
            f = 1 + amp * (1 if rng.uniform() < 0.5 else -1)
            arms[arm]["flux"][j] *= f
            arms[arm]["ivar"][j] /= f**2
            anom_detail[j] = f"arm={arm} factor={f:.3f}"
        elif cls == "dead_segment":
            arm = ["b", "r", "z"][int(rng.integers(0, 3))]
            w = arms[arm]["wave"]
            lo = rng.uniform(w[0] + 20, w[-1] - amp - 20)
            m = (w >= lo) & (w < lo + amp)
            arms[arm]["flux"][j, m] = 0.0
            if rng.uniform() < 0.5:
                arms[arm]["ivar"][j, m] = 0.0
            anom_detail[j] = f"arm={arm} lo={lo:.1f}"
        elif cls == "cosmic_ray":
            arm = ["b", "r", "z"][int(rng.integers(0, 3))]
            anom_detail[j] = f"arm={arm} " + A.apply_cosmic_ray(rng, arms[arm]["flux"][j], arms[arm]["sigma"][j], amp)
    for arm in arms:
        a = arms[arm]
        a["flux"] = a["flux"].astype(np.float32)
        a["ivar"] = a["ivar"].astype(np.float32)
        del a["sigma"]

    # --- catalogue, redrock, truth
    web_class = np.full(n, -1, dtype=np.int64)
    dfil = np.full(n, np.nan)
    xg = np.flatnonzero(is_xgal & np.isfinite(cat["xyz"][:, 0]))
    if xg.size:
        wc, df = web.classify(cat["xyz"][xg])
        web_class[xg], dfil[xg] = wc, df
    targetid = (np.int64(9010) << 42) | (np.int64(pix) << 22) | np.arange(n, dtype=np.int64)
    photo = photo_total
    fm = D.make_fibermap(rng, targetid, cat["ra"], cat["dec"], tracer, program, photo, expo, subtype, fiberfrac,
                         rng_phot=rng_phot)
    tcols["phot_w1"], tcols["phot_w2"] = photo["W1"], photo["W2"]  # QSOs' W1/W2 are drawn in make_fibermap
    efm = D.make_exp_fibermap(targetid, cat["ra"], cat["dec"], expo, fm)
    rr, rr_status = D.make_redshifts(rng, targetid, z_obs, spectype, subtype, tracer, arms, anom_cls, anom_amp,
                                     photo, noiseless)
    for j in np.flatnonzero(anom_cls == "mislabeled_highz_qso"):
        anom_amp[j] = float(z_obs[j] - rr["Z"][j])
    tsnr2 = D.make_tsnr2(rng, targetid, program, expo)
    truth = {
        "targetid": targetid, "healpix": np.full(n, pix), "survey": np.full(n, config.survey),
        "program": np.full(n, program), "tracer": tracer, "spectype": spectype, "subtype": subtype,
        "fiberfrac": fiberfrac, "z": z_obs, "z_cosmo": np.where(is_xgal, z_cos, np.nan), "ra": cat["ra"], "dec": cat["dec"],
        "web_class": web_class, "dist_filament_mpc": dfil,
        "anomaly_class": anom_cls, "anomaly_amplitude": anom_amp, "anomaly_detail": anom_detail,
        "redrock_status": rr_status, "lsf_scale": fibre_scale,
    }
    truth.update(tcols)
    truth["fiber_kind"] = np.full(n, "target", dtype=object)
    fm, efm, arms, noiseless, rr, tsnr2, truth = D.add_bad_fibres(
        P["rng_bad"], P["n_bad"], pix, program, fm, efm, arms, noiseless, rr, tsnr2, truth,
        _random_in_pixel(P["rng_bad"], pix, P["n_bad"]), expo)
    truth_df = _truth_frame(truth)
    fm_all = fm
    return PixelSimulation(pix, program, config.survey, fm_all, efm, arms, noiseless, rr, tsnr2, truth_df,
                           extra={"model_wave": wave})


def _total_photometry(wave, model, tcols, spectype) -> dict[str, np.ndarray]:
    """Noiseless total AB fluxes (nanomaggies) per band: galaxies from their SED (truth phot_*); QSOs and stars
    from the model through the real curves (the part of z beyond the grid at the same f_ν), stars' W1/W2 from
    the Planck continuum at T_eff, QSOs' W1/W2 NaN (datamodel draws them)."""
    n = len(model)
    out = {b: np.full(n, np.nan) for b in PH.BAND_NAMES}
    gal = spectype == "GALAXY"
    for b in PH.BAND_NAMES:
        if f"phot_{b.lower()}" in tcols:
            out[b][gal] = tcols[f"phot_{b.lower()}"][gal]
    other = np.flatnonzero(~gal)
    if other.size:
        grz = ("G", "R", "Z")
        f = PH.band_fluxes(wave, model[other], grz) / PH.band_coverage(wave, grz)[None, :]
        for k, b in enumerate(grz):
            out[b][other] = f[:, k]
        teff = tcols["teff"][other] if "teff" in tcols else np.full(other.size, np.nan)
        star = np.isfinite(teff)
        for b, lam in (("W1", 33526.0), ("W2", 46028.0)):  # f_ν ∝ B_ν(T): ν³/(e^{hν/kT} − 1) relative to z
            ratio = (9200.0 / lam) ** 3 * np.expm1(S.H_C_K / (9200.0 * teff)) / np.expm1(S.H_C_K / (lam * teff))
            out[b][other] = np.where(star, f[:, 2] * ratio, np.nan)
    return out


def _lose_one_exposure(rng, flux, ivar, mask, sig, j, px, nexp, spike):
    """One input exposure of row j is bad at pixels px, combined as desispec.coaddition.coadd does: with other
    exposures the coadd pixel keeps mask 0 and loses that exposure's ivar; if it was the only one, the pixel
    keeps its ivar and flux (spike included) and gets the input's mask bit (SOMEBADPIX)."""
    if nexp > 1:
        keep = (nexp - 1) / nexp
        extra = sig[j, px] * np.sqrt(1 / keep - 1)
        flux[j, px] += rng.normal(size=extra.shape) * extra
        ivar[j, px] *= keep
        sig[j, px] /= np.sqrt(keep)
    else:
        if spike is not None:
            flux[j, px] += spike * sig[j, px]
        mask[j, px] |= I.MASK_SOMEBADPIX


def _truth_frame(t: dict) -> pl.DataFrame:
    cols = {}
    for k, v in t.items():
        v = np.asarray(v)
        if k == "web_class":
            cols[k] = pl.Series(k, [None if x < 0 else int(x) for x in v], dtype=pl.Int8)
        elif k.startswith("is_"):
            cols[k] = pl.Series(k, [None if x is None or np.isnan(float(x)) else bool(x) for x in v],
                                dtype=pl.Boolean)
        elif k in ("targetid", "healpix"):
            cols[k] = pl.Series(k, v.astype(np.int64))
        elif v.dtype.kind == "f":
            cols[k] = pl.Series(k, v, dtype=pl.Float64, nan_to_null=True)
        else:
            cols[k] = pl.Series(k, [None if (x is None or (isinstance(x, float) and np.isnan(x))) else str(x)
                                    for x in v], dtype=pl.Utf8)
    return pl.DataFrame(list(cols.values()))


# ---------------------------------------------------------------- public entry point
def _write_one(out_dir: Path, config: MockSurveyConfig, index: int) -> tuple[Path, str, int, float]:
    """Simulate and write pixel `index`; (coadd path, 'survey-program-pixel', spectra, seconds)."""
    from desi_assets.sources.mock import datamodel as D

    t0 = time.perf_counter()
    sim = simulate_healpix(config, index)
    coadd = D.write_pixel(out_dir, sim)
    return coadd, f"{sim.survey}-{sim.program}-{sim.pixel}", sim.truth.height, time.perf_counter() - t0


def write_mock_survey(out_dir: Path, config: MockSurveyConfig = MockSurveyConfig(),
                      progress: Callable[[str], None] | None = None, workers: int = 1,
                      executor: Executor | None = None) -> list[Path]:
    """Write the mock survey (coadd + redrock FITS, truth parquet per pixel) under out_dir; returns coadd paths.

    workers > 1 simulates pixels in that many spawned processes, or on `executor` when given (e.g. the runner's
    worker pool, whose processes then serve the pipeline too); each pixel has its own seeded streams, so the
    files are the same. A survey that releases pixels over time (release_every) is written in order, one at a time.
    """
    out_dir = Path(out_dir)
    programs = pixel_programs(config.n_pixels, config.seed)
    paths: list[Path | None] = [None] * config.n_pixels

    def done(i: int, res: tuple[Path, str, int, float], n_done: int) -> None:
        paths[i] = res[0]
        if progress is not None:
            progress(f"mock pixel {n_done}/{config.n_pixels}: {res[1]} {res[2]} spectra in {res[3]:.1f}s -> {res[0]}")

    if (executor is not None or workers > 1) and not config.release_every and config.n_pixels > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = executor or ProcessPoolExecutor(min(workers, config.n_pixels), mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(_write_one, out_dir, config, i): i for i in range(config.n_pixels)}
            for n_done, fut in enumerate(as_completed(futures), 1):
                done(futures[fut], fut.result(), n_done)
        finally:
            if executor is None:  # ours: stop it; a caller's pool stays up for its next work
                pool.shutdown(cancel_futures=True)
    else:
        for i in range(config.n_pixels):
            done(i, _write_one(out_dir, config, i), i + 1)
            if config.release_every and i < config.n_pixels - 1:
                time.sleep(config.release_every)
    assert len(programs) == len(paths)
    return paths
