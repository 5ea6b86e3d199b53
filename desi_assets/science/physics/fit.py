"""pPXF fits of stellar kinematics and emission lines, one spectrum per call, a process pool for batches.

Per spectrum (rest frame of the input z):
1. cut to the template range less `margin_kms` at each end (pPXF needs the galaxy inside the templates);
2. resolution matching in quadrature to σ²_target(λ) = max(σ²_galaxy(λ), σ²_templates(λ)), in the rest frame
   (σ_galaxy = LSF σ/(1+z), from the per-target LSF, never a constant; σ_templates from their FWHM), each
   side counted with the line variance its log-rebinning adds ((Δλ_native² + Δλ_log²)/12); the galaxy is
   broadened where it is sharper (DESI vs BC03's 2.5 Å), the templates where they are (C3K, or SDSS's red
   half vs BC03), both on their own pixels with an exact-variance kernel (`spectra.smooth_pixels`);
3. log-rebin at `velscale`, gas templates from `ppxf_util.emission_lines(..., vacuum=True)` at σ_target;
4. one pPXF call: stars (moments 2) + one gas component (V, σ shared by all lines), additive polynomials.
The bookkeeping is exact: a BC03 SSP broadened on its own pixels and sampled at 1.8 Å returns σ* to < 0.5%
at 60–200 km/s (pPXF's varsmooth for a variable σ and a linear regrid of the templates, used before, gave
−14% at 60 km/s and biased the galaxy side high). On NGC 3522 (SDSS, ppxf wheel; SDSS: 97.4 ± 2.4 km/s)
BC03 gives σ* = 97.4 ± 1.8 and the sharp C3K set 101.3 ± 1.9 once WDISP is rescaled to the width of the
file's sky lines (×1.19, `spectra.sky_lsf_scale`); with WDISP as stated both read ~107-111.
Errors are pPXF's formal errors × √max(χ²/dof, 1). Line fluxes are in the input flux unit × Å (observed
frame: 1e-17 erg/s/cm² for DESI); EWs are rest-frame Å (positive = emission), relative to the stellar
continuum at the line.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from desi_assets.science.physics.spectra import C_KMS, smooth_pixels
from desi_assets.science.physics.templates import (
    TemplateSet,
    load_templates,
    rebin_pixel_variance,
)

#: Output lines: column stem → (ppxf gas template name, fraction of that template's flux, vacuum rest λ Å).
LINES: dict[str, tuple[str, float, float]] = {
    "oii_3726": ("[OII]3726", 1.0, 3727.092), "oii_3729": ("[OII]3729", 1.0, 3729.875),
    "neiii_3869": ("[NeIII]3869", 1.0, 3869.86),
    "hdelta": ("Hdelta", 1.0, 4102.899), "hgamma": ("Hgamma", 1.0, 4341.691), "hbeta": ("Hbeta", 1.0, 4862.691),
    "oiii_4959": ("[OIII]5007_d", 0.33 / 1.33, 4960.295), "oiii_5007": ("[OIII]5007_d", 1.0 / 1.33, 5008.240),
    "nii_6548": ("[NII]6583_d", 0.33 / 1.33, 6549.860), "halpha": ("Halpha", 1.0, 6564.632),
    "nii_6584": ("[NII]6583_d", 1.0 / 1.33, 6585.271),
    "sii_6716": ("[SII]6716", 1.0, 6718.294), "sii_6731": ("[SII]6731", 1.0, 6732.674),
}
LINE_NAMES = tuple(LINES)

#: Fit statuses (a failed fit carries `failed: <reason>`).
STATUS_OK, STATUS_LOW_SN, STATUS_OUT_OF_RANGE = "ok", "low_sn", "out_of_range"


@dataclass(frozen=True)
class FitSettings:
    """pPXF settings: templates, velscale (km/s), polynomial degree, edge margin (km/s), σ floor (km/s)."""

    templates: str = "bc03"
    template_fwhm_a: float | None = None  # None: the template set's measured FWHM (Å)
    velscale: float = 50.0
    degree: int = 12  # σ* on real spectra (NGC 3522) is stable from 12 up; 8 reads it 4% higher
    mdegree: int = 0  # multiplicative polynomial degree (0: none)
    margin_kms: float = 2500.0  # > vmax_kms + 900 (pPXF's own margin)
    vmax_kms: float = 1000.0  # |V| bound around the input z, stars and gas
    min_rest_span_a: float = 600.0
    snr_min: float = 3.0  # continuum S/N per Å below which a fit is not attempted
    vdisp_floor_kms: float = 70.0
    vdisp_start_kms: float = 150.0
    gas_sigma_start_kms: float = 80.0


@dataclass
class FitResult:
    """One fit: status, kinematics (km/s, V relative to the input z), lines, χ²/dof, and optional model arrays."""

    status: str
    vel: float = np.nan
    vel_err: float = np.nan
    vdisp: float = np.nan
    vdisp_err: float = np.nan
    vdisp_below_floor: bool | None = None
    gas_vel: float = np.nan
    gas_vel_err: float = np.nan
    gas_sigma: float = np.nan
    gas_sigma_err: float = np.nan
    chi2_dof: float = np.nan
    npix: int = 0
    snr_per_a: float = np.nan
    fit_seconds: float = 0.0
    flux: dict[str, float] = field(default_factory=dict)
    flux_err: dict[str, float] = field(default_factory=dict)
    ew: dict[str, float] = field(default_factory=dict)
    ew_err: dict[str, float] = field(default_factory=dict)
    model: dict[str, np.ndarray] | None = None

    def row(self) -> dict:
        """Flat dict of scalar columns (line columns as flux_<line>, flux_<line>_err, ew_<line>, ew_<line>_err)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("flux", "flux_err", "ew", "ew_err", "model")}
        for name in LINE_NAMES:
            d[f"flux_{name}"] = self.flux.get(name, np.nan)
            d[f"flux_{name}_err"] = self.flux_err.get(name, np.nan)
            d[f"ew_{name}"] = self.ew.get(name, np.nan)
            d[f"ew_{name}_err"] = self.ew_err.get(name, np.nan)
        return d


