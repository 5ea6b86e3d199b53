"""Positions-only mock: a wide, BGS-like galaxy catalog in the mock's 3-D web, with web-class and filament truth.

Hundreds of deg² (a cap of `radius_deg`) at constant comoving density (a volume-limited,
BGS-like sample, z < 0.4 by default), drawn from the same knot/filament/sheet/void
structure as the spectral mock (`structure.CosmicWeb`). Truth per galaxy: the geometric
web class of `CosmicWeb.classify` and the distance to the nearest true filament axis; the
axes themselves are written beside the catalog (`<stem>_filaments.parquet`, endpoints in
RA/Dec/z so that any cosmology can place them). No spectra: `desi-ard cosmic-web` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from desi_assets.sources.mock.structure import CosmicWeb, comoving_distance, radec_to_unit, xyz_to_radecz

C_KMS = 299792.458


@dataclass(frozen=True)
class PositionsMockConfig:
    """Cap centre/radius (deg), redshift range, comoving density (Mpc⁻³), mixture fractions, peculiar-velocity σ."""

    center_ra: float = 180.0
    center_dec: float = 30.0
    radius_deg: float = 10.0  # 314 deg²
    zmin: float = 0.01
    zmax: float = 0.4
    density_mpc3: float = 1e-3  # BGS-like: DESI BGS Bright is ~1e-3 Mpc⁻³ at z ≈ 0.25
    fractions: tuple[float, float, float, float] = (0.12, 0.38, 0.25, 0.25)  # knot, filament, sheet, void
    vpec_kms: float = 0.0  # line-of-sight velocity scatter added to the redshift
    shell_mpc: float = 100.0  # draws are made shell by shell so that n(χ) is flat
    seed: int = 1


@dataclass
class PositionsMock:
    """The catalog (one row per galaxy, with truth) and the true filament axes (M, 2, 3) in mock comoving Mpc."""

    catalog: pl.DataFrame
    segments: np.ndarray
    web: CosmicWeb


def make_positions_mock(cfg: PositionsMockConfig = PositionsMockConfig()) -> PositionsMock:
    """Draw the catalog: per comoving shell, Poisson(n̄ V) galaxies from the web mixture inside the cap."""
    rng = np.random.default_rng([cfg.seed, 15])
    web = CosmicWeb.build(rng, cfg.center_ra, cfg.center_dec, cfg.radius_deg, zmax=cfg.zmax + 0.05)
    centre = radec_to_unit(np.array([cfg.center_ra]), np.array([cfg.center_dec]))[0]
    cos_r = np.cos(np.radians(cfg.radius_deg))
    omega = 2 * np.pi * (1 - cos_r)
    dlo, dhi = comoving_distance(np.array([cfg.zmin, cfg.zmax]))
    edges = np.append(np.arange(dlo, dhi, cfg.shell_mpc), dhi)
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        want = rng.poisson(cfg.density_mpc3 * omega / 3 * (b**3 - a**3))
        got, acc = 0, []
        for _ in range(20):
            xyz, _ = web.sample(rng, int(1.6 * (want - got)) + 16, a, b, cfg.fractions)
            d = np.linalg.norm(xyz, axis=1)
            keep = (d >= a) & (d < b) & (xyz @ centre >= cos_r * d)
            acc.append(xyz[keep])
            got += int(keep.sum())
            if got >= want:
                break
        parts.append(np.concatenate(acc)[:want])
    xyz = np.concatenate(parts)
    xyz = xyz[rng.permutation(len(xyz))]
    ra, dec, z_cos = xyz_to_radecz(xyz)
    z = (1 + z_cos) * (1 + rng.normal(0, cfg.vpec_kms, len(z_cos)) / C_KMS) - 1 if cfg.vpec_kms else z_cos
    cls, dfil = web.classify(xyz)
    cat = pl.DataFrame({
        "targetid": np.arange(len(xyz), dtype=np.int64), "ra": ra, "dec": dec, "z": z, "z_cosmo": z_cos,
        "web_class_true": cls.astype(np.int8), "dist_filament_true_mpc": dfil,
        "x_mpc": xyz[:, 0], "y_mpc": xyz[:, 1], "z_mpc": xyz[:, 2]})
    segs = np.stack([web.nodes[web.segments[:, 0]], web.nodes[web.segments[:, 1]]], axis=1)
    return PositionsMock(cat, segs, web)


def segments_frame(segments: np.ndarray) -> pl.DataFrame:
    """Filament axes as a table: endpoints in RA/Dec (deg) and z, and in mock comoving Mpc."""
    out = {}
    for end, name in ((0, "a"), (1, "b")):
        ra, dec, z = xyz_to_radecz(segments[:, end])
        out |= {f"ra_{name}": ra, f"dec_{name}": dec, f"z_{name}": z}
        for i, ax in enumerate("xyz"):
            out[f"{ax}_{name}_mpc"] = segments[:, end, i]
    return pl.DataFrame(out)


def write_positions_mock(path: Path | str, cfg: PositionsMockConfig = PositionsMockConfig()) -> tuple[Path, Path]:
    """Write the catalog (Parquet) and its filament axes (`<stem>_filaments.parquet`); returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mock = make_positions_mock(cfg)
    mock.catalog.write_parquet(path)
    axes = path.with_name(path.stem + "_filaments.parquet")
    segments_frame(mock.segments).write_parquet(axes)
    return path, axes


__all__ = ["PositionsMock", "PositionsMockConfig", "make_positions_mock", "segments_frame", "write_positions_mock"]
