"""Synthetic lakehouse rows written straight through the storage layer (tests, bench/api.py): no FITS, no ingest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from desi_assets.science.wavelength import ARMS
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import KEY_COLUMNS

NSIDE = 64


def pixel_key(healpix: int) -> str:
    """Partition key of a synthetic main-dark coadd of an nside-64 nested pixel."""
    return f"main-dark-{healpix}"


def target_rows(healpix: int, n: int, seed: int = 0, id_offset: int = 0) -> pl.DataFrame:
    """`targets` rows of one synthetic pixel: positions inside the pixel, z, ZWARN, S/N."""
    import healpy as hp

    rng = np.random.default_rng(seed + healpix)
    ra0, dec0 = hp.pix2ang(NSIDE, healpix, nest=True, lonlat=True)
    half = 0.3 * hp.nside2resol(NSIDE, arcmin=True) / 60
    ra = (ra0 + rng.uniform(-half, half, n) / max(np.cos(np.radians(dec0)), 0.05)) % 360
    dec = np.clip(dec0 + rng.uniform(-half, half, n), -90, 90)
    snr = rng.gamma(3.0, 2.0, (3, n)).astype(np.float32)
    return pl.DataFrame({
        "coadd_key": pixel_key(healpix), "survey": "main", "program": "dark", "healpix": healpix,
        "hpxgroup": healpix // 100, "targetid": np.arange(n, dtype=np.int64) + 10**9 * (1 + healpix) + id_offset,
        "target_ra": ra, "target_dec": dec, "z": rng.uniform(0.01, 0.6, n), "zerr": np.full(n, 1e-4),
        "zwarn": (rng.random(n) < 0.05).astype(np.int64) * 4, "spectype": "GALAXY", "deltachi2": rng.gamma(2, 50, n),
        "fiber": rng.integers(0, 5000, n, dtype=np.int32), "median_coadd_snr_b": snr[0],
        "median_coadd_snr_r": snr[1], "median_coadd_snr_z": snr[2], "masked_frac": np.full(n, 0.01, np.float32),
        "quality_flags": np.zeros(n, np.int32), "usable": np.ones(n, bool),
    })


def spectra_rows(targets: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Native-resolution `spectra` rows (noise around a flat continuum) for the given targets."""
    rng = np.random.default_rng(seed)
    n = targets.height
    cols = {c: targets[c] for c in KEY_COLUMNS}
    for arm, npix in ((k, a.npix) for k, a in ARMS.items()):
        cols[f"flux_{arm}"] = list(rng.normal(1.0, 0.2, (n, npix)).astype(np.float32))
        cols[f"ivar_{arm}"] = list(np.full((n, npix), 25.0, np.float32))
        cols[f"mask_{arm}"] = list(np.zeros((n, npix), np.int32))
    return pl.DataFrame(cols)


def layer_rows(targets: pl.DataFrame, layers: Sequence[str], seed: int = 0) -> dict[str, pl.DataFrame]:
    """Plausible rows of the named layer tables (anomaly_scores, spectral_indices, kinematics_and_lines, cosmic_web)."""
    rng = np.random.default_rng(seed + 7)
    n = targets.height
    keys = targets.select(KEY_COLUMNS)
    out = {}
    if "anomaly_scores" in layers:
        out["anomaly_scores"] = keys.with_columns(score=rng.gamma(2, 1, n), r_b=rng.random(n), r_r=rng.random(n),
                                                  r_z=rng.random(n), category=pl.lit("UNUSUAL_GALAXY"),
                                                  is_anomaly=pl.Series(rng.random(n) < 0.02),
                                                  model_version=pl.lit("synthetic-ae-1"))
    if "spectral_indices" in layers:
        d = rng.uniform(1.0, 2.2, n)
        out["spectral_indices"] = keys.with_columns(status=pl.lit("ok"), dn4000=d, dn4000_err=np.full(n, 0.05),
                                                    hdelta_a=8.0 - 5.0 * d + rng.normal(0, 0.5, n),
                                                    hdelta_a_err=np.full(n, 0.5), index_flags=pl.lit("ok"))
    if "kinematics_and_lines" in layers:
        out["kinematics_and_lines"] = keys.with_columns(
            status=pl.lit("ok"), vdisp=rng.uniform(40, 300, n), vdisp_err=np.full(n, 10.0),
            flux_oiii_5007=rng.gamma(1.5, 5, n), ew_oiii_5007=rng.gamma(1.5, 5, n), ew_halpha=rng.gamma(2, 10, n))
    if "cosmic_web" in layers:
        out["cosmic_web"] = keys.with_columns(status=pl.lit("ok"), web_class=pl.Series(rng.integers(0, 4, n),
                                                                                        dtype=pl.Int8),
                                              dist_filament_mpc=rng.gamma(2, 2, n), sigma_5=rng.gamma(2, 1, n),
                                              edge=pl.Series(np.zeros(n, bool)))
    return out


def write_synthetic(lakehouse: LakehouseResource, pixels: Sequence[int], per_pixel: int = 50,
                    layers: Sequence[str] = ("anomaly_scores", "spectral_indices", "kinematics_and_lines",
                                             "cosmic_web"), spectra: bool = True, seed: int = 0) -> list[str]:
    """Write targets (+ spectra, + layer rows) for synthetic pixels, one partition each; returns the keys."""
    keys = []
    for hp_pix in pixels:
        key = pixel_key(int(hp_pix))
        t = target_rows(int(hp_pix), per_pixel, seed)
        lakehouse.write_partitions("targets", t, [key])
        if spectra:
            lakehouse.write_partitions("spectra", spectra_rows(t, seed + int(hp_pix)), [key])
        for table, rows in layer_rows(t, layers, seed + int(hp_pix)).items():
            lakehouse.write_partitions(table, rows, [key])
        keys.append(key)
    return keys
