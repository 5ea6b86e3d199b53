"""Physics-layer speed: pPXF stars + gas (s per galaxy per core, 1 worker and the pool) and spectral indices (spectra/s).

    .venv/bin/python bench/physics.py [--fits 40] [--workers 2] [--pixels 2]

Runs on mock demo galaxies (GALAXY, ZWARN = 0, continuum S/N ≥ the config cut, highest S/N first) through
the same public functions the `physics` assets call. fastspecfit quotes 4-8 s per object per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402


def main() -> None:
    from desi_assets.defs.physics.config import PhysicsConfig
    from desi_assets.science.physics import indices as ix
    from desi_assets.science.physics.catalog import make_batch, row_status, select_fits
    from desi_assets.science.physics.fit import FitPool
    from desi_assets.science.physics.spectra import combine_arms
    from desi_assets.sources.archives import LocalArchive
    from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey
    from desi_assets.sources.reader import read_coadd
    from desi_assets.storage.ingest import spectra_frame, targets_frame

    p = argparse.ArgumentParser()
    p.add_argument("--fits", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pixels", type=int, default=2)
    args = p.parse_args()
    cfg = PhysicsConfig()
    with tempfile.TemporaryDirectory() as tmp:
        write_mock_survey(Path(tmp), MockSurveyConfig(n_pixels=args.pixels, seed=42))
        entries = LocalArchive(root=tmp).list_entries()
        coadds = [read_coadd(*LocalArchive(root=tmp).fetch(e.key)) for e in entries]
    import polars as pl

    spectra = pl.concat([pl.from_arrow(spectra_frame(c)) for c in coadds], how="vertical_relaxed")
    targets = pl.concat([targets_frame(c) for c in coadds], how="vertical_relaxed")
    b = make_batch(spectra, targets)
    n = len(b.z)
    # --- indices: merged arms + all indices, whole batch
    arms = [c.arms for c in coadds]
    t0 = time.perf_counter()
    for a in arms:
        combine_arms({k: v.flux for k, v in a.items()}, {k: v.ivar for k, v in a.items()},
                     {k: v.mask for k, v in a.items()})
    t_merge = time.perf_counter() - t0
    t0 = time.perf_counter()
    elig = row_status(b, cfg.z_range) == ""  # as the asset: GALAXY, ZWARN = 0, z in range; others skipped
    ix.measure_indices(b.wave, b.flux, b.ivar, np.where(elig, b.z, np.nan))
    t_idx = time.perf_counter() - t0
    print(f"indices: {n} spectra ({int(elig.sum())} galaxies measured), {n / t_idx:,.0f} spectra/s (all {len(ix.INDEX_NAMES)} indices with errors); "
          f"with the arm merge {n / (t_idx + t_merge):,.0f} spectra/s")
    # --- pPXF
    st, snr, todo = select_fits(b, cfg.z_range, cfg.snr_min, args.fits)
    print(f"pPXF: {todo.size} galaxies (S/N per Å median {np.median(snr[todo]):.1f}, "
          f"range {snr[todo].min():.1f}-{snr[todo].max():.1f}), templates {cfg.templates}")
    settings = cfg.fit_settings()
    pool = FitPool(settings, b.wave, workers=1)
    t0 = time.perf_counter()
    pool.fit(b.flux[todo[:1]], b.ivar[todo[:1]], b.lsf[todo[:1]], b.z[todo[:1]])  # template load
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    res1 = pool.fit(b.flux[todo], b.ivar[todo], b.lsf[todo], b.z[todo])
    t1 = time.perf_counter() - t0
    ok = sum(r.status == "ok" for r in res1)
    print(f"  1 worker : {t1 / todo.size:.3f} s per galaxy per core ({ok}/{todo.size} ok; template load "
          f"{t_load:.2f} s once)")
    with FitPool(settings, b.wave, workers=args.workers, min_pool_tasks=1) as pp:
        t0 = time.perf_counter()
        pp.fit(b.flux[todo[: args.workers]], b.ivar[todo[: args.workers]], b.lsf[todo[: args.workers]],
               b.z[todo[: args.workers]])  # start-up: spawn, import, templates
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        resp = pp.fit(b.flux[todo], b.ivar[todo], b.lsf[todo], b.z[todo])
        tp = time.perf_counter() - t0
    print(f"  pool {args.workers}: {tp / todo.size:.3f} s per galaxy wall = {tp * args.workers / todo.size:.3f} "
          f"s per galaxy per core (start-up {t_start:.1f} s once per run); speed-up {t1 / tp:.2f}x")
    same = all(np.isclose(a.vdisp, c.vdisp, equal_nan=True) for a, c in zip(res1, resp))
    print(f"  pool results identical to 1 worker: {same}; fastspecfit 4-8 s/galaxy/core -> "
          f"{4 / (t1 / todo.size):.0f}-{8 / (t1 / todo.size):.0f}x faster")


if __name__ == "__main__":
    main()
