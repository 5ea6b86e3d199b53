"""The whole cosmic-web computation on one catalog of positions: what the asset, the CLI and the bench call.

`cosmic_web(ra, dec, z, params, query=…)` uses every valid row of the catalog as context
(density tracers, footprint) and returns the columns for the `query` rows. A partition calls
it with its pixel plus the buffer pixels and `query` = its own rows; a survey-wide run passes
the whole catalog. Galaxies whose buffer sphere (radius `buffer_mpc`) leaves the footprint or
the tracer redshift range are flagged `edge`; for every other galaxy the partitioned result
equals the global one: kNN exactly (the buffer covers the search). The T-web has two modes
(`tidal_field`):
- "survey" (default): δ and T_ij are computed ONCE over the whole survey (`survey_field`, a
  whole-lattice FFT like DESI's T-web) and every run samples that one field, so δ, λ and WEB_CLASS
  are bit-identical partitioned or global, edge galaxies included;
- "local": each run builds its own lattice (cells of one lattice fixed in equatorial comoving
  coordinates, one survey n̄) with compact kernels (a cut Gaussian and a tidal radius) whose reach
  `locality_mpc()` the buffer must cover; equal up to FFT round-off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import healpy as hp
import numpy as np

from desi_assets.science.cosmic_web import filaments as F
from desi_assets.science.cosmic_web import footprint as FP
from desi_assets.science.cosmic_web import tweb as T
from desi_assets.science.cosmic_web.coords import MAX_Z, comoving_distance, frame_rotation, hubble_h0, radecz_to_xyz
from desi_assets.science.cosmic_web.knn import projected_knn, surface_density
from desi_assets.science.cosmic_web.survey_field import SurveyField, survey_tidal_field

#: Row status values (every input row gets one; nothing is dropped).
STATUS_OK = "ok"
STATUS_BAD_Z = "invalid_redshift"  # NaN, infinite, negative or > MAX_Z redshift, or non-finite RA/Dec
STATUS_DUPLICATE = "duplicate"  # same id as an earlier row: values copied from it, not a tracer twice
FILAMENT_METHODS = ("tweb", "mst", "none")  # none: no skeleton, DIST_FILAMENT is NaN
TIDAL_FIELDS = ("survey", "local")


@dataclass(frozen=True)
class CosmicWebParams:
    """Settings of the layer (lengths in comoving Mpc); the Dagster config and the CLI take their defaults here."""

    cosmology: str = "Planck18"
    knn_dv_kms: float = 1000.0  # neighbours count within |cΔz| < this
    tracer_zmin: float = 0.05  # density-defining tracers: zmin ≤ z < zmax (volume-limited selection)
    tracer_zmax: float = 0.4
    tracer_abs_mag_max: float | None = None  # and M = m − 5 log10(D_L/10 pc) < this when magnitudes are given
    cell_mpc: float = 3.125  # T-web lattice cell (DESI DR1 T-web paper: 800 Mpc / 256)
    smoothing_mpc: float = 5.0  # Gaussian R_s: DESI DR1-like volume fractions on the positions mock with λ_th
    #                             below (bench/cosmic_web.py calibrate --smoothings 5 --thresholds 0.02)
    smoothing_truncation_sigma: float = 4.0  # the Gaussian is cut at this many R_s (a compact kernel)
    tidal_field: str = "survey"  # survey: δ and T_ij once over the whole survey (SurveyField), sampled by every run;
    #                              local: each run's own lattice (compact kernels, tidal_radius_mpc)
    tidal_radius_mpc: float | None = 20.0  # local only: T_ij from δ within this radius (compact); None: whole lattice
    lambda_th: float = 0.02  # eigenvalue threshold (calibrated with R_s, survey field, on the positions mock)
    exclude_self: bool = True  # a tracer's δ and λ without its own cloud (leave-one-out, like the kNN)
    buffer_mpc: float = 43.0  # partition buffer and edge-sphere radius (≥ locality_mpc()); also the kNN limit
    random_density_mpc3: float = 0.01  # randoms per Mpc³ inside the footprint
    mean_density_mpc3: float | None = None  # tracer n̄ (Mpc⁻³); None: tracers / footprint volume of the run
    footprint_nside: int = 64  # footprint = occupied pixels at this nside
    edge_nside: int = 256  # fine pixels whose centres measure a sphere's footprint coverage
    edge_coverage_min: float = 0.95  # a galaxy is at the edge when its sphere's coverage is below this
    window_min: float = 0.5  # δ is set where the smoothed random window is at least this
    lattice_pad_mpc: float | None = None  # zero padding around the data; None: enough that FFTs never wrap
    filament_method: str = "mst"  # mst, tweb or none: the skeleton of DIST_FILAMENT (mst wins on the mock)
    mst_max_edge_mpc: float = 6.0  # MST edges longer than this are cut
    mst_prune: int = 3  # leaf-pruning passes
    frame_ra_deg: float | None = None  # grid frame: +z toward (ra, dec); None: equatorial axes (any run)
    frame_dec_deg: float | None = None
    seed: int = 0  # randoms seed (per pixel)

    def __post_init__(self):
        if self.smoothing_mpc <= 0 or self.cell_mpc <= 0:
            raise ValueError("smoothing_mpc and cell_mpc must be positive")
        if self.buffer_mpc < 2 * self.smoothing_mpc:
            raise ValueError(f"buffer_mpc ({self.buffer_mpc}) must be at least 2 smoothing lengths "
                             f"({2 * self.smoothing_mpc} Mpc)")
        if self.tidal_field not in TIDAL_FIELDS:
            raise ValueError(f"tidal_field must be one of {TIDAL_FIELDS}, got {self.tidal_field!r}")
        if self.locality_mpc() < float("inf") and self.buffer_mpc < self.locality_mpc():
            raise ValueError(f"buffer_mpc ({self.buffer_mpc}) must cover the T-web's reach locality_mpc() = "
                             f"{self.smoothing_truncation_sigma:g} R_s + tidal radius + 2√3 cells = "
                             f"{self.locality_mpc():.1f} Mpc, or partitions differ from the global run")
        if not 0 <= self.tracer_zmin < self.tracer_zmax:
            raise ValueError(f"need 0 ≤ tracer_zmin < tracer_zmax, got {self.tracer_zmin}, {self.tracer_zmax}")
        if self.filament_method not in FILAMENT_METHODS:
            raise ValueError(f"filament_method must be one of {FILAMENT_METHODS}, got {self.filament_method!r}")
        if self.edge_nside % self.footprint_nside or self.edge_nside < self.footprint_nside:
            raise ValueError("edge_nside must be a multiple of footprint_nside")

    def as_dict(self) -> dict:
        """Plain dict of the settings (for metadata and provenance)."""
        return asdict(self)

    def locality_mpc(self) -> float:
        """Mpc within which a partition's galaxies can change a point's T-web (compact kernels, local field).

        0 for the survey field (every run samples the one upstream field), inf for a local whole-lattice field.
        """
        if self.tidal_field == "survey":
            return 0.0
        if self.tidal_radius_mpc is None:
            return float("inf")
        return T.locality_radius(self.cell_mpc, self.smoothing_mpc, self.smoothing_truncation_sigma,
                                 self.tidal_radius_mpc)

    def lattice_pad(self) -> float:
        """Zero padding (Mpc) around the data: half the reach on each side, so no FFT wraps onto a galaxy."""
        if self.lattice_pad_mpc is not None:
            return self.lattice_pad_mpc
        compact = self.tidal_field == "local" and self.tidal_radius_mpc is not None
        reach = self.locality_mpc() if compact else 3 * self.smoothing_mpc
        return 0.5 * reach + 2 * self.cell_mpc

    def chi_range(self) -> tuple[float, float]:
        """Comoving distances (Mpc) of tracer_zmin and tracer_zmax."""
        lo, hi = comoving_distance(np.array([self.tracer_zmin, self.tracer_zmax]), self.cosmology)
        return float(lo), float(hi)

    def buffer_deg(self) -> float:
        """Angular radius (deg) around a partition that holds the buffer sphere of every non-edge galaxy."""
        chi_lo, _ = self.chi_range()
        los = self.knn_dv_kms / hubble_h0(self.cosmology)
        # nearest non-edge galaxy: χ ≥ χ_lo + buffer; its neighbours may sit up to dv/H0 nearer
        return min(180.0, 1.05 * FP.buffer_angle_deg(self.buffer_mpc, max(chi_lo + self.buffer_mpc - los, 1e-3)))


@dataclass
class CosmicWebResult:
    """Columns for the query rows (units in the table registry) and run-level summaries."""

    columns: dict[str, np.ndarray]
    volume_fractions: dict[str, float]
    n_tracers: int
    n_randoms: int
    mean_density_mpc3: float
    segments: np.ndarray  # (M,2,3) skeleton of the configured method, grid frame removed (equatorial Mpc)
    extra: dict = field(default_factory=dict)  # slice of δ for plots


def _abs_mag(mag: np.ndarray, z: np.ndarray, cosmology: str) -> np.ndarray:
    dl = comoving_distance(z, cosmology) * (1 + z)  # Mpc
    with np.errstate(divide="ignore", invalid="ignore"):
        return mag - 5 * np.log10(np.maximum(dl, 1e-9) * 1e5)


def tracer_mask(z: np.ndarray, params: CosmicWebParams, mag: np.ndarray | None = None) -> np.ndarray:
    """The density-defining tracers: zmin ≤ z < zmax, and M < tracer_abs_mag_max when magnitudes are given."""
    z = np.asarray(z, float)
    ok = np.isfinite(z) & (z >= params.tracer_zmin) & (z < params.tracer_zmax)
    if mag is not None and params.tracer_abs_mag_max is not None:
        ok &= _abs_mag(np.asarray(mag, float), z, params.cosmology) < params.tracer_abs_mag_max
    return ok


def _first_of_duplicates(ids: np.ndarray | None, n: int) -> np.ndarray:
    """Index of the first row with the same id (itself when unique)."""
    if ids is None:
        return np.arange(n)
    _, first, inv = np.unique(np.asarray(ids), return_index=True, return_inverse=True)
    return first[inv.ravel()]


def _usable(ra: np.ndarray, dec: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Rows with finite RA/Dec, |Dec| ≤ 90 and 0 ≤ z ≤ MAX_Z."""
    return np.isfinite(ra) & np.isfinite(dec) & np.isfinite(z) & (z >= 0) & (z <= MAX_Z) & (np.abs(dec) <= 90)


