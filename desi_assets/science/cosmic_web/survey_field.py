"""The survey-wide tidal field: δ and T_ij computed ONCE on one fixed lattice over the whole survey, then sampled.

DESI's T-web (DR1: a 256³ grid in an 800 Mpc cube) takes T_ij(k) = k_i k_j / k² δ(k) over the whole
volume; the tidal field at a point then depends on the density everywhere, so no partition buffer
can reproduce it. Here the field is built once from every tracer (CIC, normalised by footprint
randoms and the survey n̄, Gaussian R_s, T_ij by FFT over the whole lattice) and stored compactly:
only the cells where the smoothed random window reaches `window_min`, dilated by one cell so that
every CIC corner of a point inside the footprint is kept; δ, W and the 6 T_ij as float32 plus one
sorted int64 key per cell (4·8 + 8 = 40 bytes a stored cell), saved as memory-mappable .npy files.
A partition samples it at its
galaxies (CIC in the survey lattice's own coordinates), so every run that holds a galaxy returns
bit-identical δ, λ and WEB_CLASS for it.

Cells are stored brick by brick (bricks of `BRICK`³ cells, C order within a brick and between
bricks; the key of a cell is its position in that order) with a small index of where each brick
starts: a partition reads, from the saved files, only the bricks that hold its points (`bricks_at`),
so its memory does not depend on the survey's size (in C order over the whole lattice a region's
cells are spread over every plane it crosses, and a search over the mapped keys reads them all).

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

#: Edge (cells) of the bricks the stored cells are ordered by: 16³ cells = 16 KiB of each float32 array.
BRICK = 16
_CHUNK = 1 << 20  # stored cells decoded at a time by on_lattice


def brick_keys(ijk: tuple[np.ndarray, np.ndarray, np.ndarray], shape, brick) -> np.ndarray:
    """Storage key (int64) of cells (i, j, k) of a lattice of `shape` stored in bricks of `brick` (3,) cells.

    Bricks in C order, cells in C order within a brick; `brick` = `shape` gives the plain flat C-order index.
    """
    i, j, k = (np.asarray(a, np.int64) for a in ijk)
    b0, b1, b2 = (int(x) for x in brick)
    n1, n2 = -(-int(shape[1]) // b1), -(-int(shape[2]) // b2)
    b = ((i // b0) * n1 + j // b1) * n2 + k // b2
    return b * (b0 * b1 * b2) + ((i % b0) * b1 + j % b1) * b2 + k % b2


def brick_cells(keys: np.ndarray, shape, brick) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (i, j, k) of storage keys (the inverse of `brick_keys`)."""
    b0, b1, b2 = (int(x) for x in brick)
    n1, n2 = -(-int(shape[1]) // b1), -(-int(shape[2]) // b2)
    b, r = np.divmod(np.asarray(keys, np.int64), b0 * b1 * b2)
    bij, bk = np.divmod(b, n2)
    bi, bj = np.divmod(bij, n1)
    rij, rk = np.divmod(r, b2)
    ri, rj = np.divmod(rij, b1)
    return bi * b0 + ri, bj * b1 + rj, bk * b2 + rk


@dataclass
class SurveyField:
    """δ, window W and T_ij (float32) at the stored cells (sorted storage keys, `brick_keys`) of the survey lattice."""

    lattice: T.Lattice
    cells: np.ndarray  # (M,) int64, sorted storage keys (brick_keys of lattice.shape in bricks of `brick`)
    delta: np.ndarray  # (M,) float32
    window: np.ndarray  # (M,) float32
    tensor: np.ndarray  # (6, M) float32, order T.TENSOR_PAIRS
    mean_density_mpc3: float
    settings: dict = field(default_factory=dict)  # R_s, window_min, … (provenance)
    brick: tuple[int, int, int] | None = None  # cells a brick; None: lattice.shape (plain flat C order)
    starts: np.ndarray | None = None  # (bricks + 1,) int64: brick b is rows starts[b]:starts[b + 1]; None: computed
    files: dict | None = field(default=None, repr=False)  # name -> (path, byte offset, dtype, M) when loaded mapped

    def __post_init__(self):
        self.brick = tuple(int(b) for b in (self.brick or self.lattice.shape))
        if self.starts is None:  # one binary search over the keys (a field saved without its brick index)
            self.starts = np.searchsorted(self.cells, np.arange(self.n_bricks + 1, dtype=np.int64) * self.brick_cells)

    @property
    def brick_cells(self) -> int:
        """Cells (keys) a brick."""
        return int(np.prod(self.brick))

    @property
    def n_bricks(self) -> int:
        """Bricks covering the lattice."""
        return int(np.prod([-(-n // b) for n, b in zip(self.lattice.shape, self.brick)]))

    # ------------------------------------------------------------ lookup
    def keys_of(self, flat_index: np.ndarray) -> np.ndarray:
        """Storage keys of flat C-order indices of the survey lattice."""
        ijk = np.unravel_index(np.asarray(flat_index, np.int64), self.lattice.shape)
        return brick_keys(ijk, self.lattice.shape, self.brick)

    def flat_indices(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Flat C-order indices (into lattice.shape) of stored rows (default: every stored cell, in storage order)."""
        return np.ravel_multi_index(brick_cells(np.asarray(self.cells[rows]), self.lattice.shape, self.brick),
                                    self.lattice.shape)

    def _rows(self, flat_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each flat index in the stored cells and whether it is stored."""
        flat_index = np.asarray(flat_index, np.int64)
        if self.cells.size == 0:
            return np.zeros(flat_index.shape, np.int64), np.zeros(flat_index.shape, bool)
        key = self.keys_of(flat_index)
        pos = np.minimum(self._insertion(key), self.cells.size - 1)
        return pos, self.cells[pos] == key

    def _insertion(self, key: np.ndarray) -> np.ndarray:
        """Where each storage key would go in the sorted stored keys (np.searchsorted, side left).

        A binary search inside the key's own brick (rows starts[b]:starts[b + 1]), so that it reads only the pages
        of the bricks it is asked about: numpy's searchsorted over the whole memory-mapped array starts every search
        from the previous result, and its first probes land all over the array.
        """
        shape = np.shape(key)
        key = np.asarray(key, np.int64).ravel()
        b = np.clip(key // self.brick_cells, 0, self.n_bricks - 1)
        lo, hi = self.starts[b].astype(np.int64), self.starts[b + 1].astype(np.int64)
        act = np.flatnonzero(lo < hi)
        while act.size:
            mid = (lo[act] + hi[act]) >> 1
            go = np.asarray(self.cells[mid]) < key[act]
            lo[act[go]] = mid[go] + 1
            hi[act[~go]] = mid[~go]
            act = act[lo[act] < hi[act]]
        return lo.reshape(shape)

    def gather(self, values: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
        """Stored per-cell `values` (M,) at flat indices of the survey lattice (0 at cells not stored), float64."""
        pos, hit = self._rows(flat_index)
        return np.where(hit, values[pos] if values.size else 0.0, 0.0).astype(np.float64)

    def window_at_cells(self, flat_index: np.ndarray) -> np.ndarray:
        """The smoothed random window W at flat indices of the survey lattice (0 outside the stored cells)."""
        src = self.bricks_at(flat_index)
        return src.gather(src.window, flat_index)

    def bricks_at(self, flat_index: np.ndarray) -> "SurveyField":
        """The field restricted to the bricks that hold these flat indices, in memory (same values there).

        For a field loaded from disk the rows of those bricks are read from its files (one read per run of
        consecutive bricks), so a run's memory is its bricks, not the pages a memory map would fault in around
        them; an in-memory or single-brick field is returned as it is.
        """
        if not self.files or self.n_bricks == 1 or self.cells.size == 0:
            return self
        keys = self.keys_of(np.ravel(flat_index))
        b = np.unique(np.clip(keys // self.brick_cells, 0, self.n_bricks - 1))
        a, e = self.starts[b].astype(np.int64), self.starts[b + 1].astype(np.int64)
        cut = np.flatnonzero(a[1:] != e[:-1]) + 1  # runs of consecutive stored bricks: one read each
        ra, re = a[np.r_[0, cut]], e[np.r_[cut - 1, b.size - 1]]
        counts = np.zeros(self.n_bricks, np.int64)
        counts[b] = e - a
        read = lambda name, row=0: _read_runs(self.files[name], ra, re, row)  # noqa: E731
        return SurveyField(self.lattice, read("cells"), read("delta"), read("window"),
                           np.stack([read("tensor", c) for c in range(6)]), self.mean_density_mpc3, self.settings,
                           self.brick, np.r_[0, np.cumsum(counts)])

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
        src = self.bricks_at(idx)
        pos, hit = src._rows(idx)
        w = np.where(hit, w, 0.0)
        take = lambda v: (v[pos] * w).sum(0) if v.size else np.zeros(n)  # noqa: E731
        for comp, (a, b) in zip(src.tensor, T.TENSOR_PAIRS):
            tensors[:, a, b] = tensors[:, b, a] = take(comp)
        return take(src.delta), tensors, take(src.window)

    def on_lattice(self, lat: T.Lattice) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Dense δ, W and the 6 T_ij on `lat` (a window of the survey lattice: same cell, origin on its grid).

        Brick by brick: each brick the window crosses is one contiguous run of the stored cells (only its
        first-axis planes inside the window are read, from the files of a loaded field), `_CHUNK` cells at a
        time, so the memory is `lat`'s arrays plus one chunk, whatever the survey's size.
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
        br = np.array(self.brick, np.int64)
        nb = -(-full // br)
        bi, bj, bk = np.meshgrid(*(np.arange(lo[a] // br[a], (hi[a] - 1) // br[a] + 1) for a in range(3)),
                                 indexing="ij")
        bi, b = bi.ravel(), ((bi * nb[1] + bj) * nb[2] + bk).ravel()
        plane = br[1] * br[2]  # keys of one first-axis plane of a brick
        p_lo = np.maximum(lo[0] - bi * br[0], 0)
        p_hi = np.minimum(hi[0] - bi * br[0], br[0])
        start, stop = self.starts[b].astype(np.int64), self.starts[b + 1].astype(np.int64)  # whole bricks
        part = np.flatnonzero(p_lo > 0)  # bricks cut by the window's first-axis ends: a search in the brick
        start[part] = self._insertion(b[part] * br.prod() + p_lo[part] * plane)
        part = np.flatnonzero(p_hi < br[0])
        stop[part] = self._insertion(b[part] * br.prod() + p_hi[part] * plane)
        runs = [(a, e) for a0, e0 in zip(start.tolist(), stop.tolist()) for a in range(a0, e0, _CHUNK)
                for e in [min(a + _CHUNK, e0)]]
        r = 0
        while r < len(runs):
            group, n = [], 0
            while r < len(runs) and (not group or n + runs[r][1] - runs[r][0] <= _CHUNK):
                group.append(runs[r])
                n += runs[r][1] - runs[r][0]
                r += 1
            ra, re = np.array(group, np.int64).T
            if self.files:  # a loaded field: read these runs from its files (no memory-mapped pages)
                take = lambda name, c=0: _read_runs(self.files[name], ra, re, c)  # noqa: E731
            else:
                rows = np.concatenate([np.arange(a, e) for a, e in group])
                take = lambda name, c=None: np.asarray(  # noqa: E731
                    (getattr(self, name) if c is None else self.tensor[c])[rows])
            i, j, k = brick_cells(take("cells"), full, br)
            keep = ((i >= lo[0]) & (i < hi[0]) & (j >= lo[1]) & (j < hi[1]) & (k >= lo[2]) & (k < hi[2]))
            at = (i[keep] - off[0], j[keep] - off[1], k[keep] - off[2])
            delta[at] = take("delta")[keep]
            window[at] = take("window")[keep]
            for c in range(6):
                tensor[c][at] = take("tensor", c)[keep]
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
        for name in ("cells", "delta", "window", "tensor", "starts"):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        (tmp / "meta.json").write_text(json.dumps(
            {"origin": self.lattice.origin.tolist(), "shape": list(self.lattice.shape), "cell": self.lattice.cell,
             "brick": list(self.brick), "mean_density_mpc3": self.mean_density_mpc3, "settings": self.settings},
            default=str))
        if path.exists():
            shutil.rmtree(path)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str, mmap: bool = True) -> "SurveyField":
        """Read a field written by `save` (memory-mapped by default: only the cells a run touches are read).

        A field saved without "brick" (before brick order) has flat C-order keys and is read as such.
        """
        import json

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        arr = {n: np.load(path / f"{n}.npy", mmap_mode="r" if mmap else None)
               for n in ("cells", "delta", "window", "tensor")}
        starts = np.load(path / "starts.npy") if (path / "starts.npy").exists() else None  # small: in memory
        lat = T.Lattice(np.asarray(meta["origin"], np.float64), tuple(int(x) for x in meta["shape"]),
                        float(meta["cell"]))
        files = ({n: (str(a.filename), int(a.offset), a.dtype, int(a.shape[-1])) for n, a in arr.items()}
                 if mmap else None)
        return cls(lat, arr["cells"], arr["delta"], arr["window"], arr["tensor"], float(meta["mean_density_mpc3"]),
                   meta["settings"], meta.get("brick"), starts, files)


def _read_runs(spec: tuple, starts: np.ndarray, stops: np.ndarray, row: int = 0) -> np.ndarray:
    """Elements starts[i]:stops[i] of row `row` of a saved .npy array (path, data offset, dtype, row length)."""
    path, offset, dtype, m = spec
    dtype = np.dtype(dtype)
    out = np.empty(int((stops - starts).sum()), dtype)
    buf = memoryview(out).cast("B")
    at = 0
    with open(path, "rb", buffering=0) as f:
        for a, e in zip(starts.tolist(), stops.tolist()):
            f.seek(offset + (row * m + a) * dtype.itemsize)
            end = at + (e - a) * dtype.itemsize
            while at < end:
                got = f.readinto(buf[at:end])
                if not got:
                    raise OSError(f"{path}: short read")
                at += got
    return out


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
    brick = tuple(min(BRICK, n) for n in lat.shape)
    keys, cells = _stored_keys(keep, brick)  # sorted storage keys (brick order), their flat C-order indices
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
    starts = np.searchsorted(keys, np.arange(int(np.prod([-(-n // b) for n, b in zip(lat.shape, brick)])) + 1,
                                            dtype=np.int64) * int(np.prod(brick)))  # in memory: one pass
    return SurveyField(lat, keys, delta_cells, win_cells, tensor, float(mean_density), dict(settings or {}), brick,
                       starts)


def _stored_keys(keep: np.ndarray, brick: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted storage keys (`brick_keys`) of the True cells of a boolean lattice and their flat C-order indices.

    One layer of bricks (first axis) at a time, so the only full-size arrays are the two results.
    """
    shape = keep.shape
    n = int(np.count_nonzero(keep))
    keys, flat = np.empty(n, np.int64), np.empty(n, np.int64)
    at = 0
    for i0 in range(0, shape[0], brick[0]):
        i, j, k = np.nonzero(keep[i0:i0 + brick[0]])
        key = brick_keys((i + i0, j, k), shape, brick)
        order = np.argsort(key, kind="stable")
        m = key.size
        keys[at:at + m] = key[order]
        flat[at:at + m] = np.ravel_multi_index((i[order] + i0, j[order], k[order]), shape)
        at += m
    return keys, flat