def _fill_bad(x: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Bad pixels replaced by linear interpolation over the good ones (so smoothing does not bleed zeros)."""
    if good.all() or not good.any():
        return x
    i = np.arange(x.size)
    return np.interp(i, i[good], x[good])


def fit_spectrum(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, lsf_sigma: np.ndarray, z: float,
                 tset: TemplateSet, settings: FitSettings = FitSettings(), keep_model: bool = False) -> FitResult:
    """Fit one observed spectrum (vacuum Å, F_λ, ivar, per-pixel LSF σ in observed Å) at redshift z with pPXF."""
    t0 = time.perf_counter()
    try:
        res = _fit(wave, flux, ivar, lsf_sigma, z, tset, settings, keep_model)
    except Exception as exc:  # a failed fit is a status, never an exception for the batch
        msg = str(exc).replace("\n", " ")[:160]
        res = FitResult(status=f"failed: {type(exc).__name__}: {msg}")
    res.fit_seconds = time.perf_counter() - t0
    return res


def _fit(wave, flux, ivar, lsf_sigma, z, tset: TemplateSet, s: FitSettings, keep_model: bool) -> FitResult:
    from ppxf import ppxf_util
    from ppxf.ppxf import ppxf

    wave, flux, ivar = (np.asarray(a, dtype=np.float64) for a in (wave, flux, ivar))
    lsf_sigma = np.broadcast_to(np.asarray(lsf_sigma, dtype=np.float64), wave.shape)
    if not np.isfinite(z) or z <= -0.01:
        return FitResult(status=STATUS_OUT_OF_RANGE)
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & np.isfinite(lsf_sigma)
    rest = wave / (1 + z)
    t_lo, t_hi = tset.lam_range
    m = np.exp(s.margin_kms / C_KMS)
    lo = max(t_lo * m, rest[good].min() if good.any() else np.inf)
    hi = min(t_hi / m, rest[good].max() if good.any() else -np.inf)
    if not hi - lo >= s.min_rest_span_a:
        return FitResult(status=STATUS_OUT_OF_RANGE)
    sel = (rest >= lo) & (rest <= hi)
    r, g = rest[sel], good[sel]
    step = np.gradient(wave[sel])
    snr = float(np.median(flux[sel][g] * np.sqrt(ivar[sel][g]) / np.sqrt(step[g]))) if g.any() else 0.0
    if not snr >= s.snr_min:
        return FitResult(status=STATUS_LOW_SN, snr_per_a=snr)
    norm = float(np.median(flux[sel][g]))
    gal = _fill_bad(flux[sel] / norm, g)
    var = np.where(g, 1.0 / np.where(g, ivar[sel], 1.0), 0.0) / norm**2
    var = _fill_bad(var, g)

    # resolution as Gaussian variances (rest Å²) on the common log grid, each with the line variance
    # its own log-rebinning adds; the sharper side is broadened to the broader, in quadrature, without
    # resampling (smooth_pixels), so the match is exact to the pixel terms
    dr = np.gradient(r)
    var_gal = (lsf_sigma[sel] / (1 + z)) ** 2 + rebin_pixel_variance(r, r, s.velscale)
    fwhm_t = float(s.template_fwhm_a if s.template_fwhm_a is not None else tset.fwhm_a)
    lam_t = np.exp(tset.ln_lam)
    var_t = (fwhm_t / 2.355) ** 2 + tset.pix_var_a2
    target = np.maximum(var_gal, np.interp(r, lam_t, var_t))
    extra_gal = np.sqrt(np.clip(target - var_gal, 0, None)) / dr  # native pixels
    if extra_gal.max() > 0.05:
        gal = smooth_pixels(gal, extra_gal)
    temp = tset.flux
    extra_t = np.sqrt(np.clip(np.interp(lam_t, r, target) - var_t, 0, None)) / (lam_t * s.velscale / C_KMS)
    if extra_t.max() > 0.05:
        temp = smooth_pixels(temp, extra_t)

    galaxy, ln_lam, _ = ppxf_util.log_rebin(r[[0, -1]] if _uniform(r) else r, gal, velscale=s.velscale)
    vlog, _, _ = ppxf_util.log_rebin(r[[0, -1]] if _uniform(r) else r, var, velscale=s.velscale)
    badlog, _, _ = ppxf_util.log_rebin(r[[0, -1]] if _uniform(r) else r, (~g).astype(float), velscale=s.velscale)
    # log_rebin averages: the variance of a mean of k pixels is var/k, k = new/old pixel width
    k = np.clip(np.interp(np.exp(ln_lam), r, r * s.velscale / C_KMS / dr), 1.0, None)
    noise = np.sqrt(np.clip(vlog / k, 0, None))
    goodpix = np.flatnonzero((badlog < 0.5) & (noise > 0) & np.isfinite(galaxy))
    lam_gal = np.exp(ln_lam)
    # gas templates: pixel-integrated Gaussians on the template grid (that integration is their pixel term)
    fwhm_gas = 2.355 * np.sqrt(np.clip(target - (r * s.velscale / C_KMS) ** 2 / 12.0, 1e-6, None))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the lines it includes
        gas, gas_names, _ = ppxf_util.emission_lines(
            tset.ln_lam, [lam_gal[0], lam_gal[-1]], {"lam": r, "fwhm": fwhm_gas}, tie_balmer=False,
            limit_doublets=False, vacuum=True)
    gas_names = np.asarray(gas_names)
    nstar = temp.shape[1]
    templates = np.column_stack([temp, gas]) if gas.size else temp
    ngas = gas.shape[1] if gas.size else 0
    component = np.array([0] * nstar + [1] * ngas)
    start = [[0.0, s.vdisp_start_kms], [0.0, s.gas_sigma_start_kms]] if ngas else [[0.0, s.vdisp_start_kms]]
    bounds = [[[-s.vmax_kms, s.vmax_kms], [5.0, 600.0]]] * (2 if ngas else 1)
    with contextlib.redirect_stdout(io.StringIO()):
        pp = ppxf(templates, galaxy, np.where(noise > 0, noise, np.inf), s.velscale, start, bounds=bounds,
                  moments=[2, 2] if ngas else [2], degree=s.degree, mdegree=s.mdegree, component=component,
                  gas_component=component > 0, gas_names=gas_names if ngas else None, lam=lam_gal,
                  lam_temp=lam_t, goodpixels=goodpix, quiet=True)
    chi2 = float(pp.chi2)
    scale = np.sqrt(max(chi2, 1.0))
    sol = np.atleast_2d(pp.sol)
    err = np.atleast_2d(pp.error) * scale
    res = FitResult(status=STATUS_OK, vel=float(sol[0][0]), vel_err=float(err[0][0]), vdisp=float(sol[0][1]),
                    vdisp_err=float(err[0][1]), chi2_dof=chi2, npix=int(goodpix.size), snr_per_a=snr)
    res.vdisp_below_floor = bool(res.vdisp < s.vdisp_floor_kms)
    if ngas:
        res.gas_vel, res.gas_sigma = float(sol[1][0]), float(sol[1][1])
        res.gas_vel_err, res.gas_sigma_err = float(err[1][0]), float(err[1][1])
        gas_model = pp.gas_bestfit if pp.gas_bestfit is not None else np.zeros_like(galaxy)
        cont = pp.bestfit - gas_model
        for name, (tname, frac, lam0) in LINES.items():
            j = np.flatnonzero(gas_names == tname)
            if j.size == 0:
                continue
            lam_obs_rest = lam0 * np.exp(res.gas_vel / C_KMS)
            pix_a = lam0 * s.velscale / C_KMS  # rest-frame Å per log pixel at the line
            f = float(pp.gas_flux[j[0]]) * frac * pix_a  # normalised flux × rest Å
            fe = float(pp.gas_flux_error[j[0]]) * frac * pix_a * scale
            c = float(np.interp(lam_obs_rest, lam_gal, cont))
            res.flux[name] = f * norm * (1 + z)
            res.flux_err[name] = fe * norm * (1 + z)
            res.ew[name] = f / c if c > 0 else np.nan
            res.ew_err[name] = fe / c if c > 0 else np.nan
    if keep_model:
        res.model = {"wave": lam_gal * (1 + z), "data": galaxy * norm, "stars": (pp.bestfit - (
            pp.gas_bestfit if ngas and pp.gas_bestfit is not None else 0)) * norm,
            "gas": (pp.gas_bestfit if ngas and pp.gas_bestfit is not None else 0 * galaxy) * norm,
            "goodpixels": goodpix}
    return res


def _uniform(x: np.ndarray) -> bool:
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-6, atol=0))


# ---------------------------------------------------------------- process pool
_WORKER: dict = {}

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_blas_thread():
    """BLAS pinned to one thread for the block (in-process fits; a multi-threaded BLAS is ~20x slower when busy)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


@contextlib.contextmanager
def one_blas_thread_env():
    """BLAS_ENV set to 1 for the block, then restored: processes spawned inside inherit it before numpy loads."""
    saved = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update({k: "1" for k in BLAS_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pin_blas_threads(n: int = 1) -> None:
    """Cap this process's BLAS/OpenMP pools at n threads: BLAS_ENV for libraries not loaded yet, threadpoolctl for
    loaded ones."""
    for k in BLAS_ENV:
        os.environ[k] = str(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:  # env vars set before numpy's first BLAS call still apply
        pass


def init_worker(settings: FitSettings, wave: np.ndarray, pin_blas: bool = True) -> None:
    """Pool initializer: pin BLAS to one thread, load the templates once for this process."""
    if pin_blas:
        pin_blas_threads(1)
    _WORKER["settings"] = settings
    _WORKER["wave"] = np.asarray(wave, dtype=np.float64)
    _WORKER["tset"] = load_templates(settings.templates, settings.velscale, settings.template_fwhm_a)


def fit_task(args: tuple) -> FitResult:
    """Worker body: args = (flux, ivar, lsf_sigma, z, keep_model) on the initializer's wavelength grid."""
    flux, ivar, lsf, z, keep = args
    return fit_spectrum(_WORKER["wave"], flux, ivar, lsf, z, _WORKER["tset"], _WORKER["settings"], keep)


class FitPool:
    """Worker processes fitting spectra on one grid (Å): spawned on first need, BLAS pinned to 1 thread, templates
    loaded once each. Batches smaller than `min_pool_tasks` run in this process (worker start-up is ~3-5 s:
    pPXF imports matplotlib.pyplot, and the BC03 read takes ~1 s)."""

    def __init__(self, settings: FitSettings, wave: np.ndarray, workers: int = 0, min_pool_tasks: int = 32):
        self.settings, self.wave = settings, np.asarray(wave, dtype=np.float64)
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self.min_pool_tasks = min_pool_tasks
        self._pool = None

    def __enter__(self) -> "FitPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def _start(self) -> None:
        import multiprocessing as mp

        with one_blas_thread_env():
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=init_worker,
                                                      initargs=(self.settings, self.wave))

    def fit(self, flux: np.ndarray, ivar: np.ndarray, lsf_sigma: np.ndarray, z: np.ndarray,
            keep_model: np.ndarray | None = None) -> list[FitResult]:
        """Fit rows of (n, npix) spectra at redshifts z; one FitResult per row, in order."""
        n = len(z)
        keep = np.zeros(n, bool) if keep_model is None else np.asarray(keep_model, bool)
        tasks = [(flux[i], ivar[i], lsf_sigma[i], float(z[i]), bool(keep[i])) for i in range(n)]
        if self.workers > 1 and (self._pool is not None or n >= self.min_pool_tasks):
            if self._pool is None:
                self._start()
            return self._pool.map(fit_task, tasks, chunksize=max(1, min(8, n // (4 * self.workers))))
        if _WORKER.get("settings") != self.settings or "tset" not in _WORKER:
            init_worker(self.settings, self.wave, pin_blas=False)
        _WORKER["wave"] = self.wave
        with one_blas_thread():
            return [fit_task(t) for t in tasks]


def fit_many(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, lsf_sigma: np.ndarray, z: np.ndarray,
             settings: FitSettings = FitSettings(), workers: int = 0, keep_model: np.ndarray | None = None
             ) -> list[FitResult]:
    """Fit rows of (n, npix) spectra on one grid (Å) with a process pool (workers ≤ 0: all cores); one result per row."""
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    with FitPool(settings, wave, min(workers, max(len(z), 1)), min_pool_tasks=2) as pool:
        return pool.fit(flux, ivar, lsf_sigma, z, keep_model)
