"""k-nearest-neighbour projected distances within a velocity slice, and Σ_N = N / (π d_N²).

The projected separation of galaxies i, j at comoving distances χ_i, χ_j and angle θ is
R_p = 2 sqrt(χ_i χ_j) sin(θ/2), so that |x_i − x_j|² = (χ_i − χ_j)² + R_p² exactly. A
neighbour counts when c|z_i − z_j| < dv. Because H(z) ≥ H0, such a neighbour has
|χ_i − χ_j| ≤ dv / H0, so every neighbour with R_p ≤ R lies inside the sphere of radius
sqrt(R² + (dv/H0)²): a ball search of that radius is exact, and R doubles for the galaxies
whose k-th neighbour lies beyond it, up to r_max (then NaN).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from desi_assets.science.cosmic_web.coords import C_KMS


def surface_density(n: int, d_mpc: np.ndarray) -> np.ndarray:
    """Σ_N = N / (π d_N²), Mpc⁻², from the projected distance d_N in Mpc."""
    d = np.asarray(d_mpc, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return n / (np.pi * d**2)


def projected_knn(query_xyz: np.ndarray, query_z: np.ndarray, tracer_xyz: np.ndarray, tracer_z: np.ndarray,
                  ks: tuple[int, ...] = (5, 10), dv_kms: float = 1000.0, h0: float = 67.66,
                  self_index: np.ndarray | None = None, r_start_mpc: float = 4.0, r_max_mpc: float = 30.0,
                  chunk: int = 20000) -> np.ndarray:
    """Projected comoving distance (Mpc) to the k-th tracer with c|Δz| < dv_kms, shape (Nq, len(ks)); NaN if > r_max.

    `self_index[i]` is the tracer index of query i itself (−1 if it is not a tracer); it is excluded.
    """
    q = np.asarray(query_xyz, np.float64).reshape(-1, 3)
    t = np.asarray(tracer_xyz, np.float64).reshape(-1, 3)
    qz, tz = np.asarray(query_z, np.float64), np.asarray(tracer_z, np.float64)
    out = np.full((len(q), len(ks)), np.nan)
    if len(q) == 0 or len(t) == 0:
        return out
    selfi = np.full(len(q), -1, np.int64) if self_index is None else np.asarray(self_index, np.int64)
    qchi, tchi = np.linalg.norm(q, axis=1), np.linalg.norm(t, axis=1)
    los = dv_kms / h0 * (1 + 1e-9)  # bound on |Δχ| inside the velocity slice, Mpc
    dz_max = dv_kms / C_KMS
    ttree = cKDTree(t)
    karr = np.asarray(ks, np.int64)
    todo = np.arange(len(q))
    radius = min(r_start_mpc, r_max_mpc)
    while todo.size:
        unresolved = []
        # fewer queries per pass as the search ball grows, so that the pair list stays about the first pass's size
        step = max(500, int(chunk * (np.hypot(r_start_mpc, los) / np.hypot(radius, los)) ** 3))
        for lo in range(0, todo.size, step):
            idx = todo[lo:lo + step]
            qtree = cKDTree(q[idx])
            pairs = qtree.sparse_distance_matrix(ttree, np.hypot(radius, los), output_type="ndarray")
            i, j, d3 = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
            gi = idx[i]
            keep = (j != selfi[gi]) & (np.abs(qz[gi] - tz[j]) < dz_max)
            i, gi, j, d3 = i[keep], gi[keep], j[keep], d3[keep]
            rp = np.sqrt(np.clip(d3**2 - (qchi[gi] - tchi[j]) ** 2, 0.0, None))
            inside = rp <= radius
            i, rp = i[inside], rp[inside]
            order = np.lexsort((rp, i))
            i, rp = i[order], rp[order]
            counts = np.bincount(i, minlength=idx.size)
            start = np.concatenate([[0], np.cumsum(counts)[:-1]])
            found = counts[:, None] >= karr[None, :]
            pos = np.where(found, start[:, None] + karr[None, :] - 1, 0)
            vals = np.where(found, rp[pos] if rp.size else 0.0, np.nan)
            out[idx] = vals
            unresolved.append(idx[~found.all(axis=1)])
        todo = np.concatenate(unresolved) if unresolved else np.zeros(0, np.int64)
        if radius >= r_max_mpc:
            break
        radius = min(2 * radius, r_max_mpc)
    return out
