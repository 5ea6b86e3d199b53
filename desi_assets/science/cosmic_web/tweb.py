"""T-web (Hahn+2007, Forero-Romero+2009): CIC density normalised by randoms, Gaussian smoothing, tidal tensor by FFT.

Galaxies and randoms are assigned (CIC) to a lattice of cell size h anchored at the
observer (cells at integer multiples of h in the grid frame, so every run in the same frame
uses cells of one global lattice: a partition's lattice is a window of the survey's). Both
fields are smoothed with a Gaussian of σ = R_s; the window is W_r = ρ_r,s / (n_r h³) and
δ = ρ_g,s / (n̄ h³ W_r) − 1 where W_r ≥ window_min, 0 elsewhere. T_ij(k) = k_i k_j / k² δ(k),
so tr T = δ. The class is the number of eigenvalues above λ_th: 0 void, 1 sheet, 2 filament,
3 knot.

Compact kernels make the field local, so that a partition with a large enough buffer gets the
survey-wide values up to FFT round-off: the Gaussian cut at `truncate_sigma` R_s (sampled on
the cells, normalised to 1) and the tidal shear from δ within `radius` of a cell:
T_ij = δ_ij δ/3 + Σ_{|r| ≤ radius} K_ij(r) δ(x − r), K the traceless part of the lattice kernel
of k_i k_j / k² (still tr T = δ). A point then depends only on galaxies within
truncate_sigma R_s + radius + 2√3 h (`locality_radius`). Without them (None) the smoothing is
exp(−k²R_s²/2) and the tidal field reaches across the whole lattice (and its FFT wrap-around).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

#: Component order of the 6 independent tidal-tensor entries.
TENSOR_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
CLASS_NAMES = ("void", "sheet", "filament", "knot")


@dataclass
class Lattice:
    """A box of cells: corner `origin` (Mpc, a multiple of `cell`), `shape` cells of size `cell` Mpc."""

    origin: np.ndarray
    shape: tuple[int, int, int]
    cell: float

    @classmethod
    def around(cls, xyz: np.ndarray, cell: float, pad: float) -> "Lattice":
        """The smallest FFT-friendly lattice covering points (N,3) Mpc plus `pad` Mpc on every side."""
        lo = np.floor((xyz.min(0) - pad) / cell) * cell
        hi = xyz.max(0) + pad
        shape = tuple(int(sfft.next_fast_len(int(np.ceil((h - l) / cell)) + 1, real=True)) for l, h in zip(lo, hi))
        return cls(lo, shape, cell)

    def interior(self, xyz: np.ndarray) -> np.ndarray:
        """Points (N,3) Mpc at least one cell inside the lattice (all 8 CIC corners on it), bool (N,)."""
        return np.all((xyz > self.origin + self.cell) & (xyz < self.origin + (np.array(self.shape) - 1) * self.cell),
                      axis=1)

    def cell_centres(self, flat_index: np.ndarray) -> np.ndarray:
        """Centres (N,3), Mpc, of cells given by flat C-order indices."""
        ijk = np.stack(np.unravel_index(flat_index, self.shape), axis=1)
        return self.origin + (ijk + 0.5) * self.cell


def _cic_weights(lat: Lattice, xyz: np.ndarray):
    """Flat indices (8, N) and weights (8, N) of the CIC cloud of each point (cell-centred convention)."""
    u = (xyz - lat.origin) / lat.cell - 0.5
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    shape = np.array(lat.shape)
    idx, w = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                off = np.array([dx, dy, dz])
                ii = np.clip(i0 + off, 0, shape - 1)
                ww = np.prod(np.where(off == 1, f, 1 - f), axis=1)
                idx.append(np.ravel_multi_index(ii.T, lat.shape))
                w.append(ww)
    return np.array(idx), np.array(w)


def cic_assign(lat: Lattice, xyz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Cloud-in-cell counts on the lattice (float64 array of lat.shape); each point contributes its weight."""
    grid = np.zeros(int(np.prod(lat.shape)))
    if len(xyz):
        idx, w = _cic_weights(lat, np.asarray(xyz, np.float64))
        if weights is not None:
            w = w * np.asarray(weights)[None, :]
        grid += np.bincount(idx.ravel(), weights=w.ravel(), minlength=grid.size)
    return grid.reshape(lat.shape)