def survey_mean_density(ra: np.ndarray, dec: np.ndarray, z: np.ndarray, params: CosmicWebParams,
                        ids: np.ndarray | None = None, mag: np.ndarray | None = None,
                        footprint: np.ndarray | None = None) -> float:
    """Tracer n̄ (Mpc⁻³) of a whole catalog: unique valid tracers over the footprint volume in the tracer z range.

    Partitions must share it (δ = ρ/n̄ − 1): a pixel's own n̄ would differ from the survey's.
    """
    ra, dec, z = (np.asarray(a, np.float64).ravel() for a in (ra, dec, z))
    use = _usable(ra, dec, z) & (_first_of_duplicates(ids, ra.size) == np.arange(ra.size))
    if footprint is None:
        footprint = FP.occupied_pixels(ra[use], dec[use], params.footprint_nside)
    vol = FP.footprint_volume(footprint, params.footprint_nside, *params.chi_range())
    return float((use & tracer_mask(z, params, mag)).sum() / vol) if vol > 0 else 0.0


def _empty_columns(n: int) -> dict[str, np.ndarray]:
    f = lambda: np.full(n, np.nan)  # noqa: E731
    return {"comoving_distance_mpc": f(), "d5_mpc": f(), "d10_mpc": f(), "sigma_5": f(), "sigma_10": f(),
            "delta": f(), "lambda1": f(), "lambda2": f(), "lambda3": f(), "web_class": np.full(n, -1, np.int8),
            "dist_filament_mpc": f(), "edge": np.ones(n, bool), "is_tracer": np.zeros(n, bool),
            "status": np.full(n, STATUS_OK, dtype=object)}


