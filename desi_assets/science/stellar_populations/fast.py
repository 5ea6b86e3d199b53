"""Fast stellar-population posteriors: a Bayesian model-library fit in the style of MPA-JHU (pure numpy).

Method (Kauffmann et al. 2003; Brinchmann et al. 2004):
- a library of `n_models` delayed-τ BC03 models is drawn once from the prior (tstart, τ, Z, Calzetti A_V, σ★)
  with the project's one SPS (`sps.py`). The library is the prior: its draws are the prior's samples, so at
  low S/N, where the data say little, the posterior is the prior, and its intervals hold the truth as often
  as they should only where the prior describes the galaxies fitted. The default ("population") is a
  galaxy-population prior: formation epochs uniform in cosmic time (tstart uniform in Gyr up to the age of the
  Universe at the galaxy's z) plus a `young_fraction` of young bursts (tstart log-uniform in 5 Myr–1 Gyr),
  τ and Z log-uniform, A_V exponential (scale `av_scale_mag`, most galaxies are not very dusty). "broad" is the
  earlier log-uniform-tstart, uniform-A_V prior, which puts half its models below 0.26 Gyr and A_V ~ 1 mag:
  on the mock survey (S/N mostly < 5) it biased age by −0.3 dex and A_V by +0.25 mag even on noiseless
  spectra, i.e. through the prior, not the noise; Their rest spectra (cells of 2 rest pixels, 60 km/s,
  velocity-broadened) are compressed by an uncentred PCA: model_j = n_j · r(λ) · Σ_k c_jk U_k(λ); the basis
  is stored as cumulative integrals, so a galaxy's 496 observed bins at its redshift are two gathers and a
  difference of K rows — no per-model spectra are ever built at fit time;
- their g, r, z, W1, W2 fluxes (the mock's `photometry.phot_ssp_grid` binning, total light) are tabulated on
  a redshift grid;
- per galaxy: emission lines masked at the known z, a fractional model-error floor added to the spectrum's
  and the photometry's variance, the best amplitude of every model found analytically for the spectrum
  (fibre light) and for the photometry (total light): with the K×K Gram matrix G of the basis under the
  weights, χ²_j = F − (c_j·v)² / (c_jᵀ G c_j) costs O(K²) per model. Weights exp(−Δχ²/2T) give weighted
  percentiles. Each model stands for the patch of parameter space around it that the discrete library cannot
  resolve: its parameters are spread by kernel_scale × kernel_width (the parameters' spread over its spectral
  nearest neighbours), and logmass/SFR also by the amplitude's own error (3-point Gauss–Hermite nodes).
- calibration (`calibrate`): the floor, T and the per-parameter kernel scales are chosen on held-out simulated
  galaxies so that [p16, p84] and [p2.5, p97.5] hold the truth 68% and 95% of the time, at low and high S/N
  (the high-S/N half weighted double: the catalogue's targets are quoted above S/N 10).
Stellar mass comes from the photometric amplitude (total light) when photometry exists, else from the
spectrum (fibre light only; status "ok_spectrum_only").
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from desi_assets.science import indices
from desi_assets.science.stellar_populations import photometry, sps
from desi_assets.science.wavelength import ARMS, BIN_FACTOR, DESI_PIXEL_STEP_A

PARAMS = ("logmass", "sfr", "age_mw", "dust_av", "zmet")
#: Percentiles stored per parameter and their column suffixes.
QUANTILES = (2.5, 16.0, 50.0, 84.0, 97.5)
QUANTILE_KEYS = ("p2_5", "p16", "p50", "p84", "p97_5")
#: Units of each parameter's columns.
UNITS = {"logmass": "log10 Msun (surviving, total light)", "sfr": "Msun/yr (100 Myr)", "age_mw": "Gyr (mass-weighted)",
         "dust_av": "mag (Calzetti A_V)", "zmet": "Z/Zsun"}
#: Fit statuses. Rows with STATUS_OK / STATUS_SPECTRUM_ONLY / STATUS_POOR_FIT carry percentiles; the others NaN.
STATUS_OK = "ok"
STATUS_SPECTRUM_ONLY = "ok_spectrum_only"
STATUS_POOR_FIT = "poor_fit"
STATUS_Z_RANGE = "z_out_of_range"
STATUS_BAD_FLUX = "bad_flux"
STATUS_NO_DATA = "no_good_pixels"

#: Vacuum rest wavelengths (Å) masked in the spectrum: nebular and AGN lines the continuum models lack.
EMISSION_LINES_A = (1549.06, 1908.73, 2326.0, 2796.35, 2803.53, 3346.8, 3426.9, 3727.09, 3729.88, 3869.86,
                    3890.17, 3968.59, 3971.20, 4102.89, 4341.69, 4364.44, 4686.0, 4862.69, 4960.30, 5008.24,
                    5877.25, 6302.05, 6365.5, 6549.86, 6564.61, 6585.27, 6718.29, 6732.67)
#: Cell = this many rest pixels of sps.rest_wave() (Δlnλ = 2e-4, 60 km/s).
CELL_PIX = 2
#: Rest window (Å) over which each model is normalised before the PCA.
NORM_WINDOW_A = (4000.0, 6000.0)
#: Rest window (Å) kept for the Dn4000/HδA index table.
INDEX_WINDOW_A = (3700.0, 4300.0)


@dataclass(frozen=True)
class FastSettings:
    """Library, prior, compression and calibration of the fast path (defaults: the measured full-size model)."""

    n_models: int = 20000
    seed: int = 14
    n_components: int = 48  # PCA components of the rest spectra
    n_pilot: int = 4000  # models the PCA basis is learnt from
    prior: str = "population"  # "population" or "broad" (module docstring)
    tstart_gyr: tuple[float, float] = (0.05, 13.5)  # population: uniform in Gyr; broad: log-uniform; per galaxy
    #                                                 cut at the age of the Universe at its z
    young_fraction: float = 0.15  # population: this fraction of the prior's mass at every z is young bursts,
    young_tstart_gyr: tuple[float, float] = (0.005, 1.0)  # with tstart log-uniform over this range
    tau_gyr: tuple[float, float] = (0.05, 20.0)  # log-uniform
    zmet_zsun: tuple[float, float] = (0.1, 3.0)  # log-uniform over the BC03 grid
    av_mag: tuple[float, float] = (0.0, 2.0)  # population: exponential, truncated to this range; broad: uniform
    av_scale_mag: float = 0.6  # population: e-folding of the A_V prior (mag)
    vdisp_kms: tuple[float, float] = (40.0, 350.0)  # uniform
    z_min: float = 0.002
    z_max: float = 1.6
    z_step_phot: float = 0.02  # redshift grid of the photometry table
    h0: float = 67.7  # flat ΛCDM (the mock's cosmology)
    om0: float = 0.31
    # calibration: `calibrate` with its default grid on 2,000 simulated galaxies through the DESI noise model
    # (bench/stellar_populations.py --calibrate 2000, seed 1007; 600 left the SFR kernel to sampling noise),
    # population prior; held-out coverage in the bench's output (simulated) and bench/stellar_populations_mock.py
    # (the demo's mock survey)
    spec_floor: float = 0.06  # fractional model-error floor on the spectrum (× smoothed data flux)
    # fractional floor on the photometry (not searched by `calibrate`): 3% plus the nebular lines the continuum
    # library lacks; in the mock survey's g/r/z fluxes at S/N > 2 they add 2–3% (84th percentile), 5–8% (95th)
    phot_floor: float = 0.05
    temperature: float = 1.25  # χ² → weights: exp(−Δχ²/2T)
    # × each model's library-resolution spread (kernel_width) in the percentiles: one per PARAMS (or one for all)
    kernel_scale: tuple[float, ...] = (0.0, 0.25, 0.125, 0.125, 0.125)
    kernel_neighbours: int = 8  # spectral nearest neighbours that define a model's library resolution
    line_mask_kms: float = 500.0  # half-width of the emission-line mask
    min_good_bins: int = 40
    poor_fit_chi2_dof: float = 5.0  # best-model χ²/dof of the spectrum, or χ² per band, above this: "poor_fit"
    max_weight_ratio: float = 1e-7  # models with weight below this × the best are dropped before percentiles
    chunk: int = 2000  # models synthesised at a time while building

    def to_json(self) -> str:
        """Settings as a JSON string (the model file stores it)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FastSettings:
        """Inverse of to_json (lists back to tuples)."""
        d = json.loads(text)
        d.setdefault("prior", "broad")  # files written before the population prior
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class CalibrationSet:
    """Held-out simulated galaxies with truth: inputs as fit_fast takes them plus truth[p] for p in PARAMS."""

    flux: np.ndarray
    ivar: np.ndarray
    z: np.ndarray
    phot: np.ndarray | None
    phot_ivar: np.ndarray | None
    truth: dict[str, np.ndarray]

    def snr(self) -> np.ndarray:
        """Per-pixel-equivalent continuum S/N: median over the 496 bins of flux·√ivar, / √16."""
        return spectrum_snr(self.flux, self.ivar)


