"""The gold-standard path: Bagpipes 1.3 (nautilus sampler) on spectrum + FIBERMAP photometry.

Model (the seed's "Swiss Army" fit, cut down for cost): a delayed-τ SFH (age since onset, τ, mass
formed, metallicity), Calzetti dust A_V, optionally nebular emission at fixed (or fitted) log U, a
fixed (or fitted) velocity dispersion, optionally a white-noise scaling of the spectral errors; with
photometry, a maximum-likelihood Chebyshev calibration polynomial (no free parameters) ties the
fibre spectrum's shape to the total-light photometry, so the mass is a total mass. Strong emission
lines are masked in the spectrum: at a fixed log U their predicted strengths do not match the data's.
Nebular emission is off by default: the mock's galaxies carry 13 Gaussian lines and no nebular continuum
or higher Balmer series, and with bagpipes' nebular model on, its most star-forming BGS galaxy came out
0.15 dex too light and 0.34 dex too young (off: +0.04 dex and +0.12 dex); `nebular=True` for real data.

Derived quantities come from the one SPS (sps.sfh_weights / properties_from_weights, the same
definitions as the mock's truth and the fast path): logmass = log10 surviving M☉, sfr = M☉/yr over
100 Myr (as bagpipes' own `sfr`, config.sfr_timescale = 1e8 yr), age_mw = surviving-mass-weighted
age (Gyr; bagpipes' `mass_weighted_age` weights by mass formed), dust_av (mag), zmet (Z/Z☉).
Bagpipes' cosmology is H0 = 70, Ωm = 0.3; masses and SFRs are rescaled by D_L² to the settings'
cosmology.

Bagpipes is imported only inside spawned worker processes (BLAS pinned to one thread), each in
its own temporary working directory (bagpipes reads `masks/` there), with a per-fit time limit. The
sampler is driven directly (bagpipes' fitted_model + a seeded nautilus Sampler, nothing written to
disk), and bagpipes' per-bin Python resampling loop (spectres) is swapped for `resample_flux` (same
numbers, tested) in the workers: a likelihood call drops from ~39 to ~15 ms at 700 bins.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import shutil
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from desi_assets.science.stellar_populations import photometry, sps

PARAMS = ("logmass", "sfr", "age_mw", "dust_av", "zmet")
#: percentile key suffix → percent (the fast path's keys: f"{param}_{suffix}")
QUANTILES: dict[str, float] = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}
#: 1 nanomaggy = 3.631 μJy (AB zero point 3631 Jy at 22.5 mag)
NANOMAGGY_UJY = 3.631
#: bagpipes' own cosmology (bagpipes.utils.cosmo)
BAGPIPES_H0, BAGPIPES_OM0 = 70.0, 0.3
#: error bagpipes gets for masked spectral bins (its own convention for masks)
MASKED_ERR = 9.9e99
#: Lines masked besides physics.fit.LINES: higher Balmer, He I/II, [Ne III] 3968, [O I] 6364 (vacuum rest Å);
#: bagpipes' nebular model carries them, so in the fit they are as uncertain as the strong ones.
EXTRA_MASKED_LINES_A = (3771.70, 3798.98, 3836.47, 3890.17, 3968.59, 3971.20, 4472.73, 4687.02, 5877.25, 6365.54,
                        6679.99)


@dataclass(frozen=True)
class BagpipesSettings:
    """Sampler, data selection and priors of the Bagpipes fit (demo-sized defaults: ~1 min per galaxy)."""

    n_live: int = 100  # nautilus live points
    n_networks: int = 1  # nautilus neural networks per bound (bagpipes uses 4)
    n_eff: float = 0.0  # extra sampling until this effective sample size (0: exploration only, as bagpipes)
    bin_factor: int = 8  # consecutive input pixels averaged into one fitted bin
    rest_range_a: tuple[float, float] = (3600.0, 7000.0)  # rest-frame range fitted (Å)
    use_photometry: bool = True
    phot_error_floor: float = 0.05  # fractional error added in quadrature to each band
    # fractional model-error floor added in quadrature to each spectral bin (× running median |flux|); 0.06, the
    # fast path's, widened logmass/zmet intervals on the mock but not dust/SFR (bench/stellar_populations_bagpipes.py)
    spec_error_floor: float = 0.0
    calib_order: int = 0  # order of the max-likelihood spectrum/photometry calibration polynomial
    nebular: bool = False  # bagpipes' Cloudy nebular model (see the module note: off on the mock)
    mask_lines_kms: float = 600.0  # spectral pixels this close to a strong emission line are masked (0: none)
    logu: float = -3.0
    fit_logu: bool = False  # fit log U in logu_range instead of fixing it
    logu_range: tuple[float, float] = (-4.0, -2.0)
    veldisp_kms: float = 150.0
    fit_veldisp: bool = False
    veldisp_range_kms: tuple[float, float] = (40.0, 400.0)
    fit_noise_scaling: bool = True  # white_scaled noise: errors × s, s in (1, 10), log prior (+10% cost)
    age_range_gyr: tuple[float, float] = (0.01, 14.0)  # upper end capped at the age of the universe at z
    tau_range_gyr: tuple[float, float] = (0.1, 15.0)  # log-uniform
    massformed_range: tuple[float, float] = (6.0, 13.5)  # log10 M☉ formed
    zmet_range: tuple[float, float] = (0.1, 2.5)  # Z/Z☉, log-uniform
    av_range: tuple[float, float] = (0.0, 2.0)  # mag
    n_samples: int = 500  # equal-weight posterior draws kept per galaxy
    seed: int = 42
    timeout_s: float = 300.0  # per fit; the sampler stops and the result says "timeout"
    fast_resampling: bool = True  # bagpipes' spectres loop replaced by resample_flux (same numbers, ~2x faster)
    hard_timeout_grace_s: float = 60.0  # a worker still busy this long after timeout_s is killed
    state_dir: str | None = None  # where filter curves are written (default: a cache dir under the temp dir)
    cosmology_h0: float = 67.7  # masses/SFRs are reported in this flat ΛCDM (the mock's)
    cosmology_om0: float = 0.31


@dataclass
class GalaxyInput:
    """One galaxy: observed wavelength (Å), flux/ivar in 1e-17 erg/s/cm²/Å, FIBERMAP photometry in nanomaggies."""

    targetid: int
    z: float
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    phot: np.ndarray | None = None  # (5,) nanomaggies in photometry.BAND_NAMES order; NaN where missing
    phot_ivar: np.ndarray | None = None  # (5,) nanomaggy⁻²; 0 where missing


@dataclass
class BagpipesResult:
    """Posterior summary of one fit: percentiles {f"{p}_{q}"}, samples (n, len(PARAMS)), status, cost (s)."""

    targetid: int
    percentiles: dict[str, float]
    samples: np.ndarray
    fit_status: str
    cost_s: float
    n_like: int = 0  # likelihood calls
    log_z: float = float("nan")  # evidence
    extra: dict = field(default_factory=dict)  # bagpipes' own derived values (checks), fitted parameter medians


# ---------------------------------------------------------------- pure parts

def select_priority(snr: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest-S/N rows (descending S/N; NaN never chosen; stable on ties)."""
    snr = np.asarray(snr, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(snr))
    order = ok[np.argsort(-snr[ok], kind="stable")]
    return order[: max(int(n), 0)]


