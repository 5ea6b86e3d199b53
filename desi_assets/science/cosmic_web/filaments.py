"""Filament skeletons as line segments, and the point-to-segment distance to them.

Two finders (compared on the mock truth in bench/cosmic_web.py):
- `tweb_skeleton`: ridge cells of the T-web filament class — filament cells where the
  smoothed δ is a maximum across the filament (along the two collapsing eigenvectors
  e1, e2), linked to ridge cells within √3 cells; the axis is e3.
- `mst_skeleton`: the minimum spanning tree of the tracers (Barrow+1985; Alpaslan+2014),
  edges longer than a linking length cut, then leaves pruned `prune` times.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import cKDTree

from desi_assets.science.cosmic_web.tweb import Lattice, cic_interpolate, tensor_cells


def point_segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (Mpc) from points (..., 3) to segments a–b (..., 3), broadcasting."""
    ab = b - a
    denom = np.maximum(np.einsum("...i,...i->...", ab, ab), 1e-30)
    t = np.clip(np.einsum("...i,...i->...", points - a, ab) / denom, 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


def distance_to_segments(points: np.ndarray, segments: np.ndarray, k: int = 16, chunk: int = 100_000) -> np.ndarray:
    """Exact distance (Mpc) from each point (N,3) to the nearest segment (M,2,3); inf when there are none.

    Candidates are the k segments with nearest midpoints; a point is redone with 4k when the k-th
    midpoint minus the longest half-length could still beat its best distance. Points go `chunk` at a time.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    out = np.full(len(pts), np.inf)
    if len(segments) == 0 or len(pts) == 0:
        return out
    if len(pts) > chunk:
        for lo in range(0, len(pts), chunk):
            out[lo:lo + chunk] = distance_to_segments(pts[lo:lo + chunk], segments, k, chunk)
        return out
    a, b = segments[:, 0], segments[:, 1]
    mid = 0.5 * (a + b)
    half = 0.5 * np.linalg.norm(b - a, axis=1).max()
    tree = cKDTree(mid)
    todo = np.arange(len(pts))
    while todo.size:
        kk = min(k, len(mid))
        dmid, idx = tree.query(pts[todo], k=kk)
        dmid, idx = dmid.reshape(len(todo), kk), idx.reshape(len(todo), kk)
        d = point_segment_distance(pts[todo][:, None, :], a[idx], b[idx]).min(axis=1)
        out[todo] = d
        if kk == len(mid):
            break
        todo = todo[d > dmid[:, -1] - half]
        k *= 4
    return out


def tweb_skeleton(lat: Lattice, delta: np.ndarray, tensor: list[np.ndarray], classes: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
    """Segments (M,2,3) Mpc along the ridges of T-web filament cells (see module docstring)."""
    cells = np.flatnonzero((classes.ravel() == 2) & valid.ravel())
    if cells.size == 0:
        return np.zeros((0, 2, 3))
    centre = lat.cell_centres(cells)
    _, vec = np.linalg.eigh(tensor_cells(tensor, cells))  # ascending: vec[..., 0] = e3 (axis), 1, 2 collapse
    h = lat.cell
    d0 = delta.ravel()[cells]
    ridge = np.ones(cells.size, bool)
    for col in (1, 2):
        e = vec[:, :, col]
        for s in (1.0, -1.0):
            ridge &= d0 >= cic_interpolate(lat, delta, centre + s * h * e)
    centre, axis = centre[ridge], vec[ridge][:, :, 0]
    if len(centre) == 0:
        return np.zeros((0, 2, 3))
    pairs = cKDTree(centre).query_pairs(np.sqrt(3.0) * h * 1.01, output_type="ndarray")
    linked = np.zeros(len(centre), bool)
    linked[pairs.ravel()] = True
    segs = [np.stack([centre[pairs[:, 0]], centre[pairs[:, 1]]], axis=1)]
    lone = ~linked  # isolated ridge cells: one cell-long segment along e3
    segs.append(np.stack([centre[lone] - 0.5 * h * axis[lone], centre[lone] + 0.5 * h * axis[lone]], axis=1))
    return np.concatenate(segs)


def mst_skeleton(xyz: np.ndarray, max_edge_mpc: float, prune: int = 3, k: int = 10) -> np.ndarray:
    """Segments (M,2,3) Mpc: MST of the points over their k-NN graph, edges > max_edge_mpc cut, leaves pruned."""
    pts = np.asarray(xyz, np.float64).reshape(-1, 3)
    n = len(pts)
    if n < 3:
        return np.zeros((0, 2, 3))
    kk = min(k + 1, n)
    d, j = cKDTree(pts).query(pts, k=kk)
    i = np.repeat(np.arange(n), kk - 1)
    d, j = d[:, 1:].ravel(), j[:, 1:].ravel()
    ok = np.isfinite(d) & (d > 0)
    graph = coo_matrix((d[ok], (i[ok], j[ok])), shape=(n, n)).tocsr()
    mst = minimum_spanning_tree(graph).tocoo()
    keep = mst.data <= max_edge_mpc
    ea, eb = mst.row[keep], mst.col[keep]
    alive = np.ones(ea.size, bool)
    for _ in range(prune):
        deg = np.bincount(np.concatenate([ea[alive], eb[alive]]), minlength=n)
        alive &= (deg[ea] > 1) & (deg[eb] > 1)
    return np.stack([pts[ea[alive]], pts[eb[alive]]], axis=1)