def _frame(params: CosmicWebParams) -> np.ndarray:
    """Rotation (3,3) from equatorial Cartesian to the grid frame (identity unless frame_ra/dec_deg are set)."""
    if params.frame_ra_deg is None or params.frame_dec_deg is None:
        return np.eye(3)  # one frame whatever the data: every run's cells belong to one global lattice
    return frame_rotation(params.frame_ra_deg, params.frame_dec_deg)


def _field_settings(params: CosmicWebParams) -> dict:
    return {k: getattr(params, k) for k in ("cell_mpc", "smoothing_mpc", "smoothing_truncation_sigma", "window_min",
                                            "random_density_mpc3", "footprint_nside", "tracer_zmin", "tracer_zmax",
                                            "cosmology", "seed", "frame_ra_deg", "frame_dec_deg")}


def _build_field(gal: np.ndarray, footprint: np.ndarray, nbar: float, params: CosmicWebParams) -> SurveyField:
    chi_lo, chi_hi = params.chi_range()
    rand = FP.volume_randoms(footprint, params.footprint_nside, chi_lo, chi_hi, params.random_density_mpc3,
                             params.seed) @ _frame(params).T
    return survey_tidal_field(gal, rand, nbar, params.random_density_mpc3, params.cell_mpc, params.smoothing_mpc,
                              params.lattice_pad(), params.window_min, params.smoothing_truncation_sigma,
                              _field_settings(params) | {"footprint_pixels": int(len(footprint)),
                                                         "tracers": int(len(gal))})