def spectrum_snr(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Median over the 496 bins of flux·√ivar divided by 4 (√16 pixels a bin): S/N per 0.8 Å pixel."""
    f = np.atleast_2d(np.asarray(flux, np.float64))
    iv = np.atleast_2d(np.asarray(ivar, np.float64))
    with np.errstate(invalid="ignore"):
        return np.nanmedian(np.where(iv > 0, f * np.sqrt(np.clip(iv, 0, None)), np.nan), axis=1) / 4.0


@dataclass
class FastModel:
    """The trained fast path: library parameters, PCA basis (cumulative), photometry table; one .npz."""

    settings: FastSettings
    params: dict[str, np.ndarray]  # per model: tstart_gyr, tau_gyr, zmet, dust_av, vdisp, live_frac, age_mw, sfr_per_msun
    coeffs: np.ndarray  # (N, K) PCA coefficients of the normalised spectra
    norm: np.ndarray  # (N,) L☉/Å per M☉ formed, mean over NORM_WINDOW_A
    cum_basis: np.ndarray  # (K, ncell+1) ∫ r·U_k dλ at the cell edges (rest Å)
    cell_edges: np.ndarray  # (ncell+1,) rest Å
    phot_z: np.ndarray  # (nz,)
    phot_table: np.ndarray  # (nz, N, 5) nanomaggies per M☉ formed divided by the distance factor k(z)
    index_table: np.ndarray  # (N, 2) Dn4000, HδA (Å) of each model
    kernel_width: np.ndarray  # (N, 5) spread of PARAMS (dex; mag for dust_av) over each model's spectral neighbours
    calibration: dict[str, float] = field(default_factory=dict)  # measured coverage etc. (informative)

    @functools.cached_property
    def version(self) -> str:
        """Content hash (12 hex) of the settings and every array (computed once per object)."""
        h = hashlib.sha256(self.settings.to_json().encode())
        for k in sorted(self.params):
            h.update(k.encode()), h.update(np.ascontiguousarray(self.params[k]).tobytes())
        for a in (self.coeffs, self.norm, self.cum_basis, self.cell_edges, self.phot_z, self.phot_table,
                  self.index_table, self.kernel_width):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:12]

    def summary(self) -> dict:
        """Small JSON-able description: size, components, calibration constants and measured coverage."""
        s = self.settings
        return {"version": self.version, "n_models": self.n_models, "n_components": int(self.coeffs.shape[1]),
                "z_range": [s.z_min, s.z_max], "spec_floor": s.spec_floor, "phot_floor": s.phot_floor,
                "temperature": s.temperature, "kernel_scale": s.kernel_scale,
                "calibration": {k: round(float(v), 4) for k, v in self.calibration.items()}}

    @property
    def n_models(self) -> int:
        """Library size."""
        return int(self.coeffs.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the model to one .npz file (uncompressed: it loads in well under a second)."""
        arrays = {f"param_{k}": v for k, v in self.params.items()}
        buf = io.BytesIO()
        np.savez(buf, settings=np.array(self.settings.to_json()), calibration=np.array(json.dumps(self.calibration)),
                 coeffs=self.coeffs, norm=self.norm, cum_basis=self.cum_basis, cell_edges=self.cell_edges,
                 phot_z=self.phot_z, phot_table=self.phot_table, index_table=self.index_table,
                 kernel_width=self.kernel_width, **arrays)
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> FastModel:
        """Read a model written by save."""
        with np.load(path, allow_pickle=False) as z:
            params = {k[len("param_"):]: np.asarray(z[k]) for k in z.files if k.startswith("param_")}
            return cls(FastSettings.from_json(str(z["settings"])), params, np.asarray(z["coeffs"]),
                       np.asarray(z["norm"]), np.asarray(z["cum_basis"]), np.asarray(z["cell_edges"]),
                       np.asarray(z["phot_z"]), np.asarray(z["phot_table"]), np.asarray(z["index_table"]),
                       np.asarray(z["kernel_width"]), json.loads(str(z["calibration"])))


# ------------------------------------------------------------------ cosmology and grids
@functools.lru_cache(maxsize=4)
def _cosmo_table(h0: float, om0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=h0, Om0=om0)
    zz = np.linspace(0.0, 6.0, 6001)
    return zz, cosmo.luminosity_distance(zz).to_value("cm"), cosmo.age(zz).to_value("Gyr")


def distance_factor(z: np.ndarray, h0: float = 67.7, om0: float = 0.31) -> np.ndarray:
    """k(z) = L☉ / (4π d_L² (1+z)) / 1e-17: observed f_λ (1e-17 erg/s/cm²/Å) of 1 L☉/Å rest; NaN at z ≤ 0."""
    zz, dl, _ = _cosmo_table(h0, om0)
    z = np.asarray(z, dtype=np.float64)
    d = np.interp(z, zz, dl)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > 0, sps.L_SUN / (4 * np.pi * d**2 * (1 + z)) / 1e-17, np.nan)


