"""3-D cosmic web with known truth: knots, filaments, sheets and voids in comoving space (Mpc).

Construction (segment-and-node): knots are Poisson points in the comoving cone of the
patch; filaments are segments joining each knot to its nearest neighbours (length
cut); sheets are the triangles of three mutually connected knots. Galaxies are drawn
from a mixture (around knots, along filaments, on sheets, uniform in voids) and then
classified geometrically: knot if within R_KNOT of a knot, filament if within R_FIL of
a spine, sheet if within R_SHEET of a triangle's plane (inside it), else void.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.cosmology import FlatLambdaCDM
from scipy.spatial import cKDTree

#: The one cosmology of the mock (Planck-like flat ΛCDM).
COSMO = FlatLambdaCDM(H0=67.7, Om0=0.31)

R_KNOT_MPC = 2.0
R_FIL_MPC = 2.5
R_SHEET_MPC = 2.5
NODE_SPACING_MPC = 28.0
MAX_FIL_LEN_MPC = 60.0

_Z_TAB = np.linspace(0.0, 5.0, 5001)
_DC_TAB = COSMO.comoving_distance(_Z_TAB).value


def comoving_distance(z: np.ndarray) -> np.ndarray:
    """Comoving distance (Mpc) at redshift z (tabulated)."""
    return np.interp(z, _Z_TAB, _DC_TAB)


def z_of_distance(d: np.ndarray) -> np.ndarray:
    """Redshift at comoving distance d (Mpc)."""
    return np.interp(d, _DC_TAB, _Z_TAB)


def luminosity_distance_cm(z: np.ndarray) -> np.ndarray:
    """Luminosity distance (cm) at redshift z."""
    return comoving_distance(z) * (1.0 + np.asarray(z)) * 3.0856775814913673e24


def radec_to_unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors (N,3) from RA/Dec (deg)."""
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def xyz_to_radecz(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Comoving Cartesian (Mpc) → RA, Dec (deg) and cosmological redshift."""
    d = np.linalg.norm(xyz, axis=1)
    ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.maximum(d, 1e-9), -1, 1)))
    return ra, dec, z_of_distance(d)


def _random_in_cap(rng: np.random.Generator, n: int, center: np.ndarray, radius_deg: float) -> np.ndarray:
    """Uniform unit vectors inside a spherical cap around center."""
    cosr = np.cos(np.radians(radius_deg))
    mu = rng.uniform(cosr, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - mu**2)
    local = np.stack([s * np.cos(phi), s * np.sin(phi), mu], axis=1)
    z = center / np.linalg.norm(center)
    a = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(a, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return local @ np.stack([x, y, z])


@dataclass
class CosmicWeb:
    """Knots (N,3), filament segments (M,2) indices, sheet triangles (T,3) indices, in Mpc."""

    nodes: np.ndarray
    richness: np.ndarray
    segments: np.ndarray
    triangles: np.ndarray
    center: np.ndarray
    radius_deg: float
    dmax: float

    @classmethod
    def build(cls, rng: np.random.Generator, center_ra: float, center_dec: float,
              radius_deg: float, zmax: float = 4.2) -> "CosmicWeb":
        """Make a web filling the cone of given radius (deg) around (ra, dec) out to zmax."""
        center = radec_to_unit(np.array([center_ra]), np.array([center_dec]))[0]
        dmax = float(comoving_distance(zmax))
        omega = 2 * np.pi * (1 - np.cos(np.radians(radius_deg)))
        vol = omega / 3 * dmax**3
        n = rng.poisson(vol / NODE_SPACING_MPC**3)
        d = dmax * rng.uniform(0, 1, n) ** (1 / 3)
        nodes = _random_in_cap(rng, n, center, radius_deg) * d[:, None]
        tree = cKDTree(nodes)
        k = min(4, n - 1)
        dist, idx = tree.query(nodes, k=k + 1)
        pairs = set()
        for j in range(1, k + 1):
            ok = dist[:, j] < MAX_FIL_LEN_MPC
            a, b = np.arange(n)[ok], idx[ok, j]
            # keep the 2 nearest always, 3rd/4th with probability 0.5: a sparser web
            if j > 2:
                keep = rng.uniform(size=a.size) < 0.5
                a, b = a[keep], b[keep]
            for x, y in zip(np.minimum(a, b), np.maximum(a, b)):
                pairs.add((int(x), int(y)))
        segments = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        nbr: dict[int, set[int]] = {}
        for a, b in segments:
            nbr.setdefault(a, set()).add(b)
            nbr.setdefault(b, set()).add(a)
        tris = set()
        for a, b in segments:
            for c in nbr[a] & nbr[b]:
                tris.add(tuple(sorted((int(a), int(b), int(c)))))
        triangles = np.array(sorted(tris), dtype=np.int64).reshape(-1, 3)
        richness = rng.lognormal(0.0, 0.8, n)
        return cls(nodes, richness, segments, triangles, center, radius_deg, dmax)

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, n: int, dlo: float, dhi: float,
               fractions=(0.12, 0.38, 0.25, 0.25)) -> tuple[np.ndarray, np.ndarray]:
        """n points (Mpc) in the shell dlo<D<dhi from the knot/filament/sheet/void mixture, + component ids."""
        out, comp = [], []
        m = 20.0
        dn = np.linalg.norm(self.nodes, axis=1)
        node_ok = np.flatnonzero((dn > dlo - m) & (dn < dhi + m))
        seg_mid = np.linalg.norm(self.nodes[self.segments].mean(1), axis=1) if len(self.segments) else np.zeros(0)
        seg_ok = np.flatnonzero((seg_mid > dlo - m) & (seg_mid < dhi + m))
        tri_mid = np.linalg.norm(self.nodes[self.triangles].mean(1), axis=1) if len(self.triangles) else np.zeros(0)
        tri_ok = np.flatnonzero((tri_mid > dlo - m) & (tri_mid < dhi + m))
        counts = rng.multinomial(n, fractions)
        # knots
        if counts[0] and node_ok.size:
            w = self.richness[node_ok]
            pick = rng.choice(node_ok, counts[0], p=w / w.sum())
            out.append(self.nodes[pick] + rng.normal(0, 1.0, (counts[0], 3)))
            comp.append(np.full(counts[0], 3))
        # filaments
        if counts[1] and seg_ok.size:
            a, b = self.nodes[self.segments[seg_ok, 0]], self.nodes[self.segments[seg_ok, 1]]
            L = np.linalg.norm(b - a, axis=1)
            pick = rng.choice(seg_ok.size, counts[1], p=L / L.sum())
            t = rng.uniform(0, 1, counts[1])[:, None]
            out.append(a[pick] + t * (b[pick] - a[pick]) + rng.normal(0, 0.9, (counts[1], 3)))
            comp.append(np.full(counts[1], 2))
        # sheets
        if counts[2] and tri_ok.size:
            p = self.nodes[self.triangles[tri_ok]]
            area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
            pick = rng.choice(tri_ok.size, counts[2], p=area / area.sum())
            u, v = rng.uniform(size=(2, counts[2]))
            flip = u + v > 1
            u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
            q = p[pick]
            nrm = np.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0])
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            pts = q[:, 0] + u[:, None] * (q[:, 1] - q[:, 0]) + v[:, None] * (q[:, 2] - q[:, 0])
            out.append(pts + nrm * rng.normal(0, 0.8, (counts[2], 1)))
            comp.append(np.full(counts[2], 1))
        # voids: uniform in the shell of the cone
        nv = n - sum(len(c) for c in comp)
        dd = (rng.uniform(dlo**3, dhi**3, nv)) ** (1 / 3)
        out.append(_random_in_cap(rng, nv, self.center, self.radius_deg) * dd[:, None])
        comp.append(np.zeros(nv, dtype=np.int64))
        return np.concatenate(out), np.concatenate(comp)

    # ------------------------------------------------------------ classification
    def distance_to_filament(self, xyz: np.ndarray) -> np.ndarray:
        """Distance (Mpc) from each point to the nearest filament spine (exact segment distance)."""
        if len(self.segments) == 0:
            return np.full(len(xyz), np.inf)
        a = self.nodes[self.segments[:, 0]]
        b = self.nodes[self.segments[:, 1]]
        mid = 0.5 * (a + b)
        tree = cKDTree(mid)
        k = min(16, len(mid))
        _, idx = tree.query(xyz, k=k)
        idx = np.atleast_2d(idx).reshape(len(xyz), k)
        A, B = a[idx], b[idx]
        ab = B - A
        t = np.clip(np.einsum("nki,nki->nk", xyz[:, None] - A, ab) / np.einsum("nki,nki->nk", ab, ab), 0, 1)
        proj = A + t[..., None] * ab
        return np.linalg.norm(xyz[:, None] - proj, axis=2).min(axis=1)

    def distance_to_sheet(self, xyz: np.ndarray) -> np.ndarray:
        """Distance (Mpc) to the nearest sheet triangle whose footprint contains the point (inf if none)."""
        if len(self.triangles) == 0:
            return np.full(len(xyz), np.inf)
        p = self.nodes[self.triangles]
        tree = cKDTree(p.mean(1))
        k = min(12, len(p))
        _, idx = tree.query(xyz, k=k)
        idx = np.atleast_2d(idx).reshape(len(xyz), k)
        q = p[idx]  # (n,k,3,3)
        e1, e2 = q[:, :, 1] - q[:, :, 0], q[:, :, 2] - q[:, :, 0]
        nrm = np.cross(e1, e2)
        nrm /= np.linalg.norm(nrm, axis=2, keepdims=True)
        rel = xyz[:, None] - q[:, :, 0]
        h = np.einsum("nki,nki->nk", rel, nrm)
        inplane = rel - h[..., None] * nrm
        d11, d12, d22 = (np.einsum("nki,nki->nk", e1, e1), np.einsum("nki,nki->nk", e1, e2),
                         np.einsum("nki,nki->nk", e2, e2))
        r1, r2 = np.einsum("nki,nki->nk", inplane, e1), np.einsum("nki,nki->nk", inplane, e2)
        den = d11 * d22 - d12**2
        u = (d22 * r1 - d12 * r2) / den
        v = (d11 * r2 - d12 * r1) / den
        inside = (u >= 0) & (v >= 0) & (u + v <= 1)
        return np.where(inside, np.abs(h), np.inf).min(axis=1)

    def classify(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """web_class (0 void, 1 sheet, 2 filament, 3 knot) and distance to filament spine (Mpc)."""
        dfil = self.distance_to_filament(xyz)
        dnode, _ = cKDTree(self.nodes).query(xyz)
        dsheet = self.distance_to_sheet(xyz)
        cls = np.zeros(len(xyz), dtype=np.int8)
        cls[dsheet < R_SHEET_MPC] = 1
        cls[dfil < R_FIL_MPC] = 2
        cls[dnode < R_KNOT_MPC] = 3
        return cls, dfil