def survey_field(ra: np.ndarray, dec: np.ndarray, z: np.ndarray, params: CosmicWebParams = CosmicWebParams(),
                 ids: np.ndarray | None = None, mag: np.ndarray | None = None,
                 footprint: np.ndarray | None = None) -> SurveyField:
    """The survey-wide δ and T_ij of a whole catalog (RA, Dec deg, z), built once for every run to sample.

    Tracers, n̄ (params.mean_density_mpc3, else `survey_mean_density`) and the footprint (default: occupied
    pixels) are those of the whole catalog; `cosmic_web(..., field=…)` then samples it.
    """
    ra, dec, z = (np.asarray(a, np.float64).ravel() for a in (ra, dec, z))
    use = _usable(ra, dec, z) & (_first_of_duplicates(ids, ra.size) == np.arange(ra.size))
    if footprint is None:
        footprint = FP.occupied_pixels(ra[use], dec[use], params.footprint_nside)
    tracer = use & tracer_mask(z, params, mag)
    nbar = params.mean_density_mpc3 or survey_mean_density(ra, dec, z, params, ids, mag, footprint)
    gal = radecz_to_xyz(ra[tracer], dec[tracer], z[tracer], params.cosmology) @ _frame(params).T
    return _build_field(gal, np.asarray(footprint, np.int64), nbar, params)