def universe_age_gyr(z: np.ndarray, h0: float = 67.7, om0: float = 0.31) -> np.ndarray:
    """Age of the Universe (Gyr) at redshift z."""
    zz, _, age = _cosmo_table(h0, om0)
    return np.interp(np.asarray(z, dtype=np.float64), zz, age)


def bin_edges_obs() -> tuple[np.ndarray, np.ndarray]:
    """Observed-frame (lo, hi) edges (Å) of the 496 preprocessed bins, arms concatenated b, r, z."""
    lo, hi = [], []
    for arm in ARMS.values():
        w = arm.wavelength()[: arm.nbins * BIN_FACTOR].reshape(arm.nbins, BIN_FACTOR)
        lo.append(w[:, 0] - 0.5 * DESI_PIXEL_STEP_A)
        hi.append(w[:, -1] + 0.5 * DESI_PIXEL_STEP_A)
    return np.concatenate(lo), np.concatenate(hi)


@functools.lru_cache(maxsize=1)
def _ssp_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BC03 SSPs averaged over CELL_PIX rest pixels: (cell centres Å, cell edges Å, flux (1547, ncell) float32)."""
    g = sps.load_ssp_grid()
    nc = g.flux.shape[1] // CELL_PIX
    flux = g.flux[:, : nc * CELL_PIX].reshape(len(g.flux), nc, CELL_PIX).mean(axis=2).astype(np.float32)
    ln0 = np.log(g.wave[0])
    edges = np.exp(ln0 + sps.DLNL * (CELL_PIX * np.arange(nc + 1) - 0.5))
    centres = np.exp(ln0 + sps.DLNL * (CELL_PIX * np.arange(nc) + 0.5 * (CELL_PIX - 1)))
    return centres, edges, flux


def phot_band_weights(rest_centres: np.ndarray, z: float) -> np.ndarray:
    """(nbin, 5) weights turning mean f_λ per log bin (photometry.PHOT_DLNL, 1e-17 units) into nanomaggies at z:
    ∫ R λ dλ over each bin's observed edges over the AB normalisation, as photometry.sed_band_fluxes does."""
    edges = rest_centres[0] * np.exp(photometry.PHOT_DLNL * (np.arange(rest_centres.size + 1) - 0.5)) * (1 + z)
    out = np.empty((rest_centres.size, len(photometry.BAND_NAMES)))
    for j, b in enumerate(photometry.BAND_NAMES):
        lam, cum, norm = photometry.filter_cumulative(b)
        out[:, j] = np.diff(np.interp(edges, lam, cum)) / norm
    return out * 1e-17 / photometry.NANOMAGGY_CGS


def _mix(wa: np.ndarray, zmet: np.ndarray, ssp: np.ndarray) -> np.ndarray:
    """Σ over (Z, age) of weights × SSP rows (n, ncol) float32: only the 2 metallicities each row uses."""
    nage = wa.shape[1]
    wz = sps.zmet_weights(zmet)
    out = np.zeros((len(wa), ssp.shape[1]), dtype=np.float32)
    for k in range(wz.shape[1]):
        rows = np.flatnonzero(wz[:, k] > 0)
        if rows.size:
            out[rows] += (wz[rows, k, None] * wa[rows]).astype(np.float32) @ ssp[k * nage:(k + 1) * nage]
    return out


