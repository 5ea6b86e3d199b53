"""The survey-wide tidal field: δ and T_ij computed ONCE on one fixed lattice over the whole survey, then sampled.

DESI's T-web (DR1: a 256³ grid in an 800 Mpc cube) takes T_ij(k) = k_i k_j / k² δ(k) over the whole
volume; the tidal field at a point then depends on the density everywhere, so no partition buffer
can reproduce it. Here the field is built once from every tracer (CIC, normalised by footprint
randoms and the survey n̄, Gaussian R_s, T_ij by FFT over the whole lattice) and stored compactly:
only the cells where the smoothed random window reaches `window_min`, dilated by one cell so that
every CIC corner of a point inside the footprint is kept; δ, W and the 6 T_ij as float32 plus the
sorted flat cell indices (4·8 + 8 = 40 bytes a stored cell), saved as memory-mappable .npy files.
A partition samples it at its
galaxies (CIC in the survey lattice's own coordinates), so every run that holds a galaxy returns
bit-identical δ, λ and WEB_CLASS for it.

The FFTs run in float32 and one tensor component at a time: peak memory ≈ 16 bytes per lattice
cell (+ the stored cells), independent of the number of galaxies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from desi_assets.science.cosmic_web import tweb as T


@dataclass
class SurveyField:
    """δ, window W and T_ij (float32) at the stored cells (sorted flat indices) of the survey lattice."""

    lattice: T.Lattice
    cells: np.ndarray  # (M,) int64, sorted flat C-order indices into lattice.shape
    delta: np.ndarray  # (M,) float32
    window: np.ndarray  # (M,) float32
    tensor: np.ndarray  # (6, M) float32, order T.TENSOR_PAIRS
    mean_density_mpc3: float
    settings: dict = field(default_factory=dict)  # R_s, window_min, … (provenance)

    # ------------------------------------------------------------ lookup
    def _rows(self, flat_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each flat index in the stored cells and whether it is stored."""
        flat_index = np.asarray(flat_index, np.int64)
        if self.cells.size == 0:
            return np.zeros(flat_index.shape, np.int64), np.zeros(flat_index.shape, bool)
        pos = np.searchsorted(self.cells, flat_index)
        pos = np.minimum(pos, self.cells.size - 1)
        return pos, self.cells[pos] == flat_index

    def gather(self, values: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
        """Stored per-cell `values` (M,) at flat indices of the survey lattice (0 at cells not stored), float64."""
        pos, hit = self._rows(flat_index)
        return np.where(hit, values[pos] if values.size else 0.0, 0.0).astype(np.float64)

    def window_at_cells(self, flat_index: np.ndarray) -> np.ndarray:
        """The smoothed random window W at flat indices of the survey lattice (0 outside the stored cells)."""
        return self.gather(self.window, flat_index)

    def sample(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """δ (N,), symmetric T_ij (N,3,3) and window W (N,) at points (N,3) Mpc (CIC in the survey lattice)."""
        n = len(xyz)
        tensors = np.zeros((n, 3, 3))
        if n == 0:
            return np.zeros(0), tensors, np.zeros(0)
        xyz = np.asarray(xyz, np.float64)
        inside = self.lattice.interior(xyz)
        idx, w = T._cic_weights(self.lattice, np.where(inside[:, None], xyz, self.lattice.origin))
        w = np.where(inside[None, :], w, 0.0)
        pos, hit = self._rows(idx)
        w = np.where(hit, w, 0.0)
        take = lambda v: (v[pos] * w).sum(0) if v.size else np.zeros(n)  # noqa: E731
        for comp, (a, b) in zip(self.tensor, T.TENSOR_PAIRS):
            tensors[:, a, b] = tensors[:, b, a] = take(comp)
        return take(self.delta), tensors, take(self.window)

    def on_lattice(self, lat: T.Lattice) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Dense δ, W and the 6 T_ij on `lat` (a window of the survey lattice: same cell, origin on its grid).

        Plane by plane (first axis): each plane reads one contiguous run of the sorted stored cells, so the
        memory is `lat`'s arrays plus one survey plane, whatever the survey's size.
        """
        off = np.rint((lat.origin - self.lattice.origin) / lat.cell).astype(np.int64)
        if not np.isclose(lat.cell, self.lattice.cell) or not np.allclose(
                self.lattice.origin + off * lat.cell, lat.origin, atol=1e-6 * lat.cell):
            raise ValueError("the lattice is not a window of the survey lattice (different cell or grid)")
        delta, window = np.zeros(lat.shape), np.zeros(lat.shape)
        tensor = [np.zeros(lat.shape, np.float32) for _ in range(6)]
        full = np.array(self.lattice.shape, np.int64)
        lo = np.maximum(off, 0)
        hi = np.minimum(off + np.array(lat.shape), full)  # exclusive, survey-lattice indices
        if np.any(hi <= lo) or self.cells.size == 0:
            return delta, window, tensor
        plane = full[1] * full[2]
        for i in range(lo[0], hi[0]):
            a = np.searchsorted(self.cells, i * plane + lo[1] * full[2] + lo[2])
            b = np.searchsorted(self.cells, i * plane + (hi[1] - 1) * full[2] + hi[2])
            if b <= a:
                continue
            rem = np.asarray(self.cells[a:b]) - i * plane
            j, k = rem // full[2], rem % full[2]
            keep = (j >= lo[1]) & (j < hi[1]) & (k >= lo[2]) & (k < hi[2])
            rows = np.flatnonzero(keep) + a
            at = (i - off[0], j[keep] - off[1], k[keep] - off[2])
            delta[at] = self.delta[rows]
            window[at] = self.window[rows]
            for c in range(6):
                tensor[c][at] = self.tensor[c][rows]
        return delta, window, tensor

    def cell_eigenvalues(self, window_min: float) -> np.ndarray:
        """Eigenvalues (K,3), λ1 ≥ λ2 ≥ λ3, of the stored cells with W ≥ window_min (the survey's volume)."""
        keep = np.flatnonzero(np.asarray(self.window) >= window_min)
        return np.concatenate([self._eig(keep[lo:lo + 2_000_000]) for lo in range(0, keep.size, 2_000_000)]
                              or [np.zeros((0, 3))])

    def _eig(self, rows: np.ndarray) -> np.ndarray:
        t = np.zeros((rows.size, 3, 3))
        for comp, (a, b) in zip(self.tensor, T.TENSOR_PAIRS):
            t[:, a, b] = t[:, b, a] = comp[rows]
        return T.eigenvalues(t)

    def volume_fractions(self, lambda_th: float, window_min: float, chunk: int = 2_000_000) -> dict[str, float]:
        """T-web volume fractions over the survey's cells (W ≥ window_min) at threshold λ_th (chunked)."""
        keep = np.flatnonzero(np.asarray(self.window) >= window_min)
        counts = np.zeros(4, np.int64)
        for lo in range(0, keep.size, chunk):
            counts += np.bincount(T.web_class(self._eig(keep[lo:lo + chunk]), lambda_th), minlength=4)[:4]
        n = max(int(counts.sum()), 1)
        return {name: float(counts[i] / n) for i, name in enumerate(T.CLASS_NAMES)}

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored cells."""
        return int(self.cells.nbytes + self.delta.nbytes + self.window.nbytes + self.tensor.nbytes)

    # ------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> Path:
        """Write the field as a directory of .npy arrays + meta.json (atomic rename); returns the directory.

        One .npy per array so that `load` can memory-map them: a partition then reads only the pages of its cells.
        """
        import json
        import shutil

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name in ("cells", "delta", "window", "tensor"):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        (tmp / "meta.json").write_text(json.dumps(
            {"origin": self.lattice.origin.tolist(), "shape": list(self.lattice.shape), "cell": self.lattice.cell,
             "mean_density_mpc3": self.mean_density_mpc3, "settings": self.settings}, default=str))
        if path.exists():
            shutil.rmtree(path)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str, mmap: bool = True) -> "SurveyField":
        """Read a field written by `save` (memory-mapped by default: only the cells a run touches are read)."""
        import json

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        arr = {n: np.load(path / f"{n}.npy", mmap_mode="r" if mmap else None)
               for n in ("cells", "delta", "window", "tensor")}
        lat = T.Lattice(np.asarray(meta["origin"], np.float64), tuple(int(x) for x in meta["shape"]),
                        float(meta["cell"]))
        return cls(lat, arr["cells"], arr["delta"], arr["window"], arr["tensor"], float(meta["mean_density_mpc3"]),
                   meta["settings"])


def _smooth32(lat: T.Lattice, grid: np.ndarray, kern: np.ndarray) -> np.ndarray:
    """float32 Gaussian smoothing by FFT (kernel multiplier `kern` on the rfft half-lattice)."""
    return sfft.irfftn(sfft.rfftn(grid.astype(np.float32), workers=-1) * kern, s=lat.shape, workers=-1)


def survey_tidal_field(gal_xyz: np.ndarray, rand_xyz: np.ndarray, mean_density: float, random_density: float,
                       cell: float, r_s: float, pad: float, window_min: float = 0.5,
                       truncate_sigma: float | None = None, settings: dict | None = None) -> SurveyField:
    """The survey-wide δ and T_ij (whole-lattice FFT) from tracers and footprint randoms (N,3) Mpc, stored compactly.

    `mean_density`/`random_density` in Mpc⁻³, `cell`, `r_s` and `pad` in Mpc; the lattice is
    `T.Lattice.around(tracers + randoms, cell, pad)`, so its cells are cells of the one global lattice.
    """
    pts = np.concatenate([np.asarray(gal_xyz, np.float64).reshape(-1, 3),
                          np.asarray(rand_xyz, np.float64).reshape(-1, 3)])
    if len(pts) == 0 or mean_density <= 0:
        empty = np.zeros(0, np.float32)
        return SurveyField(T.Lattice(np.zeros(3), (1, 1, 1), cell), np.zeros(0, np.int64), empty, empty,
                           np.zeros((6, 0), np.float32), float(mean_density), dict(settings or {}))
    lat = T.Lattice.around(pts, cell, pad)
    del pts
    kern = T.smoothing_kernel_fft(lat, r_s, truncate_sigma).astype(np.float32)
    h3 = cell**3
    window = _smooth32(lat, T.cic_assign(lat, rand_xyz), kern) / np.float32(random_density * h3)
    ok = window >= window_min
    keep = ndimage.binary_dilation(ok, structure=np.ones((3, 3, 3), bool))
    cells = np.flatnonzero(keep.ravel())
    del keep
    win_cells = window.ravel()[cells].astype(np.float32)
    rho = _smooth32(lat, T.cic_assign(lat, gal_xyz), kern)
    del kern
    delta = np.zeros(lat.shape, np.float32)
    delta[ok] = rho[ok] / (np.float32(mean_density * h3) * window[ok]) - 1.0
    del rho, window, ok
    delta_cells = delta.ravel()[cells].copy()
    dk = sfft.rfftn(delta, workers=-1)
    del delta
    kx, ky, kz = (k.astype(np.float32) for k in T._kgrid(lat))
    ks = (kx, ky, kz)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    dk /= k2
    dk[0, 0, 0] = 0.0
    del k2
    tensor = np.empty((6, cells.size), np.float32)
    for c, (a, b) in enumerate(T.TENSOR_PAIRS):
        comp = sfft.irfftn(dk * (ks[a] * ks[b]), s=lat.shape, workers=-1)
        tensor[c] = comp.ravel()[cells]
        del comp
    return SurveyField(lat, cells.astype(np.int64), delta_cells, win_cells, tensor, float(mean_density),
                       dict(settings or {}))