def cosmic_web(ra: np.ndarray, dec: np.ndarray, z: np.ndarray, params: CosmicWebParams = CosmicWebParams(),
               query: np.ndarray | None = None, ids: np.ndarray | None = None, mag: np.ndarray | None = None,
               footprint: np.ndarray | None = None, make_slice: bool = False,
               want_cell_eigenvalues: bool = False, field: SurveyField | None = None) -> CosmicWebResult:
    """Environment columns for the `query` rows (bool mask; default all) of a catalog of RA, Dec (deg) and z.

    `ids` identify duplicates; `mag` (apparent, AB) enables the absolute-magnitude tracer cut; `footprint`
    (NESTED pixels at params.footprint_nside) defaults to the occupied pixels of the valid rows;
    `want_cell_eigenvalues` keeps the eigenvalues (N_cells, 3) of the footprint's cells in `extra`.
    With params.tidal_field "survey", δ and T_ij are sampled from `field` (the survey's `survey_field`; built
    from this catalog when None, which is the global run); kNN, edge flags and the MST stay local.
    """
    ra, dec, z = (np.asarray(a, np.float64).ravel() for a in (ra, dec, z))
    n = ra.size
    if not (dec.size == n and z.size == n):
        raise ValueError(f"ra, dec and z must have the same length, got {ra.size}, {dec.size}, {z.size}")
    query = np.ones(n, bool) if query is None else np.asarray(query, bool)
    valid = _usable(ra, dec, z)
    first = _first_of_duplicates(ids, n)
    unique = first == np.arange(n)
    cols = _empty_columns(n)
    cols["status"][~valid] = STATUS_BAD_Z
    cols["status"][valid & ~unique] = STATUS_DUPLICATE
    use = valid & unique
    chi_lo, chi_hi = params.chi_range()
    if footprint is None:
        footprint = FP.occupied_pixels(ra[use], dec[use], params.footprint_nside)
    xyz = np.full((n, 3), np.nan)
    xyz[use] = radecz_to_xyz(ra[use], dec[use], z[use], params.cosmology)
    chi = np.linalg.norm(xyz, axis=1)
    cols["comoving_distance_mpc"] = np.where(use, chi, np.nan)
    tracer = use & tracer_mask(z, params, mag)
    cols["is_tracer"] = tracer
    tr_idx = np.flatnonzero(tracer)
    vol = FP.footprint_volume(footprint, params.footprint_nside, chi_lo, chi_hi)
    nbar = params.mean_density_mpc3 or (tr_idx.size / vol if vol > 0 else 0.0)
    dup = np.flatnonzero(valid & ~unique & query)
    need = use & query
    need[first[dup]] = True  # a duplicate copies its first row, which may lie outside the query
    work = np.flatnonzero(need)

    # --- kNN (exact; searched out to the buffer radius)
    self_index = np.full(n, -1, np.int64)
    self_index[tr_idx] = np.arange(tr_idx.size)
    d = projected_knn(xyz[work], z[work], xyz[tr_idx], z[tr_idx], ks=(5, 10), dv_kms=params.knn_dv_kms,
                      h0=hubble_h0(params.cosmology), self_index=self_index[work], r_max_mpc=params.buffer_mpc)
    cols["d5_mpc"][work], cols["d10_mpc"][work] = d[:, 0], d[:, 1]
    cols["sigma_5"][work] = surface_density(5, d[:, 0])
    cols["sigma_10"][work] = surface_density(10, d[:, 1])

    # --- edge flag: buffer sphere outside [χ_lo, χ_hi] or off the footprint
    radial_edge = (chi[work] - params.buffer_mpc < chi_lo) | (chi[work] + params.buffer_mpc > chi_hi)
    edge = radial_edge.copy()
    inner = ~radial_edge
    if inner.any():
        rad = np.degrees(np.arcsin(np.clip(params.buffer_mpc / chi[work][inner], 0, 1)))
        cover = FP.coverage_fraction(ra[work][inner], dec[work][inner], rad, footprint, params.footprint_nside,
                                     params.edge_nside)
        edge[inner] = cover < params.edge_coverage_min
    cols["edge"][work] = edge

    # --- T-web on a lattice in the frame of the run (or the configured survey frame)
    segments = np.zeros((0, 2, 3))
    fractions = T.volume_fractions(np.zeros(0))
    n_rand = 0
    extra: dict = {}
    if tr_idx.size and len(footprint) and nbar > 0:
        rot = _frame(params)
        gal = xyz[tr_idx] @ rot.T
        q = xyz[work] @ rot.T
        survey = params.tidal_field == "survey"
        built_here = survey and field is None
        if built_here:  # the global run: this catalog is the survey
            field = _build_field(gal, np.asarray(footprint, np.int64), nbar, params)
        # the run's own lattice: always for a local field; for the survey field only when cells are wanted
        # (slice, T-web skeleton, cell eigenvalues): a partition then holds no lattice, only its galaxies
        dense = not survey or make_slice or want_cell_eigenvalues or params.filament_method == "tweb"
        if dense:
            rand = FP.volume_randoms(footprint, params.footprint_nside, chi_lo, chi_hi, params.random_density_mpc3,
                                     params.seed) @ rot.T
            n_rand = len(rand)
            lat = T.Lattice.around(np.concatenate([gal, rand]), params.cell_mpc, params.lattice_pad())
            if survey and not built_here and not (want_cell_eigenvalues or params.filament_method == "tweb"):
                # a partition wants the survey field's cells for the slice only: its one plane, not the whole
                # box (which grows with the survey around the region); its volume fractions are that plane's
                j = _slice_plane(lat, q[tracer[work]])
                lat = T.Lattice(lat.origin + np.array([0.0, j * lat.cell, 0.0]), (lat.shape[0], 1, lat.shape[2]),
                                lat.cell)
        if survey and dense:
            delta, window, tensor = field.on_lattice(lat)
        elif survey:
            lat = delta = window = tensor = cell_class = valid_cells = cell_lam = None
            if built_here:
                fractions = field.volume_fractions(params.lambda_th, params.window_min)
        else:
            delta, window = T.density_contrast(lat, gal, rand, nbar, params.random_density_mpc3,
                                               params.smoothing_mpc, params.window_min,
                                               params.smoothing_truncation_sigma)
            tensor = T.tidal_tensor(lat, delta, params.tidal_radius_mpc)
        if dense:
            valid_cells = window >= params.window_min
            cells = np.flatnonzero(valid_cells.ravel())
            cell_class = np.full(lat.shape, -1, np.int8)
            cell_lam = T.eigenvalues(T.tensor_cells(tensor, cells))
            cell_class.ravel()[cells] = T.web_class(cell_lam, params.lambda_th)
            fractions = T.volume_fractions(cell_class.ravel()[cells])
        if survey:  # sampled in the survey lattice's own coordinates: bit-identical in every run
            q_delta, q_tensor, q_window = field.sample(q)
            lam = T.eigenvalues(q_tensor)
            s_lat, s_window, s_nbar = field.lattice, field.window_at_cells, field.mean_density_mpc3
            inside = field.lattice.interior(q) & (q_window >= params.window_min)
        else:
            lam = T.eigenvalues(T.tensor_at(lat, tensor, q))
            q_delta = T.cic_interpolate(lat, delta, q)
            s_lat, s_window, s_nbar = lat, window, nbar
            inside = lat.interior(q) & (T.cic_interpolate(lat, window, q) >= params.window_min)
        if params.exclude_self:  # a tracer's environment without itself (its own cloud is isotropic there)
            own = np.flatnonzero(tracer[work])
            d_self = T.self_density(s_lat, q[own], s_nbar, params.smoothing_mpc, params.smoothing_truncation_sigma,
                                    s_window, params.window_min)
            q_delta[own] -= d_self
            lam[own] -= d_self[:, None] / 3
        cols["delta"][work] = np.where(inside, q_delta, np.nan)
        for i in range(3):
            cols[f"lambda{i + 1}"][work] = np.where(inside, lam[:, i], np.nan)
        cols["web_class"][work] = np.where(inside, T.web_class(lam, params.lambda_th), -1)
        if params.filament_method == "tweb":
            segs = F.tweb_skeleton(lat, delta, tensor, cell_class, valid_cells)
        elif params.filament_method == "mst":
            segs = F.mst_skeleton(gal, params.mst_max_edge_mpc, params.mst_prune)
        else:
            segs = np.zeros((0, 2, 3))
        if params.filament_method != "none":
            cols["dist_filament_mpc"][work] = np.where(inside, F.distance_to_segments(q, segs), np.nan)
        segments = segs @ rot  # back to equatorial
        extra = {"rotation": rot, "lattice": lat} | ({"cell_eigenvalues": cell_lam} if want_cell_eigenvalues else {})
        if survey:
            extra["field"] = field
        if make_slice:
            extra["slice"] = _slice(lat, delta, cell_class, segs, gal, q, cols["web_class"][work], tracer[work])
    for k, v in cols.items():
        if k != "status":
            v[dup] = v[first[dup]]
    res_cols = {k: v[query] for k, v in cols.items()}
    return CosmicWebResult(res_cols, fractions, int(tr_idx.size), n_rand, float(nbar), segments, extra)