def draw_prior(settings: FastSettings, n: int, rng: np.random.Generator,
               tmax_gyr: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Parameters (n each) drawn from the settings' prior: tstart_gyr, tau_gyr, zmet, dust_av, vdisp, component
    (0 main, 1 young burst; population prior). With tmax_gyr (n,), tstart ≤ tmax_gyr (Gyr) per row, as the fit
    sees the prior of a galaxy whose Universe is tmax_gyr old; without, the library's z-independent draw."""
    tmax = np.full(n, np.inf) if tmax_gyr is None else np.broadcast_to(np.asarray(tmax_gyr, np.float64), (n,))

    def logu(lo, hi):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    lo, hi = settings.tstart_gyr
    comp = np.zeros(n)
    if settings.prior == "broad":
        ts = logu(lo, np.minimum(hi, tmax))
        av = rng.uniform(*settings.av_mag, n)
    elif settings.prior == "population":
        comp = (rng.uniform(size=n) < settings.young_fraction).astype(np.float64)
        ylo, yhi = settings.young_tstart_gyr
        ts = np.where(comp > 0, logu(ylo, np.minimum(yhi, tmax)), rng.uniform(lo, np.minimum(hi, tmax), n))
        a0, a1 = settings.av_mag
        u = rng.uniform(size=n)  # exponential truncated to [a0, a1] by inversion
        k = settings.av_scale_mag
        av = a0 - k * np.log1p(-u * (1 - np.exp(-(a1 - a0) / k)))
    else:
        raise ValueError(f"unknown prior {settings.prior!r}: 'population' or 'broad'")
    return {"tstart_gyr": ts, "tau_gyr": logu(*settings.tau_gyr), "zmet": logu(*settings.zmet_zsun),
            "dust_av": av, "vdisp": rng.uniform(*settings.vdisp_kms, n), "component": comp}


def log_prior_weights(model: FastModel, z: float) -> np.ndarray:
    """Per library model, log of the weight that keeps the population prior's young_fraction at redshift z
    (the main component's uniform tstart loses its draws older than the Universe; the young one loses none)."""
    s = model.settings
    comp = model.params.get("component")
    if s.prior != "population" or comp is None or not 0 < s.young_fraction < 1:
        return np.zeros(model.n_models)
    lo, hi = s.tstart_gyr
    surv = np.clip((min(hi, float(universe_age_gyr(z, s.h0, s.om0))) - lo) / (hi - lo), 1e-6, 1.0)
    return np.where(comp > 0, 0.0, -np.log(surv))


def _chunk_spectra(p: dict[str, np.ndarray], sl: slice) -> tuple[np.ndarray, np.ndarray]:
    """Rest cell spectra (n, ncell) L☉/Å per M☉ formed and SFH weights (n, 221) for library rows sl."""
    centres, _, ssp = _ssp_cells()
    wa = sps.sfh_weights(p["tstart_gyr"][sl], p["tau_gyr"][sl])
    spec = _mix(wa, p["zmet"][sl], ssp)
    spec *= (10 ** (-0.4 * p["dust_av"][sl, None] * sps.calzetti_k(centres)[None, :] / 4.05)).astype(np.float32)
    sig = p["vdisp"][sl] / (sps.C_KMS * sps.DLNL * CELL_PIX)
    return sps.broaden_loglam(spec, sig), wa


def _randomized_basis(x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 3) -> np.ndarray:
    """Top-k right singular vectors (k, ncol) of x (uncentred), randomized range finder with power iterations."""
    q = np.linalg.qr(x.T @ rng.standard_normal((x.shape[0], k + 20)).astype(np.float32))[0]
    for _ in range(n_iter):
        q = np.linalg.qr(x.T @ (x @ q))[0]
    _, _, vt = np.linalg.svd(x @ q, full_matrices=False)
    return (vt[:k] @ q.T).astype(np.float64)


def build_fast_model(settings: FastSettings = FastSettings(), calibration: CalibrationSet | None = None) -> FastModel:
    """Draw the library, compress its spectra, tabulate its photometry; calibrate T and floors if given a set."""
    rng = np.random.default_rng(settings.seed)
    n = settings.n_models
    p = draw_prior(settings, n, rng)
    centres, edges, _ = _ssp_cells()
    nsel = (centres >= NORM_WINDOW_A[0]) & (centres <= NORM_WINDOW_A[1])
    isel = (centres >= INDEX_WINDOW_A[0]) & (centres <= INDEX_WINDOW_A[1])
    pcw, pssp = photometry.phot_ssp_grid()  # the mock's photometric SSP grid (600 km/s bins from 1400 Å)
    pssp = pssp.astype(np.float32)
    zgrid = np.round(np.arange(0.0, settings.z_max + settings.z_step_phot + 1e-9, settings.z_step_phot), 6)
    zgrid[0] = min(settings.z_min, 1e-3)
    bands = np.concatenate([phot_band_weights(pcw, zz) for zz in zgrid], axis=1).astype(np.float32)
    kdust_phot = sps.calzetti_k(pcw)[None, :] / 4.05

    norm = np.empty(n)
    idx = np.empty((n, 2))
    phot = np.empty((len(zgrid), n, len(photometry.BAND_NAMES)), dtype=np.float32)
    props = {k: np.empty(n) for k in ("live_frac", "age_mw", "sfr_per_msun")}
    npil = min(settings.n_pilot, n)
    pilot = []
    coeffs = None
    basis = ref = None
    for pass_ in ("pilot", "project"):
        for i0 in range(0, n, settings.chunk):
            sl = slice(i0, min(n, i0 + settings.chunk))
            if pass_ == "pilot" and i0 >= npil:
                break
            spec, wa = _chunk_spectra(p, sl)
            nj = spec[:, nsel].mean(axis=1).astype(np.float64)
            x = spec / nj[:, None].astype(np.float32)
            if pass_ == "pilot":
                pilot.append(x)
                continue
            norm[sl] = nj
            coeffs[sl] = (x / ref[None, :]).astype(np.float64) @ basis.T
            idx[sl, 0] = indices.dn4000(centres[isel], spec[:, isel])
            idx[sl, 1] = indices.hdelta_a(centres[isel], spec[:, isel])
            pr = sps.properties_from_weights(wa, p["zmet"][sl])
            props["live_frac"][sl], props["age_mw"][sl], props["sfr_per_msun"][sl] = (
                pr["live_frac"], pr["age_mw_gyr"], pr["sfr_per_msun"])
            sed = _mix(wa, p["zmet"][sl], pssp)
            sed *= (10 ** (-0.4 * p["dust_av"][sl, None] * kdust_phot)).astype(np.float32)
            phot[:, sl, :] = (sed @ bands).reshape(len(sed), len(zgrid), -1).transpose(1, 0, 2)
        if pass_ == "pilot":
            xp = np.concatenate(pilot)
            ref = xp.mean(axis=0)
            basis = _randomized_basis(xp / ref[None, :], settings.n_components, rng)
            coeffs = np.empty((n, settings.n_components))
            del pilot, xp
    cell_w = np.diff(edges)
    cum = np.concatenate([np.zeros((len(basis), 1)), np.cumsum(basis * ref[None, :] * cell_w[None, :], axis=1)], 1)
    params = {**p, **props}
    kw = library_resolution(coeffs, param_space(params, norm), settings.kernel_neighbours)
    model = FastModel(settings, params, coeffs, norm, cum, edges, zgrid, phot, idx, kw)
    if calibration is not None:
        model = calibrate(model, calibration)
    return model


def param_space(params: dict[str, np.ndarray], norm: np.ndarray) -> np.ndarray:
    """(N, 5) library parameters in the space their kernels act in: log M*/L (per L☉/Å at 4000–6000 Å),
    log sSFR, log age, A_V, log Z."""
    with np.errstate(divide="ignore"):
        return np.stack([np.log10(params["live_frac"] / norm),
                         np.log10(np.maximum(params["sfr_per_msun"] / params["live_frac"], 1e-20)),
                         np.log10(params["age_mw"]), params["dust_av"], np.log10(params["zmet"])], axis=1)


def library_resolution(coeffs: np.ndarray, values: np.ndarray, k: int, block: int = 500) -> np.ndarray:
    """Per model, the robust spread of each column of values over its k nearest neighbours in PCA-coefficient
    space (rms spectral-shape difference): how well the discrete library resolves a parameter there."""
    n = len(coeffs)
    k = max(1, min(k, n - 1))
    c = coeffs.astype(np.float64)
    sq = np.einsum("ij,ij->i", c, c)
    out = np.empty_like(values)
    for i0 in range(0, n, block):
        sl = slice(i0, min(n, i0 + block))
        d = sq[sl, None] + sq[None, :] - 2 * c[sl] @ c.T
        d[np.arange(d.shape[0]), np.arange(sl.start, sl.stop)] = np.inf
        nn = np.argpartition(d, k, axis=1)[:, :k]
        v = values[nn]  # (b, k, 5)
        v = np.where(np.isfinite(v), v, np.nan)
        out[sl] = np.sqrt(np.nanmean((v - values[sl, None, :]) ** 2, axis=1))
    return np.nan_to_num(out, nan=0.0, posinf=0.0)


# ------------------------------------------------------------------ the fit
def _binned_basis(model: FastModel, z: float, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, nbin) mean of r·U_k over each bin's rest interval, and a mask of bins inside the rest grid."""
    e = model.cell_edges
    lr, hr = lo / (1 + z), hi / (1 + z)
    inside = (lr > e[0]) & (hr < e[-1])
    dl = np.log(e[1] / e[0])

    def at(x):
        u = np.clip((np.log(np.clip(x, e[0], e[-1])) - np.log(e[0])) / dl, 0, len(e) - 1.000001)
        i = np.floor(u).astype(np.int64)
        # C is linear inside a cell in λ, not in ln λ: interpolate in λ between the two edges
        t = (np.clip(x, e[0], e[-1]) - e[i]) / (e[i + 1] - e[i])
        return model.cum_basis[:, i] * (1 - t) + model.cum_basis[:, i + 1] * t

    return (at(hr) - at(lr)) / (hr - lr)[None, :], inside


def _line_mask(z: float, lo: np.ndarray, hi: np.ndarray, kms: float) -> np.ndarray:
    """True for bins that overlap ±kms around a redshifted emission line."""
    lam = np.asarray(EMISSION_LINES_A) * (1 + z)
    half = lam * kms / sps.C_KMS
    return ((lo[:, None] < lam + half) & (hi[:, None] > lam - half)).any(axis=1)


def smoothed_abs_flux(flux: np.ndarray, good: np.ndarray, width: int = 9) -> np.ndarray:
    """Running median of |flux| over good bins (flux units; for the model-error floors)."""
    from scipy.ndimage import median_filter

    f = np.where(good, np.abs(flux), np.nan)
    med = np.nanmedian(f) if good.any() else 0.0
    return median_filter(np.where(good, np.abs(flux), med), size=width, mode="nearest")


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles q (0–1) of weighted samples (midpoint cumulative weights, linear interpolation)."""
    o = np.argsort(values)
    v, w = values[o], weights[o]
    c = np.cumsum(w)
    c = (c - 0.5 * w) / c[-1]
    return np.interp(q, c, v)


#: 3-point Gauss–Hermite nodes (σ units) and weights: mean, variance and kurtosis of a Gaussian.
_GH_NODES = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)])
_GH_WEIGHTS = np.array([1 / 6, 2 / 3, 1 / 6])


def _row_terms(model: FastModel, flux, ivar, z, phot, phot_ivar, lo, hi, floor_spec, floor_phot):
    """χ² of every model for one galaxy: dict with chi2 (N,), log-mass, σ, status, chi2_dof; or a status string."""
    s = model.settings
    if not np.isfinite(z) or z < s.z_min or z > s.z_max:
        return STATUS_Z_RANGE
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    basis, inside = _binned_basis(model, z, lo, hi)
    good &= inside
    if good.sum() < s.min_good_bins:
        return f"{STATUS_NO_DATA}: {int(good.sum())} usable bins < {s.min_good_bins}"
    f = np.where(good, flux, 0.0)
    if not np.median(f[good]) > 0:
        return f"{STATUS_BAD_FLUX}: median flux {np.median(f[good]):.3g} <= 0"
    good &= ~_line_mask(z, lo, hi, s.line_mask_kms)
    if good.sum() < s.min_good_bins:
        return f"{STATUS_NO_DATA}: {int(good.sum())} line-free bins < {s.min_good_bins}"
    sm = smoothed_abs_flux(f, good)
    w = np.where(good, 1.0 / (1.0 / np.where(good, ivar, 1.0) + (floor_spec * sm) ** 2), 0.0)
    v = basis @ (w * f)
    gram = (basis * w[None, :]) @ basis.T
    c = model.coeffs
    a_num = c @ v
    b_den = np.einsum("jk,jk->j", c @ gram, c)
    b_den = np.maximum(b_den, 1e-300)
    fsq = float(np.sum(w * f * f))
    pos = a_num > 0
    chi2_s = np.where(pos, fsq - a_num**2 / b_den, fsq)
    amp_s = np.where(pos, a_num / b_den, np.nan)  # in units of n_j k(z) M☉ formed (fibre)
    kz = float(distance_factor(np.array([z]), s.h0, s.om0)[0])
    prior = model.params["tstart_gyr"] <= universe_age_gyr(z, s.h0, s.om0)
    ngood = int(good.sum())
    out = {"chi2_spec": chi2_s, "prior": prior & pos, "ngood": ngood, "log_prior": log_prior_weights(model, z)}
    # photometry: total light
    have_phot = False
    if phot is not None and phot_ivar is not None:
        pb = np.asarray(phot, np.float64)
        pib = np.asarray(phot_ivar, np.float64)
        pg = np.isfinite(pb) & np.isfinite(pib) & (pib > 0)
        if pg.any():
            jz = int(np.clip(np.searchsorted(model.phot_z, z) - 1, 0, len(model.phot_z) - 2))
            t = (z - model.phot_z[jz]) / (model.phot_z[jz + 1] - model.phot_z[jz])
            pm = (model.phot_table[jz, :, pg] * (1 - t) + model.phot_table[jz + 1, :, pg] * t).T * kz  # (N, nb)
            d = pb[pg]
            wp = 1.0 / (1.0 / pib[pg] + (floor_phot * np.abs(d)) ** 2)
            ap_num = pm @ (wp * d)
            bp_den = np.maximum((pm**2) @ wp, 1e-300)
            posp = ap_num > 0
            if posp.any():
                have_phot = True
                chi2_p = np.where(posp, float(np.sum(wp * d * d)) - ap_num**2 / bp_den, np.inf)
                mass_formed = np.where(posp, ap_num / bp_den, np.nan)
                sig_rel = 1.0 / np.sqrt(bp_den) / np.where(posp, mass_formed, 1.0)
                out["chi2_phot"] = chi2_p
                out["prior"] = out["prior"] & posp
                out["nphot"] = int(pg.sum())
    if not have_phot:
        mass_formed = amp_s / (model.norm * kz)
        sig_rel = 1.0 / np.sqrt(b_den) / np.where(pos, amp_s, 1.0)
        out["chi2_phot"] = np.zeros_like(chi2_s)
        out["nphot"] = 0
    out["have_phot"] = have_phot
    with np.errstate(divide="ignore", invalid="ignore"):
        out["logmass_formed"] = np.log10(mass_formed)
    out["sig_logmass"] = np.clip(0.4343 * sig_rel, 0, 2.0)
    return out


def _summaries(model: FastModel, terms: dict, temperature: float, kernel_scale) -> dict[str, np.ndarray]:
    """Weighted percentiles of PARAMS from one galaxy's χ² terms; also chi2_dof."""
    s = model.settings
    chi2 = terms["chi2_spec"] + terms["chi2_phot"]
    ok = terms["prior"] & np.isfinite(chi2) & np.isfinite(terms["logmass_formed"])
    res = {}
    if not ok.any():
        return res
    lp = terms.get("log_prior", 0.0)
    lw = np.where(ok, -chi2 / (2 * temperature) + lp, -np.inf)
    lw = lw - lw[ok].max()
    keep = np.flatnonzero(lw > np.log(s.max_weight_ratio))
    w = np.exp(lw[keep])
    lm = terms["logmass_formed"][keep]
    sig_amp = terms["sig_logmass"][keep]
    ib_local = int(np.flatnonzero(ok)[np.argmin(chi2[ok])])
    chi2_best, chi2_spec_best = chi2[ib_local], terms["chi2_spec"][ib_local]
    if "index" in terms:  # pruned terms (fit_terms): positions → library rows
        keep = terms["index"][keep]
    P = {k: v[keep] for k, v in model.params.items()}
    kw = model.kernel_width[keep] * np.broadcast_to(np.asarray(kernel_scale, np.float64), (len(PARAMS),))[None, :]
    nodes = _GH_NODES[None, :]
    ww = (w[:, None] * _GH_WEIGHTS[None, :]).ravel()
    # each model stands for a patch of parameter space of its library resolution (kernel_width), and the
    # amplitude carries its own error: both spread by 3-point Gauss–Hermite nodes
    sig_m = np.sqrt(sig_amp**2 + kw[:, 0] ** 2)
    logmass = (lm + np.log10(P["live_frac"]))[:, None] + sig_m[:, None] * nodes
    with np.errstate(divide="ignore"):
        lsfr = lm + np.log10(np.maximum(P["sfr_per_msun"], 1e-30))
    sig_s = np.sqrt(sig_amp**2 + kw[:, 1] ** 2)
    sfr = 10 ** (lsfr[:, None] + sig_s[:, None] * nodes)
    age = 10 ** (np.log10(P["age_mw"])[:, None] + kw[:, 2:3] * nodes)
    av = np.clip(P["dust_av"][:, None] + kw[:, 3:4] * nodes, *s.av_mag)  # kernels stay inside the prior
    zmet = np.clip(10 ** (np.log10(P["zmet"])[:, None] + kw[:, 4:5] * nodes), *s.zmet_zsun)
    vals = {"logmass": logmass.ravel(), "sfr": sfr.ravel(), "age_mw": age.ravel(), "dust_av": av.ravel(),
            "zmet": zmet.ravel()}
    q = np.asarray(QUANTILES) / 100
    for p_ in PARAMS:
        for key, val in zip(QUANTILE_KEYS, _weighted_quantiles(vals[p_], ww, q)):
            res[f"{p_}_{key}"] = val
    dof = max(terms["ngood"] + terms["nphot"] - 6, 1)
    res["chi2_dof"] = float(chi2_best / dof)
    res["chi2_dof_spec"] = float(chi2_spec_best / max(terms["ngood"] - 5, 1))
    res["chi2_per_band"] = float(terms["chi2_phot"][ib_local] / terms["nphot"]) if terms["nphot"] else np.nan
    res["n_eff"] = float(w.sum() ** 2 / np.sum(w**2))
    return res


def _inputs(flux, ivar, z, phot, phot_ivar):
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    n = len(flux)
    if ivar.shape != flux.shape or len(z) != n:
        raise ValueError(f"flux {flux.shape}, ivar {ivar.shape} and z {z.shape} must agree")
    if phot is not None:
        phot = np.atleast_2d(np.asarray(phot, dtype=np.float64))
        phot_ivar = np.zeros_like(phot) if phot_ivar is None else np.atleast_2d(np.asarray(phot_ivar, np.float64))
        if phot.shape != (n, len(photometry.BAND_NAMES)) or phot_ivar.shape != phot.shape:
            raise ValueError(f"phot {phot.shape} and phot_ivar must be (n, {len(photometry.BAND_NAMES)})")
    return flux, ivar, z, phot, phot_ivar


def fit_fast(model: FastModel, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray,
             phot: np.ndarray | None = None, phot_ivar: np.ndarray | None = None,
             temperature: float | None = None, kernel_scale=None) -> dict[str, np.ndarray]:
    """Posterior percentiles of PARAMS for n galaxies (flux/ivar (n, 496) in 1e-17 erg/s/cm²/Å units,
    phot (n, 5) nanomaggies); plus fit_status, cost_s (s per galaxy), chi2_dof, n_eff. Never raises on bad rows."""
    flux, ivar, z, phot, phot_ivar = _inputs(flux, ivar, z, phot, phot_ivar)
    s = model.settings
    temp = s.temperature if temperature is None else temperature
    n = len(flux)
    lo, hi = bin_edges_obs()
    if flux.shape[1] != lo.size:
        raise ValueError(f"flux has {flux.shape[1]} bins, expected {lo.size}")
    keys = [f"{p}_{q}" for p in PARAMS for q in QUANTILE_KEYS] + ["chi2_dof", "chi2_dof_spec", "chi2_per_band",
                                                                  "n_eff"]
    out = {k: np.full(n, np.nan) for k in keys}
    status = np.full(n, STATUS_OK, dtype=object)
    cost = np.zeros(n)
    for i in range(n):
        t0 = time.perf_counter()
        try:
            terms = _row_terms(model, flux[i], ivar[i], z[i], None if phot is None else phot[i],
                               None if phot_ivar is None else phot_ivar[i], lo, hi, s.spec_floor, s.phot_floor)
            if isinstance(terms, str):
                status[i] = terms
            else:
                res = _summaries(model, terms, temp, s.kernel_scale if kernel_scale is None else kernel_scale)
                if not res:
                    status[i] = f"{STATUS_BAD_FLUX}: no model with a positive amplitude"
                else:
                    for k, v in res.items():
                        out[k][i] = v
                    if res["chi2_dof_spec"] > s.poor_fit_chi2_dof:
                        status[i] = f"{STATUS_POOR_FIT}: chi2/dof {res['chi2_dof_spec']:.1f} > {s.poor_fit_chi2_dof}"
                    elif res["chi2_per_band"] > s.poor_fit_chi2_dof:  # spectrum and photometry disagree
                        status[i] = (f"{STATUS_POOR_FIT}: photometry chi2/band {res['chi2_per_band']:.1f} > "
                                     f"{s.poor_fit_chi2_dof}")
                    elif not terms["have_phot"]:
                        status[i] = STATUS_SPECTRUM_ONLY
        except Exception as e:  # noqa: BLE001 — a bad row gets a status, never a crash
            status[i] = f"failed: {type(e).__name__}: {e}"
        cost[i] = time.perf_counter() - t0
    out["fit_status"] = status
    out["cost_s"] = cost
    return out


# ------------------------------------------------------------------ calibration
def _prune(model: FastModel, terms, max_temperature: float):
    """Keep only the models that can carry weight at temperatures up to max_temperature (saves memory)."""
    if isinstance(terms, str):
        return terms
    chi2 = terms["chi2_spec"] + terms["chi2_phot"]
    ok = terms["prior"] & np.isfinite(chi2) & np.isfinite(terms["logmass_formed"])
    if not ok.any():
        return terms
    lp = np.asarray(terms.get("log_prior", 0.0))
    cut = chi2[ok].min() - 2 * max_temperature * (np.log(model.settings.max_weight_ratio) - np.ptp(lp))
    idx = np.flatnonzero(ok & (chi2 <= cut))
    out = {k: (v[idx] if isinstance(v, np.ndarray) and v.shape == chi2.shape else v) for k, v in terms.items()}
    out["index"] = idx
    return out


def fit_terms(model: FastModel, data: CalibrationSet, spec_floor: float, phot_floor: float,
              max_temperature: float = 20.0) -> list:
    """Per galaxy χ² terms (or a status string) at the given floors, pruned for temperatures ≤ max_temperature."""
    flux, ivar, z, phot, phot_ivar = _inputs(data.flux, data.ivar, data.z, data.phot, data.phot_ivar)
    lo, hi = bin_edges_obs()
    return [_prune(model, _row_terms(model, flux[i], ivar[i], z[i], None if phot is None else phot[i],
                                     None if phot_ivar is None else phot_ivar[i], lo, hi, spec_floor, phot_floor),
                   max_temperature)
            for i in range(len(flux))]


def summaries_from_terms(model: FastModel, terms: list, temperature: float,
                         kernel_scale=1.0) -> dict[str, np.ndarray]:
    """Percentile columns (NaN where a row failed) from fit_terms output at a temperature."""
    keys = [f"{p}_{q}" for p in PARAMS for q in QUANTILE_KEYS]
    out = {k: np.full(len(terms), np.nan) for k in keys}
    for i, t in enumerate(terms):
        if isinstance(t, str):
            continue
        for k, v in _summaries(model, t, temperature, kernel_scale).items():
            if k in out:
                out[k][i] = v
    return out


def coverage_loss(truth: dict[str, np.ndarray], summ: dict[str, np.ndarray],
                  rows: list[np.ndarray] | None = None, weights: tuple[float, ...] | None = None
                  ) -> tuple[dict[str, float], dict]:
    """Per parameter Σ over row subsets (weighted) of (cov68 − 0.68)² + (cov95 − 0.95)²; and all rows' coverages."""
    from desi_assets.science.stellar_populations.coverage import coverage_table

    n = len(next(iter(truth.values())))
    subsets = rows or [np.ones(n, bool)]
    loss = {p: 0.0 for p in PARAMS}
    for m, wt in zip(subsets, weights or (1.0,) * len(subsets)):
        tab = coverage_table({k: v[m] for k, v in truth.items()}, {k: v[m] for k, v in summ.items()}, PARAMS)
        for p, v in tab.items():
            loss[p] += wt * ((v["cov68"] - 0.68) ** 2 + (v["cov95"] - 0.95) ** 2) if v["n"] else 0.0
    return loss, coverage_table(truth, summ, PARAMS)


def calibrate(model: FastModel, data: CalibrationSet, spec_floors=(0.04, 0.06, 0.08),
              temperatures=(1.0, 1.25, 1.5, 2.0), kernel_scales=(0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0),
              snr_split: float = 10.0, snr_weights: tuple[float, float] = (0.5, 1.0)) -> FastModel:
    """Grid search of the spectrum floor, the temperature and one kernel scale per parameter for coverage of
    68% and 95% on held-out galaxies below and above S/N snr_split (per pixel), the losses weighted snr_weights
    (the catalogue's targets are quoted above S/N 10). The defaults give FastSettings' calibration constants."""
    snr = data.snr()
    pairs = [(m, w) for m, w in zip((snr <= snr_split, snr > snr_split), snr_weights) if m.sum() >= 20]
    rows = [m for m, _ in pairs] or None
    wts = tuple(w for _, w in pairs) or None
    best = None
    for fl in spec_floors:
        terms = fit_terms(model, data, fl, model.settings.phot_floor, max(temperatures))
        for t in temperatures:
            per = []
            for ks in kernel_scales:
                loss, tab = coverage_loss(data.truth, summaries_from_terms(model, terms, t, ks), rows, wts)
                per.append((loss, tab))
            pick = [min(range(len(kernel_scales)), key=lambda i: per[i][0][p]) for p in PARAMS]
            total = sum(per[i][0][p] for i, p in zip(pick, PARAMS))
            if best is None or total < best[0]:
                tab = {p: per[i][1][p] for i, p in zip(pick, PARAMS)}
                best = (total, fl, t, tuple(float(kernel_scales[i]) for i in pick), tab)
    loss, fl, t, ks, tab = best
    settings = dataclasses.replace(model.settings, spec_floor=fl, temperature=t, kernel_scale=ks)
    info = {"loss": loss, "n": len(data.z), **{f"{p}_cov68": v["cov68"] for p, v in tab.items()},
            **{f"{p}_cov95": v["cov95"] for p, v in tab.items()}}
    return dataclasses.replace(model, settings=settings, calibration=info)


# ------------------------------------------------------------------ index age and tension
@functools.lru_cache(maxsize=4)
def _index_tree(key: str, table_bytes: bytes, shape: tuple[int, int]):
    from scipy.spatial import cKDTree

    tab = np.frombuffer(table_bytes, dtype=np.float64).reshape(shape)
    ok = np.isfinite(tab).all(axis=1)
    return cKDTree(tab[ok] / INDEX_SCALES[None, :]), np.flatnonzero(ok)


#: Index-space distance scales (Dn4000, HδA Å) for the nearest-neighbour age.
INDEX_SCALES = np.array([0.05, 1.0])


@functools.lru_cache(maxsize=1)
def default_index_model() -> FastModel:
    """A small library (3,000 models) for the index age when no trained model is given (cached per process)."""
    return build_fast_model(FastSettings(n_models=3000, n_pilot=1000, n_components=8, z_step_phot=0.4))


def _index_query(dn4000, hdelta_a, model: FastModel | None):
    """The model, its (Dn4000, HδA) KD-tree and rows, the query points (n, 2) and which are finite."""
    m = default_index_model() if model is None else model
    tab = np.ascontiguousarray(m.index_table, dtype=np.float64)
    tree, rows = _index_tree(m.version, tab.tobytes(), tab.shape)
    x = np.stack([np.atleast_1d(np.asarray(dn4000, np.float64)), np.atleast_1d(np.asarray(hdelta_a, np.float64))], 1)
    return m, tree, rows, x, np.isfinite(x).all(axis=1)


def dn4000_hdelta_age(dn4000: np.ndarray, hdelta_a: np.ndarray, model: FastModel | None = None, k: int = 40,
                      return_scatter: bool = False):
    """Mass-weighted age (Gyr) from Dn4000 and HδA (Å): median over the k library models nearest in index space.

    With return_scatter, also the neighbours' robust scatter in dex. NaN where an index is NaN.
    """
    m, tree, rows, x, ok = _index_query(dn4000, hdelta_a, model)
    age = np.full(len(x), np.nan)
    scat = np.full(len(x), np.nan)
    if ok.any():
        _, nn = tree.query(x[ok] / INDEX_SCALES[None, :], k=min(k, len(rows)))
        la = np.log10(m.params["age_mw"][rows[nn]])
        med = np.median(la, axis=1)
        age[ok] = 10**med
        scat[ok] = 1.4826 * np.median(np.abs(la - med[:, None]), axis=1)
    return (age, scat) if return_scatter else age


def index_locus_distance(dn4000: np.ndarray, hdelta_a: np.ndarray, model: FastModel | None = None) -> np.ndarray:
    """Distance (units of INDEX_SCALES: 0.05 in Dn4000, 1 Å in HδA) from (Dn4000, HδA) to the nearest library model:
    large where no delayed-τ history makes those indices (a burst on an old population, a quenched SFH)."""
    _, tree, _, x, ok = _index_query(dn4000, hdelta_a, model)
    d = np.full(len(x), np.nan)
    if ok.any():
        d[ok] = tree.query(x[ok] / INDEX_SCALES[None, :], k=1)[0]
    return d


def tension_flag(age_p50_gyr: np.ndarray, age_p16: np.ndarray, age_p84: np.ndarray, dn4000: np.ndarray,
                 hdelta_a: np.ndarray, model: FastModel | None = None, nsigma: float = 2.0,
                 max_locus_distance: float | None = None, dn4000_err: np.ndarray | None = None,
                 hdelta_a_err: np.ndarray | None = None) -> np.ndarray:
    """True where the fit's age and the Dn4000/HδA age differ by more than nsigma × their combined σ (dex), or,
    with max_locus_distance, where the indices lie farther than that from every library model.

    The index age's σ is the library neighbours' scatter plus, with dn4000_err/hdelta_a_err (1σ; Å for HδA),
    the index measurement errors propagated by finite differences (a noisy index cannot raise the flag).
    """
    a50, a16, a84 = (np.atleast_1d(np.asarray(a, np.float64)) for a in (age_p50_gyr, age_p16, age_p84))
    idx_age, idx_sig = dn4000_hdelta_age(dn4000, hdelta_a, model=model, return_scatter=True)
    var_meas = np.zeros_like(idx_sig)
    dn, hd = np.atleast_1d(np.asarray(dn4000, np.float64)), np.atleast_1d(np.asarray(hdelta_a, np.float64))
    shifts = ((dn4000_err, lambda e: (dn + e, hd, dn - e, hd)), (hdelta_a_err, lambda e: (dn, hd + e, dn, hd - e)))
    for err, shift in shifts:
        if err is not None:
            e = np.nan_to_num(np.atleast_1d(np.asarray(err, np.float64)), nan=np.inf)
            e = np.minimum(e, 10.0)  # a missing error counts as an uninformative index
            d1, h1, d2, h2 = shift(e)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = (np.log10(dn4000_hdelta_age(d1, h1, model=model))
                        - np.log10(dn4000_hdelta_age(d2, h2, model=model)))
            var_meas += np.nan_to_num(0.5 * step, nan=1.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sig_fit = 0.5 * (np.log10(a84) - np.log10(a16))
        diff = np.abs(np.log10(a50) - np.log10(idx_age))
        flag = diff > nsigma * np.sqrt(sig_fit**2 + idx_sig**2 + var_meas + 0.05**2)
    flag = np.where(np.isfinite(diff) & np.isfinite(sig_fit), flag, False)
    if max_locus_distance is not None:
        d = index_locus_distance(dn4000, hdelta_a, model)
        flag |= np.nan_to_num(d, nan=0.0) > max_locus_distance
    return flag