def nanomaggies_to_mujy(phot: np.ndarray, phot_ivar: np.ndarray, error_floor: float = 0.0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux μJy, 1σ μJy, usable mask) from nanomaggies and their ivar; the floor is fractional, in quadrature."""
    f = np.asarray(phot, dtype=np.float64)
    iv = np.asarray(phot_ivar, dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(iv) & (iv > 0)
    sig = np.where(ok, 1.0 / np.sqrt(np.where(ok, iv, 1.0)), np.nan)
    sig = np.hypot(sig, error_floor * np.abs(f))
    return f * NANOMAGGY_UJY, sig * NANOMAGGY_UJY, ok


def _bin_edges(wavs: np.ndarray) -> np.ndarray:
    """Bin edges around wavelength points, as spectres.make_bins draws them (midpoints; end bins mirrored)."""
    e = np.empty(wavs.size + 1)
    e[1:-1] = 0.5 * (wavs[1:] + wavs[:-1])
    e[0] = wavs[0] - 0.5 * (wavs[1] - wavs[0])
    e[-1] = wavs[-1] + 0.5 * (wavs[-1] - wavs[-2])
    return e


def resample_flux(new_wavs: np.ndarray, spec_wavs: np.ndarray, spec_fluxes: np.ndarray, fill: float = 0.0
                  ) -> np.ndarray:
    """Flux-conserving resampling (spectres.spectres without errors), vectorised: cumulative integral at new edges.

    Same result as spectres (piecewise-constant input bins, partial overlaps by width) in O(n) numpy instead
    of a Python loop over output bins, which is 60% of a Bagpipes likelihood call; new bins reaching outside
    the input get `fill`.
    """
    old_e, new_e = _bin_edges(np.asarray(spec_wavs, float)), _bin_edges(np.asarray(new_wavs, float))
    f = np.asarray(spec_fluxes, dtype=np.float64)
    cum = np.concatenate([np.zeros(f.shape[:-1] + (1,)), np.cumsum(f * np.diff(old_e), axis=-1)], axis=-1)
    at = np.stack([np.interp(new_e, old_e, c) for c in cum.reshape(-1, cum.shape[-1])])
    out = (np.diff(at, axis=-1) / np.diff(new_e)).reshape(f.shape[:-1] + (len(new_e) - 1,))
    outside = (new_e[:-1] < old_e[0]) | (new_e[1:] > old_e[-1])
    out[..., outside] = fill
    return out


class _FastSpectres:
    """Stands in for the `spectres` module inside bagpipes.models.model_galaxy (workers only)."""

    @staticmethod
    def spectres(new_wavs, spec_wavs, spec_fluxes, spec_errs=None, fill=None, verbose=True):
        if spec_errs is not None:
            import spectres

            return spectres.spectres(new_wavs, spec_wavs, spec_fluxes, spec_errs, fill, verbose)
        return resample_flux(new_wavs, spec_wavs, spec_fluxes, np.nan if fill is None else fill)


def default_state_dir() -> Path:
    """Cache folder for the filter-curve files (under the system temp dir)."""
    return Path(tempfile.gettempdir()) / "desi_assets_bagpipes"


def write_filter_files(directory: str | Path) -> dict[str, str]:
    """Band → path of a two-column (Å, response) text file of each speclite curve (written once; no download)."""
    d = Path(directory) / "filters"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for band, (lam, resp) in photometry.filter_curves().items():
        p = d / f"{photometry.BANDS[band]}.dat"
        if not p.exists():
            tmp = p.with_suffix(f".tmp{os.getpid()}")
            np.savetxt(tmp, np.c_[lam, resp], fmt="%.6f %.8e")
            os.replace(tmp, p)  # atomic: concurrent workers never read a half-written file
        out[band] = str(p)
    return out


def prepare_spectrum(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: float,
                     settings: BagpipesSettings) -> np.ndarray:
    """(nbin, 3) [observed Å, f_λ erg/s/cm²/Å, 1σ] for bagpipes: sorted, cut to the rest range, binned.

    Bins average bin_factor consecutive pixels (inverse-variance weights) after masking the strong emission
    lines (their strengths are not what a fixed-log U nebular model predicts: on the mock they pulled the
    age 0.4 dex young and biased the calibration); bins without a good pixel get zero flux and bagpipes'
    masked error, and are trimmed at the ends.
    """
    w = np.asarray(wave, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    iv = np.asarray(ivar, dtype=np.float64)
    o = np.argsort(w, kind="stable")
    w, f, iv = w[o], f[o], iv[o]
    lo, hi = settings.rest_range_a
    sel = (w >= lo * (1 + z)) & (w <= hi * (1 + z))
    w, f, iv = w[sel], f[sel], iv[sel]
    good = np.isfinite(f) & np.isfinite(iv) & (iv > 0) & ~line_mask(w, z, settings.mask_lines_kms)
    k = max(int(settings.bin_factor), 1)
    nb = w.size // k
    if nb == 0:
        return np.zeros((0, 3))
    w, f, iv, good = (a[: nb * k].reshape(nb, k) for a in (w, f, iv, good))
    wt = np.where(good, iv, 0.0)
    ivb = wt.sum(axis=1)
    fb = np.where(ivb > 0, (np.where(good, f, 0.0) * wt).sum(axis=1) / np.where(ivb > 0, ivb, 1.0), 0.0)
    err = np.where(ivb > 0, 1.0 / np.sqrt(np.where(ivb > 0, ivb, 1.0)), MASKED_ERR / 1e-17)
    if settings.spec_error_floor > 0 and (ivb > 0).any():
        from desi_assets.science.stellar_populations.fast import smoothed_abs_flux

        err = np.where(ivb > 0, np.hypot(err, settings.spec_error_floor * smoothed_abs_flux(fb, ivb > 0)), err)
    wb = w.mean(axis=1)
    used = np.flatnonzero(ivb > 0)
    if used.size:  # masked bins: the neighbours' flux (never 0: bagpipes' calibration divides by it), no weight
        fb = np.where(ivb > 0, fb, np.interp(wb, wb[used], fb[used]))
    spec = np.c_[wb, fb * 1e-17, err * 1e-17]
    return spec[used[0]: used[-1] + 1] if used.size else np.zeros((0, 3))


def line_mask(wave_obs: np.ndarray, z: float, half_width_kms: float) -> np.ndarray:
    """True where an observed wavelength (Å) lies within ±half_width_kms of an emission line (LINES + EXTRA_...)."""
    from desi_assets.science.physics.fit import LINES

    if half_width_kms <= 0:
        return np.zeros(np.shape(wave_obs), dtype=bool)
    rest = np.array([v[2] for v in LINES.values()] + list(EXTRA_MASKED_LINES_A)) * (1 + z)
    d = np.abs(np.asarray(wave_obs, dtype=np.float64)[:, None] / rest[None, :] - 1) * sps.C_KMS
    return (d < half_width_kms).any(axis=1)


def check_input(inp: GalaxyInput, settings: BagpipesSettings) -> str | None:
    """Why a galaxy cannot be fitted (a fit_status), or None if it can."""
    try:
        z = float(inp.z)
    except (TypeError, ValueError):
        return "bad_redshift"
    if not np.isfinite(z) or z <= 0 or z > 5:
        return "z_out_of_range"
    w, f, iv = (np.asarray(a, dtype=np.float64) for a in (inp.wave, inp.flux, inp.ivar))
    if w.ndim != 1 or w.shape != f.shape or w.shape != iv.shape:
        return "bad_shape"
    good = np.isfinite(f) & np.isfinite(iv) & (iv > 0) & np.isfinite(w)
    lo, hi = settings.rest_range_a
    inside = good & (w >= lo * (1 + z)) & (w <= hi * (1 + z))
    if inside.sum() < 20 * max(settings.bin_factor, 1):
        return "no_spectrum_in_rest_range"
    if not np.median(f[inside]) > 0:
        return "bad_flux"
    return None


def fit_instructions(z: float, settings: BagpipesSettings, with_calibration: bool) -> dict:
    """The bagpipes fit_instructions dict for a galaxy at redshift z."""
    t_univ = float(_age_at_z_gyr(z))
    s = settings
    delayed = {"age": (s.age_range_gyr[0], min(s.age_range_gyr[1], t_univ)), "age_prior": "log_10",
               "tau": s.tau_range_gyr, "tau_prior": "log_10",
               "massformed": s.massformed_range,
               "metallicity": s.zmet_range, "metallicity_prior": "log_10"}
    out = {"redshift": float(z), "delayed": delayed, "dust": {"type": "Calzetti", "Av": s.av_range},
           "veldisp": s.veldisp_range_kms if s.fit_veldisp else s.veldisp_kms}
    if s.fit_veldisp:
        out["veldisp_prior"] = "log_10"
    if s.nebular:
        out["nebular"] = {"logU": s.logu_range if s.fit_logu else s.logu}
    if with_calibration:
        out["calib"] = {"type": "polynomial_max_like", "order": int(s.calib_order)}
    if s.fit_noise_scaling:
        out["noise"] = {"type": "white_scaled", "scaling": (1.0, 10.0), "scaling_prior": "log_10"}
    return out


@functools.lru_cache(maxsize=4)
def _cosmo(h0: float, om0: float):
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=h0, Om0=om0)


def _age_at_z_gyr(z: float) -> float:
    return float(_cosmo(BAGPIPES_H0, BAGPIPES_OM0).age(z).value)


def distance_correction_dex(z: float, h0: float, om0: float) -> float:
    """2·log10(D_L(target cosmology) / D_L(bagpipes')) (dex): add to bagpipes' log masses and SFRs."""
    d_t = _cosmo(h0, om0).luminosity_distance(z).value
    d_b = _cosmo(BAGPIPES_H0, BAGPIPES_OM0).luminosity_distance(z).value
    return float(2 * np.log10(d_t / d_b))


def physical_samples(points: np.ndarray, names: list[str], z: float, settings: BagpipesSettings) -> np.ndarray:
    """(n, 5) PARAMS from fitted-parameter samples (n, ndim) named as bagpipes names them ("delayed:age", ...)."""
    col = {n: points[:, i] for i, n in enumerate(names)}
    fixed = fit_instructions(z, settings, False)

    def get(key):
        if key in col:
            return np.asarray(col[key], dtype=np.float64)
        comp, _, sub = key.partition(":")
        return np.full(len(points), float(fixed[comp][sub]))

    age, tau, mform, zmet, av = (get(k) for k in ("delayed:age", "delayed:tau", "delayed:massformed",
                                                   "delayed:metallicity", "dust:Av"))
    props = sps.properties_from_weights(sps.sfh_weights(age, tau), zmet)
    dcorr = distance_correction_dex(z, settings.cosmology_h0, settings.cosmology_om0)
    logmass = mform + np.log10(np.maximum(props["live_frac"], 1e-30)) + dcorr
    sfr = 10 ** (mform + dcorr) * props["sfr_per_msun"]
    return np.c_[logmass, sfr, props["age_mw_gyr"], av, zmet]


def percentiles_from_samples(samples: np.ndarray) -> dict[str, float]:
    """{f"{param}_{q}"} for PARAMS × QUANTILES from equal-weight samples (n, 5); NaN when there are none."""
    s = np.asarray(samples, dtype=np.float64)
    out = {}
    for j, p in enumerate(PARAMS):
        for key, q in QUANTILES.items():
            out[f"{p}_{key}"] = float(np.percentile(s[:, j], q)) if len(s) else float("nan")
    return out


def failed(targetid: int, status: str, cost_s: float = 0.0) -> BagpipesResult:
    """A result for a galaxy that was not (fully) fitted: NaN percentiles, no samples."""
    return BagpipesResult(int(targetid), percentiles_from_samples(np.zeros((0, len(PARAMS)))),
                          np.zeros((0, len(PARAMS)), dtype=np.float32), status, float(cost_s))


# ---------------------------------------------------------------- one fit (inside a worker)

def _fit_one(inp: GalaxyInput, settings: BagpipesSettings, filters: dict[str, str]) -> BagpipesResult:
    t0, c0 = time.perf_counter(), time.process_time()
    reason = check_input(inp, settings)
    if reason:
        return failed(inp.targetid, reason, time.perf_counter() - t0)
    import bagpipes as pipes
    from bagpipes.fitting.fitted_model import fitted_model
    from nautilus import Sampler

    z = float(inp.z)
    spec = prepare_spectrum(inp.wave, inp.flux, inp.ivar, z, settings)
    bands, phot = [], None
    if settings.use_photometry and inp.phot is not None and inp.phot_ivar is not None:
        f, e, ok = nanomaggies_to_mujy(inp.phot, inp.phot_ivar, settings.phot_error_floor)
        bands = [b for b, good in zip(photometry.BAND_NAMES, ok) if good]
        phot = np.c_[f[ok], e[ok]]
    has_phot = len(bands) > 0

    def load(_id):
        return (spec.copy(), phot.copy()) if has_phot else spec.copy()

    gal = pipes.galaxy(str(inp.targetid), load, spectrum_exists=True, photometry_exists=has_phot,
                       filt_list=[filters[b] for b in bands] if has_phot else None,
                       spec_units="ergscma", phot_units="mujy")
    model = fitted_model(gal, fit_instructions(z, settings, with_calibration=has_phot))
    sampler = Sampler(model.prior.transform, model.lnlike, n_dim=model.ndim, n_live=settings.n_live,
                      n_networks=settings.n_networks, seed=settings.seed, pool=None)
    left = settings.timeout_s - (time.perf_counter() - t0)
    with warnings.catch_warnings():  # as bagpipes' own fit does
        warnings.simplefilter("ignore")
        converged = sampler.run(n_eff=settings.n_eff, timeout=max(left, 1.0), verbose=False)
    points, log_w, _ = sampler.posterior()
    w = np.exp(log_w - log_w.max())
    rng = np.random.default_rng(settings.seed)
    draw = points[rng.choice(len(points), size=settings.n_samples, replace=True, p=w / w.sum())]
    samples = physical_samples(draw, list(model.params), z, settings)
    status = "ok" if has_phot else "ok_spectrum_only"
    if not converged:
        status = "timeout"
    extra = {"params": list(model.params), "fitted_median": np.median(draw, axis=0).tolist(),
             "n_bins": len(spec), "bands": bands, "cpu_s": time.process_time() - c0,
             "fast_resampling": importlib.import_module("bagpipes.models.model_galaxy").spectres is _FastSpectres,
             "bagpipes_check": _bagpipes_derived(draw[:50], model, z, settings)}
    return BagpipesResult(int(inp.targetid), percentiles_from_samples(samples), samples.astype(np.float32),
                          status, time.perf_counter() - t0, int(sampler.n_like), float(sampler.log_z), extra)


def _bagpipes_derived(draw: np.ndarray, model, z: float, settings: BagpipesSettings) -> dict[str, float]:
    """Median of bagpipes' own stellar_mass / sfr / mass_weighted_age on a few draws (cross-check)."""
    from bagpipes.models.star_formation_history import star_formation_history

    vals = {"stellar_mass": [], "sfr": [], "mass_weighted_age": [], "mass_weighted_zmet": []}
    sfh = None
    for x in draw:
        model._update_model_components(np.array(x, dtype=np.float64))
        if sfh is None:
            sfh = star_formation_history(model.model_components)
        else:
            sfh.update(model.model_components)
        for k, v in vals.items():
            v.append(float(getattr(sfh, k)))
    dcorr = distance_correction_dex(z, settings.cosmology_h0, settings.cosmology_om0)
    out = {k: float(np.median(v)) for k, v in vals.items()}
    out["stellar_mass"] += dcorr
    out["sfr"] *= 10**dcorr
    return out


# ---------------------------------------------------------------- worker processes

def igm_table_written() -> bool:
    """Whether bagpipes' first import has written its IGM table (later imports only read it, so run concurrently)."""
    spec = importlib.util.find_spec("bagpipes")
    dirs = (spec.submodule_search_locations or []) if spec else []
    return any((Path(d) / "models" / "grids" / "d_igm_grid_inoue14.fits").is_file() for d in dirs)


def write_igm_table() -> bool:
    """Run bagpipes' first import, which writes its IGM table (~8 s), so that the fit workers' imports can run
    concurrently later; False where bagpipes cannot be imported (the fits then say why)."""
    if not igm_table_written():
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                importlib.import_module("bagpipes.models.model_galaxy")
        except Exception:  # noqa: BLE001
            return False
    return igm_table_written()


def _worker_main(conn, import_lock, settings: BagpipesSettings) -> None:
    """Worker loop: import bagpipes once (serialised until its first import has written the IGM table), then fit
    tasks."""
    from desi_assets.science.physics.fit import one_blas_thread

    workdir = tempfile.mkdtemp(prefix="bagpipes_worker_")
    os.chdir(workdir)  # bagpipes reads masks/ and may write pipes/ relative to the CWD
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), one_blas_thread():
            try:
                with import_lock:
                    # the module itself (the package attribute of that name is the model_galaxy class)
                    mg = importlib.import_module("bagpipes.models.model_galaxy")
                if settings.fast_resampling:
                    mg.spectres = _FastSpectres
                filters = write_filter_files(settings.state_dir or default_state_dir())
            except Exception as e:  # noqa: BLE001
                conn.send(("import_error", f"{type(e).__name__}: {e}"))
                return
            conn.send(("ready", None))
            while (task := conn.recv()) is not None:
                idx, inp = task
                t0 = time.perf_counter()
                try:
                    res = _fit_one(inp, settings, filters)
                except Exception as e:  # noqa: BLE001  (errors become a status, never a crash)
                    last = traceback.extract_tb(e.__traceback__)[-1]
                    res = failed(inp.targetid, f"error: {type(e).__name__}: {e} ({Path(last.filename).name}:"
                                 f"{last.lineno})"[:300], time.perf_counter() - t0)
                conn.send(("done", (idx, res)))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(workdir, ignore_errors=True)


class _Worker:
    def __init__(self, ctx, lock, settings):
        from desi_assets.science.physics.fit import one_blas_thread_env

        self.conn, child = ctx.Pipe()
        with one_blas_thread_env():
            self.proc = ctx.Process(target=_worker_main, args=(child, lock, settings), daemon=True)
            self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[int, GalaxyInput] | None = None
        self.started = time.monotonic()

    def stop(self, kill: bool = False):
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def fit_bagpipes_many(inputs: list[GalaxyInput], settings: BagpipesSettings | None = None,
                      workers: int = 1) -> list[BagpipesResult]:
    """Fit each galaxy with Bagpipes in `workers` spawned processes; results in input order, never raises per fit."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    settings = settings or BagpipesSettings()
    results: list[BagpipesResult | None] = [None] * len(inputs)
    todo = []
    for i, inp in enumerate(inputs):  # cheap checks here: bad rows never cost a worker
        reason = check_input(inp, settings)
        if reason:
            results[i] = failed(getattr(inp, "targetid", -1), reason)
        else:
            todo.append(i)
    if not todo:
        return results  # type: ignore[return-value]
    ctx = mp.get_context("spawn")
    lock = contextlib.nullcontext() if igm_table_written() else ctx.Lock()  # only the first import writes
    pool = [_Worker(ctx, lock, settings) for _ in range(max(1, min(int(workers), len(todo))))]
    queue = list(todo)
    import_limit = 600.0
    hard = settings.timeout_s + settings.hard_timeout_grace_s
    try:
        while queue or any(w.task for w in pool):
            for w in pool:
                if w.ready and w.task is None and queue:
                    i = queue.pop(0)
                    w.task, w.started = (i, inputs[i]), time.monotonic()
                    w.conn.send(w.task)
            live = [w for w in pool if w.proc.is_alive() or w.conn.poll()]
            for conn in wait([w.conn for w in live], timeout=5.0):
                w = next((x for x in pool if x.conn is conn), None)
                if w is None:  # replaced earlier in this round
                    continue
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    kind, payload = "died", None
                if kind == "ready":
                    w.ready = True
                elif kind == "done":
                    i, res = payload
                    results[i], w.task = res, None
                elif kind in ("import_error", "died"):
                    msg = payload or f"worker died (exit code {w.proc.exitcode})"
                    if w.task is not None:
                        results[w.task[0]] = failed(w.task[1].targetid, f"error: {msg}",
                                                    time.monotonic() - w.started)
                    if kind == "import_error":  # bagpipes unusable: every remaining fit gets the reason
                        for i in queue:
                            results[i] = failed(inputs[i].targetid, f"error: bagpipes import failed: {msg}")
                        queue.clear()
                    w.task = None
                    _replace(pool, w, ctx, lock, settings, respawn=bool(queue))
            now = time.monotonic()
            for w in list(pool):
                busy = now - w.started
                if (w.task is not None and busy > hard) or (not w.ready and busy > import_limit):
                    if w.task is not None:
                        results[w.task[0]] = failed(w.task[1].targetid, "timeout", busy)
                    else:
                        for i in queue:
                            results[i] = failed(inputs[i].targetid, "error: bagpipes worker did not start")
                        queue.clear()
                    w.task = None
                    _replace(pool, w, ctx, lock, settings, respawn=bool(queue), kill=True)
                elif not w.proc.is_alive() and not w.conn.poll():
                    msg = f"error: bagpipes worker died (exit code {w.proc.exitcode})"
                    if w.task is not None:
                        results[w.task[0]] = failed(w.task[1].targetid, msg, busy)
                        w.task = None
                    elif not w.ready:  # died while starting: a respawn would die the same way
                        for i in queue:
                            results[i] = failed(inputs[i].targetid, msg + " while starting")
                        queue.clear()
                    _replace(pool, w, ctx, lock, settings, respawn=bool(queue))
            if not pool and queue:
                pool.append(_Worker(ctx, lock, settings))
    finally:
        for w in pool:
            w.stop()
    return results  # type: ignore[return-value]


def _replace(pool: list, w: _Worker, ctx, lock, settings, respawn: bool, kill: bool = False) -> None:
    w.stop(kill=kill or w.proc.is_alive())
    pool.remove(w)
    if respawn:
        pool.append(_Worker(ctx, lock, settings))