def _slice_plane(lat: T.Lattice, q: np.ndarray) -> int:
    """The lattice plane (index along y) at the median y of points q (N,3) Mpc (a run's tracers); the centre if none."""
    if not len(q):
        return lat.shape[1] // 2
    return int(np.clip(np.floor((np.median(q[:, 1]) - lat.origin[1]) / lat.cell), 0, lat.shape[1] - 1))


def _slice(lat: T.Lattice, delta: np.ndarray, cell_class: np.ndarray, segs: np.ndarray, gal: np.ndarray,
           q: np.ndarray, q_class: np.ndarray, q_tracer: np.ndarray | None = None, thickness_mpc: float = 10.0) -> dict:
    """A slab through the run's tracers (grid frame, normal to y): δ image, nearby segments and galaxies."""
    j = _slice_plane(lat, q if q_tracer is None else q[q_tracer])
    y0 = lat.origin[1] + (j + 0.5) * lat.cell
    near = lambda p: np.abs(p[..., 1] - y0) < thickness_mpc / 2  # noqa: E731
    seg_near = segs[near(segs).all(axis=1)] if len(segs) else segs
    qn = near(q)
    return {"delta": delta[:, j, :].copy(), "class": cell_class[:, j, :].copy(),
            "extent": (lat.origin[2], lat.origin[2] + lat.shape[2] * lat.cell,
                       lat.origin[0], lat.origin[0] + lat.shape[0] * lat.cell),
            "segments_xz": seg_near[:, :, [0, 2]], "galaxies_xz": q[qn][:, [0, 2]], "galaxy_class": q_class[qn]}