def cic_interpolate(lat: Lattice, field: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Field values at points (N,3) Mpc by trilinear (CIC) interpolation."""
    if len(xyz) == 0:
        return np.zeros(0)
    idx, w = _cic_weights(lat, np.asarray(xyz, np.float64))
    return (field.ravel()[idx] * w).sum(0)


def _kgrid(lat: Lattice):
    kx, ky = (2 * np.pi * sfft.fftfreq(n, d=lat.cell) for n in lat.shape[:2])
    kz = 2 * np.pi * sfft.rfftfreq(lat.shape[2], d=lat.cell)
    return kx[:, None, None], ky[None, :, None], kz[None, None, :]


def locality_radius(cell: float, r_s: float, truncate_sigma: float, radius: float) -> float:
    """Mpc from a query point within which galaxies and randoms can change its δ and T_ij (compact kernels)."""
    return truncate_sigma * r_s + radius + 2 * np.sqrt(3) * cell


def _ball_offsets(radius_cells: float) -> np.ndarray:
    """Integer cell offsets (K, 3) with |offset| ≤ radius_cells."""
    m = int(np.floor(radius_cells + 1e-9))
    r = np.arange(-m, m + 1)
    o = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return o[(o**2).sum(1) <= radius_cells**2 + 1e-9]


def _kernel_fft(lat: Lattice, offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Real rfftn of a kernel even in r (values at cell offsets, wrapped onto the lattice)."""
    shape = np.array(lat.shape)
    reach = np.abs(offsets).max(0) if len(offsets) else np.zeros(3, int)
    if np.any(2 * reach + 1 > shape):
        raise ValueError(f"lattice {lat.shape} is smaller than the kernel ({2 * reach + 1} cells): increase the pad")
    grid = np.zeros(lat.shape)
    grid[tuple(np.mod(offsets, shape).T)] = values
    return sfft.rfftn(grid, workers=-1).real  # even kernel: imaginary part is round-off


def smoothing_kernel_fft(lat: Lattice, r_s: float, truncate_sigma: float | None = None) -> np.ndarray:
    """Fourier multiplier of the Gaussian of σ = r_s Mpc: exp(−k²r_s²/2), or the one cut at truncate_sigma·r_s."""
    if truncate_sigma is None:
        kx, ky, kz = _kgrid(lat)
        return np.exp(-0.5 * (kx**2 + ky**2 + kz**2) * r_s**2)
    off = _ball_offsets(truncate_sigma * r_s / lat.cell)
    w = np.exp(-0.5 * (off**2).sum(1) * (lat.cell / r_s) ** 2)
    return _kernel_fft(lat, off, w / w.sum())


def gaussian_smooth(lat: Lattice, field: np.ndarray, r_s: float, truncate_sigma: float | None = None,
                    kernel_fft: np.ndarray | None = None) -> np.ndarray:
    """Field convolved with a Gaussian of σ = r_s Mpc (FFT; zero padding assumed around the data)."""
    kern = smoothing_kernel_fft(lat, r_s, truncate_sigma) if kernel_fft is None else kernel_fft
    return sfft.irfftn(sfft.rfftn(field, workers=-1) * kern, s=lat.shape, workers=-1)


def density_contrast(lat: Lattice, gal_xyz: np.ndarray, rand_xyz: np.ndarray, mean_density: float,
                     random_density: float, r_s: float, window_min: float = 0.5,
                     truncate_sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed δ on the lattice and the window W_r (fraction of the smoothing kernel inside the footprint)."""
    kern = smoothing_kernel_fft(lat, r_s, truncate_sigma)
    rho_g = gaussian_smooth(lat, cic_assign(lat, gal_xyz), r_s, kernel_fft=kern)
    rho_r = gaussian_smooth(lat, cic_assign(lat, rand_xyz), r_s, kernel_fft=kern)
    del kern
    h3 = lat.cell**3
    window = rho_r / (random_density * h3)
    ok = window >= window_min
    delta = np.zeros(lat.shape)
    delta[ok] = rho_g[ok] / (mean_density * h3 * window[ok]) - 1.0
    return delta, window


def self_density(lat: Lattice, xyz: np.ndarray, mean_density: float, r_s: float, truncate_sigma: float | None,
                 window, window_min: float = 0.5) -> np.ndarray:
    """δ that each point (N,3) Mpc adds at its own position (CIC → cut Gaussian → CIC back), for leave-one-out.

    A point's own smoothed cloud is (to lattice accuracy) spherical about it, so its share of T_ij there is
    isotropic: δ_self/3 on each eigenvalue.
    """
    if len(xyz) == 0:
        return np.zeros(0)
    off = _ball_offsets(truncate_sigma * r_s / lat.cell)
    w = np.exp(-0.5 * (off**2).sum(1) * (lat.cell / r_s) ** 2)
    norm = w.sum()
    idx, cw = _cic_weights(lat, np.asarray(xyz, np.float64))  # (8, N), corners in _cic_weights' order
    corners = np.array([(dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)])
    d2 = ((corners[:, None, :] - corners[None, :, :]) ** 2).sum(-1)  # (8, 8) squared cell offsets
    kern = np.exp(-0.5 * d2 * (lat.cell / r_s) ** 2) / norm
    at_corner = kern @ cw  # (8, N): the point's smoothed count in each of its CIC cells
    win = window(idx) if callable(window) else window.ravel()[idx]  # or a lookup of flat cell indices
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(win >= window_min, at_corner / (mean_density * lat.cell**3 * win), 0.0)
    return (cw * per).sum(0)


@functools.lru_cache(maxsize=8)
def _tidal_kernel(cell: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (K,3) within `radius` Mpc and the 6 traceless lattice kernels K_ij there (6, K)."""
    m = int(np.floor(radius / cell + 1e-9))
    box = Lattice(np.zeros(3), (sfft.next_fast_len(6 * m + 6, real=True),) * 3, cell)
    kx, ky, kz = _kgrid(box)
    ks = (kx, ky, kz)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    full = [sfft.irfftn(ks[a] * ks[b] / k2, s=box.shape) for a, b in TENSOR_PAIRS]
    trace = (full[0] + full[1] + full[2]) / 3
    for c in range(3):
        full[c] = full[c] - trace
    off = _ball_offsets(radius / cell)
    idx, mirror = tuple(np.mod(off, box.shape[0]).T), tuple(np.mod(-off, box.shape[0]).T)
    return off, np.array([0.5 * (f[idx] + f[mirror]) for f in full])  # even in r (the Nyquist planes are not)


def tidal_tensor(lat: Lattice, delta: np.ndarray, radius: float | None = None) -> list[np.ndarray]:
    """The 6 components T_ij = ∂_i∂_j φ with ∇²φ = δ (order TENSOR_PAIRS), float32 arrays of lat.shape.

    `radius` (Mpc): the tidal shear from δ within that radius only (compact, see module docstring).
    """
    if radius is None:
        return _tidal_tensor_full(lat, delta)
    off, vals = _tidal_kernel(float(lat.cell), float(radius))
    dk = sfft.rfftn(delta, workers=-1)
    out = []
    for c in range(6):
        comp = sfft.irfftn(dk * _kernel_fft(lat, off, vals[c]), s=lat.shape, workers=-1)
        if c < 3:
            comp += delta / 3
        out.append(comp.astype(np.float32))
    return out


def _tidal_tensor_full(lat: Lattice, delta: np.ndarray) -> list[np.ndarray]:
    """T_ij(k) = k_i k_j / k² δ(k) over the whole (periodic) lattice, float32 arrays."""
    kx, ky, kz = _kgrid(lat)
    ks = (kx, ky, kz)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    dk = sfft.rfftn(delta, workers=-1) / k2
    dk[0, 0, 0] = 0.0
    return [sfft.irfftn(dk * ks[a] * ks[b], s=lat.shape, workers=-1).astype(np.float32) for a, b in TENSOR_PAIRS]


def tensor_at(lat: Lattice, tensor: list[np.ndarray], xyz: np.ndarray) -> np.ndarray:
    """Symmetric tensors (N, 3, 3) interpolated (CIC) at points (N,3) Mpc."""
    out = np.zeros((len(xyz), 3, 3))
    if len(xyz) == 0:
        return out
    idx, w = _cic_weights(lat, np.asarray(xyz, np.float64))
    for comp, (a, b) in zip(tensor, TENSOR_PAIRS):
        v = (comp.ravel()[idx] * w).sum(0)
        out[:, a, b] = out[:, b, a] = v
    return out


def tensor_cells(tensor: list[np.ndarray], flat_index: np.ndarray) -> np.ndarray:
    """Symmetric tensors (N, 3, 3) at the cells of given flat indices."""
    out = np.zeros((len(flat_index), 3, 3))
    for comp, (a, b) in zip(tensor, TENSOR_PAIRS):
        v = comp.ravel()[flat_index]
        out[:, a, b] = out[:, b, a] = v
    return out


def eigenvalues(tensors: np.ndarray, chunk: int = 2_000_000) -> np.ndarray:
    """Eigenvalues (N, 3) of symmetric tensors, sorted λ1 ≥ λ2 ≥ λ3 (dimensionless)."""
    out = np.empty((len(tensors), 3))
    for lo in range(0, len(tensors), chunk):
        out[lo:lo + chunk] = np.linalg.eigvalsh(tensors[lo:lo + chunk])[:, ::-1]
    return out


def web_class(lam: np.ndarray, lambda_th: float) -> np.ndarray:
    """Number of eigenvalues above λ_th: 0 void, 1 sheet, 2 filament, 3 knot (int8)."""
    return (np.asarray(lam) > lambda_th).sum(axis=-1).astype(np.int8)


def volume_fractions(classes: np.ndarray) -> dict[str, float]:
    """Fraction of cells (or galaxies) in each class, keyed by class name."""
    c = np.asarray(classes)
    n = max(c.size, 1)
    return {name: float((c == i).sum() / n) for i, name in enumerate(CLASS_NAMES)}