def cosmic_web_partitioned(ra: np.ndarray, dec: np.ndarray, z: np.ndarray, params: CosmicWebParams, nside: int,
                           ids: np.ndarray | None = None, mag: np.ndarray | None = None,
                           only_pixels: np.ndarray | None = None,
                           field: SurveyField | None = None) -> dict[str, np.ndarray]:
    """Columns for every row, computed one NESTED HEALPix pixel (at `nside`) at a time from the pixel + its buffer.

    This is the asset's domain decomposition on an in-memory catalog (the CLI's --partition-nside, validation,
    benchmarks); `only_pixels` restricts it to some pixels (other rows keep the empty defaults). Every pixel
    uses the survey n̄ (`params.mean_density_mpc3`, else `survey_mean_density` of the whole catalog) and, with
    params.tidal_field "survey", samples one survey field (`field`, else `survey_field` of the whole catalog).
    """
    ra, dec, z = (np.asarray(a, np.float64).ravel() for a in (ra, dec, z))
    if params.mean_density_mpc3 is None and ra.size:
        params = replace(params, mean_density_mpc3=survey_mean_density(ra, dec, z, params, ids, mag) or None)
    if params.tidal_field == "survey" and field is None and ra.size:
        field = survey_field(ra, dec, z, params, ids, mag)
    n = ra.size
    pix = np.full(n, -1, np.int64)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    pix[ok] = hp.ang2pix(nside, ra[ok], dec[ok], nest=True, lonlat=True)
    fine = np.full(n, -1, np.int64)
    fine[ok] = hp.ang2pix(params.footprint_nside, ra[ok], dec[ok], nest=True, lonlat=True)
    usable = _usable(ra, dec, z)
    out: dict[str, np.ndarray] = {}
    todo = np.unique(pix[pix >= 0])
    if only_pixels is not None:
        todo = np.intersect1d(todo, np.asarray(only_pixels, np.int64))
    for p in todo:
        region = np.isin(pix, FP.region_pixels(np.array([p]), nside, params.buffer_deg()))
        own = pix[region] == p
        sub = lambda a: None if a is None else np.asarray(a)[region]  # noqa: E731
        fp = np.unique(fine[region & usable])  # the pixels the global run's footprint has there
        res = cosmic_web(ra[region], dec[region], z[region], params, query=own, ids=sub(ids), mag=sub(mag),
                         footprint=fp, field=field)
        rows = np.flatnonzero(region)[own]
        for k, v in res.columns.items():
            if k not in out:
                out[k] = np.empty(n, dtype=v.dtype)
                out[k][:] = _empty_columns(1)[k][0]
            out[k][rows] = v
    if not out:
        out = _empty_columns(n)
    out["status"][pix < 0] = STATUS_BAD_Z
    return out
