"""Cosmic-web layer: validation figures and the scaling benchmark.

    python bench/cosmic_web.py validate  [--out DIR]  # decomposition, truth, real surveys, DESI-like fractions
    python bench/cosmic_web.py decompose --catalog sdss|gama|mock [--nside 8 --partitions 12]
    python bench/cosmic_web.py calibrate [--out DIR]  # mock-truth accuracy and volume fractions vs (R_s, λ_th)
    python bench/cosmic_web.py real      [--out DIR]  # SDSS DR7 and GAMA: volume/galaxy fractions, Σ5, plots
    python bench/cosmic_web.py scaling   [--out DIR]  # wall time and peak RSS vs tracers, global vs partitioned
    python bench/cosmic_web.py scaling --series area --modes partitioned --sizes 1e5,2.5e5,5e5,1e6
        # one partition, the asset's way (its region's rows only, memory-mapped field), as the survey grows

Calls only public functions (science.cosmic_web, sources.mock.positions, plots_cosmic_web).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import healpy as hp
import numpy as np
import polars as pl
from scipy.stats import spearmanr

from desi_assets.plots_cosmic_web import plot_calibration, plot_sigma5_by_class, plot_web_slice
from desi_assets.science.cosmic_web import CosmicWebParams, cosmic_web, cosmic_web_partitioned, survey_field
from desi_assets.science.cosmic_web import filaments as F
from desi_assets.science.cosmic_web import footprint as FP
from desi_assets.science.cosmic_web import tweb as T
from desi_assets.science.cosmic_web.coords import radecz_to_xyz
from desi_assets.sources.mock.positions import PositionsMockConfig, make_positions_mock

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "positions"
#: DESI DR1 T-web volume fractions (DESI-REFERENCE.md §6): the target on the DESI-like mock.
DESI_DR1 = {"void": (0.06, 0.16), "sheet": (0.45, 0.48), "filament": (0.37, 0.40), "knot": (0.04, 0.06)}
NAMES = ("void", "sheet", "filament", "knot")


def say(*a):
    print(*a, flush=True)


def decomposition(name, ra, dec, z, params, nside, max_partitions=None, seed=0):
    """Partitioned vs global with the defaults (no shared hand-set frame or n̄): every column, non-edge galaxies."""
    t0 = time.perf_counter()
    glob = cosmic_web(ra, dec, z, params).columns
    tg = time.perf_counter() - t0
    pix = hp.ang2pix(nside, ra, dec, nest=True, lonlat=True)
    todo = np.unique(pix)
    if max_partitions and todo.size > max_partitions:
        todo = np.sort(np.random.default_rng(seed).choice(todo, max_partitions, replace=False))
    t0 = time.perf_counter()
    part = cosmic_web_partitioned(ra, dec, z, params, nside, only_pixels=todo)
    tp = time.perf_counter() - t0
    done = np.isin(pix, todo)
    inner = done & ~glob["edge"]
    row = {"catalog": name, "partition_nside": nside, "partitions": int(todo.size), "own_galaxies": int(done.sum()),
           "galaxies_compared": int(inner.sum()), "edge_fraction": round(float(glob["edge"][done].mean()), 3),
           **{f"{c}_identical": bool(np.array_equal(part[c][inner], glob[c][inner], equal_nan=True))
              for c in ("d5_mpc", "d10_mpc", "sigma_5")},
           "edge_flags_identical": bool(np.array_equal(part["edge"][done], glob["edge"][done])),
           "web_class_agreement": round(float(np.mean(part["web_class"][inner] == glob["web_class"][inner])), 5)
           if inner.any() else None,
           "web_class_agreement_incl_edge": round(float(np.mean(part["web_class"][done] == glob["web_class"][done])), 5)}
    for c in ("delta", "lambda1", "lambda3", "dist_filament_mpc"):
        d = np.abs(part[c][inner] - glob[c][inner])
        both_nan = np.isnan(part[c][inner]) & np.isnan(glob[c][inner])
        row[f"{c}_max_abs_diff"] = float(f"{np.nanmax(d, initial=0.0):.3g}")
        row[f"{c}_frac_within_1e-6"] = round(float(np.mean((d <= 1e-6) | both_nan)), 5) if inner.any() else None
    row |= {"global_s": round(tg, 1), "partitioned_s": round(tp, 1)}
    say("decomposition", json.dumps(row))
    return row


def confusion(true, pred):
    """4×4 counts: rows truth class, columns T-web class."""
    m = np.zeros((4, 4), int)
    ok = (true >= 0) & (pred >= 0)
    np.add.at(m, (true[ok], pred[ok]), 1)
    return m


def truth_metrics(cat: pl.DataFrame, axes_radecz: np.ndarray, params: CosmicWebParams, out: Path):
    """On the positions mock: confusion matrix, DIST_FILAMENT vs truth per filament method."""
    ra, dec, z = (cat[c].to_numpy() for c in ("ra", "dec", "z"))
    res = {}
    truth_cls = cat["web_class_true"].to_numpy()
    # true axes in the pipeline's cosmology, from their RA/Dec/z endpoints
    a = radecz_to_xyz(axes_radecz[:, 0], axes_radecz[:, 1], axes_radecz[:, 2], params.cosmology)
    b = radecz_to_xyz(axes_radecz[:, 3], axes_radecz[:, 4], axes_radecz[:, 5], params.cosmology)
    xyz = radecz_to_xyz(ra, dec, z, params.cosmology)
    true_d = F.distance_to_segments(xyz, np.stack([a, b], 1))
    for method in ("tweb", "mst"):
        t0 = time.perf_counter()
        r = cosmic_web(ra, dec, z, replace(params, filament_method=method), make_slice=(method == "tweb"))
        c = r.columns
        ok = ~c["edge"] & np.isfinite(c["dist_filament_mpc"])
        err = c["dist_filament_mpc"][ok] - true_d[ok]
        rho = spearmanr(c["dist_filament_mpc"][ok], true_d[ok]).statistic
        res[method] = {"galaxies": int(ok.sum()), "segments": int(len(r.segments)),
                       "median_abs_error_mpc": round(float(np.median(np.abs(err))), 2),
                       "median_error_mpc": round(float(np.median(err)), 2), "spearman_rho": round(float(rho), 3),
                       "median_true_mpc": round(float(np.median(true_d[ok])), 2), "seconds": round(time.perf_counter() - t0, 1)}
        if method == "tweb":
            cm = confusion(truth_cls[ok], c["web_class"][ok])
            res["confusion_truth_rows_tweb_cols"] = cm.tolist()
            res["class_accuracy"] = round(float(np.trace(cm) / max(cm.sum(), 1)), 3)
            res["volume_fractions"] = {k: round(v, 3) for k, v in r.volume_fractions.items()}
            res["galaxy_fractions"] = {NAMES[i]: round(float(np.mean(c["web_class"][ok] == i)), 3) for i in range(4)}
            res["truth_galaxy_fractions"] = {NAMES[i]: round(float(np.mean(truth_cls[ok] == i)), 3) for i in range(4)}
            plot_web_slice(out / "mock_slice.png", r.extra["slice"], f"positions mock: δ, T-web skeleton, class "
                           f"(R_s={params.smoothing_mpc:g} Mpc, λ_th={params.lambda_th:g})")
        say("truth", method, json.dumps(res[method]))
    say("truth confusion (rows truth void/sheet/filament/knot, cols T-web):", res["confusion_truth_rows_tweb_cols"])
    return res


def fraction_grid(ra, dec, z, params: CosmicWebParams, smoothings, thresholds):
    """T-web volume fractions over a grid of (R_s, λ_th), one lattice per R_s (params' field mode and kernels)."""
    if params.tidal_field == "survey":
        rows = []
        for rs in smoothings:
            lam = survey_field(ra, dec, z, replace(params, smoothing_mpc=rs)).cell_eigenvalues(params.window_min)
            for th in thresholds:
                f = T.volume_fractions(T.web_class(lam, th))
                rows.append({"R_s": rs, "tidal_field": "survey", "lambda_th": th,
                             **{k: round(v, 3) for k, v in f.items()}})
        return rows
    chi_lo, chi_hi = params.chi_range()
    fp = FP.occupied_pixels(ra, dec, params.footprint_nside)
    xyz = radecz_to_xyz(ra, dec, z, params.cosmology)
    chi = np.linalg.norm(xyz, axis=1)
    tr = (chi >= chi_lo) & (chi < chi_hi)
    nbar = tr.sum() / FP.footprint_volume(fp, params.footprint_nside, chi_lo, chi_hi)
    rand = FP.volume_randoms(fp, params.footprint_nside, chi_lo, chi_hi, params.random_density_mpc3, params.seed)
    rows = []
    for rs in smoothings:
        reach = T.locality_radius(params.cell_mpc, rs, params.smoothing_truncation_sigma,
                                  params.tidal_radius_mpc or 0.0)
        lat = T.Lattice.around(np.concatenate([xyz[tr], rand]), params.cell_mpc, 0.5 * reach + 2 * params.cell_mpc)
        delta, window = T.density_contrast(lat, xyz[tr], rand, nbar, params.random_density_mpc3, rs,
                                           params.window_min, params.smoothing_truncation_sigma)
        cells = np.flatnonzero(window.ravel() >= params.window_min)
        lam = T.eigenvalues(T.tensor_cells(T.tidal_tensor(lat, delta, params.tidal_radius_mpc), cells))
        for th in thresholds:
            f = T.volume_fractions(T.web_class(lam, th))
            rows.append({"R_s": rs, "tidal_radius": params.tidal_radius_mpc, "lambda_th": th,
                         **{k: round(v, 3) for k, v in f.items()}})
    return rows


def distance_to_desi(row):
    """Sum of distances of each fraction to the DESI DR1 range (0 inside)."""
    return sum(max(lo - row[k], 0, row[k] - hi) for k, (lo, hi) in DESI_DR1.items())


def real_survey(name, ra, dec, z, params, out: Path):
    """Volume and galaxy fractions per class and Σ5 distributions; plots."""
    r = cosmic_web(ra, dec, z, params, make_slice=True)
    c = r.columns
    inner = ~c["edge"] & (c["web_class"] >= 0)
    row = {"catalog": name, "galaxies": int(len(ra)), "non_edge": int(inner.sum()),
           "edge_fraction": round(float(c["edge"].mean()), 3), "tracers": r.n_tracers,
           "mean_density_mpc3": float(f"{r.mean_density_mpc3:.3g}"),
           "volume_fractions": {k: round(v, 3) for k, v in r.volume_fractions.items()},
           "galaxy_fractions_non_edge": {NAMES[i]: round(float(np.mean(c["web_class"][inner] == i)), 3)
                                         for i in range(4)} if inner.any() else None,
           "galaxy_fractions_all_classified": {NAMES[i]: round(float(np.mean(c["web_class"][c["web_class"] >= 0]
                                                                            == i)), 3) for i in range(4)},
           "log10_sigma5_p16_p50_p84": [round(float(x), 2) for x in
                                        np.log10(np.nanpercentile(c["sigma_5"], [16, 50, 84]))],
           "log10_sigma5_median_by_class": {NAMES[i]: round(float(np.log10(np.nanmedian(c["sigma_5"][inner & (
               c["web_class"] == i)]))), 2) if (inner & (c["web_class"] == i)).any() else None for i in range(4)}}
    plot_sigma5_by_class(out / f"{name}_sigma5_by_class.png", c["sigma_5"][inner], c["web_class"][inner],
                         f"{name}: Σ5 by T-web class (non-edge)")
    plot_web_slice(out / f"{name}_slice.png", r.extra["slice"], f"{name}: δ, T-web skeleton, galaxies by class "
                   f"(R_s={params.smoothing_mpc:g} Mpc, λ_th={params.lambda_th:g})")
    say("real", json.dumps(row))
    return row


def read_fits(path, cols):
    from astropy.table import Table

    t = Table.read(path)
    return [np.asarray(t[c], np.float64) for c in cols]


def real_catalogs(base: CosmicWebParams) -> dict:
    """SDSS DR7 and GAMA positions with their tracer redshift ranges: name -> (ra, dec, z, params)."""
    sra, sdec, sz = read_fits(DATA / "sdss_dr7_vollim_vast.fits", ["ra", "dec", "z"])
    gra, gdec, gz = read_fits(DATA / "gama_gold_dryrun.fits", ["RA", "DEC", "ZGAMA"])
    return {"sdss_dr7": (sra, sdec, sz, replace(base, tracer_zmin=0.03, tracer_zmax=0.107)),
            "gama": (gra, gdec, gz, replace(base, tracer_zmin=0.04, tracer_zmax=0.26))}


def calibrate(out: Path, smoothings, thresholds, tidal_radius: float | None, tidal_field: str = "survey") -> list[dict]:
    """On the positions mock: galaxy accuracy against the truth class and volume fractions over (R_s, λ_th).

    tidal_field "survey": the one survey-wide field (whole-lattice T_ij); "local": per-run field with tidal_radius.
    """
    out.mkdir(parents=True, exist_ok=True)
    cat = make_positions_mock(PositionsMockConfig()).catalog
    ra, dec, z = (cat[c].to_numpy() for c in ("ra", "dec", "z"))
    truth = cat["web_class_true"].to_numpy()
    rows = []
    for rs in smoothings:
        d = CosmicWebParams()
        local = tidal_field == "local" and tidal_radius
        reach = T.locality_radius(d.cell_mpc, rs, d.smoothing_truncation_sigma, tidal_radius) if local else 0
        p = CosmicWebParams(smoothing_mpc=rs, tidal_field=tidal_field, tidal_radius_mpc=tidal_radius,
                            filament_method="none", buffer_mpc=max(d.buffer_mpc, reach))
        r = cosmic_web(ra, dec, z, replace(p, lambda_th=-1e9), want_cell_eigenvalues=True)
        c = r.columns
        ok = ~c["edge"] & np.isfinite(c["lambda1"])
        lam = np.stack([c[f"lambda{i}"][ok] for i in (1, 2, 3)], 1)
        for th in thresholds:
            pred = T.web_class(lam, th)
            cm = confusion(truth[ok], pred)
            f = T.volume_fractions(T.web_class(r.extra["cell_eigenvalues"], th))
            row = {"R_s": rs, "tidal_field": tidal_field, "tidal_radius": tidal_radius if local else None,
                   "lambda_th": th,
                   "accuracy": round(float(np.trace(cm) / cm.sum()), 4),
                   "balanced_accuracy": round(float(np.mean(np.diag(cm) / np.maximum(cm.sum(1), 1))), 4),
                   **{f"vol_{k}": round(v, 3) for k, v in f.items()},
                   **{f"gal_{NAMES[i]}": round(float(np.mean(pred == i)), 3) for i in range(4)},
                   "distance_to_desi_dr1": round(distance_to_desi(f), 3), "confusion": cm.tolist()}
            rows.append(row)
            say("calibrate", json.dumps({k: v for k, v in row.items() if k != "confusion"}))
    say("truth galaxy fractions", {NAMES[i]: round(float(np.mean(truth[ok] == i)), 3) for i in range(4)})
    tag = f"rt{tidal_radius}" if tidal_field == "local" else "survey"
    (out / f"calibration_{tag}.json").write_text(json.dumps(rows, indent=1))
    return rows


def validate(out: Path, quick: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    mcfg = PositionsMockConfig()
    mock = make_positions_mock(mcfg)
    cat = mock.catalog
    from desi_assets.sources.mock.positions import segments_frame

    sf = segments_frame(mock.segments)
    axes = sf.select("ra_a", "dec_a", "z_a", "ra_b", "dec_b", "z_b").to_numpy()
    ra, dec, z = (cat[c].to_numpy() for c in ("ra", "dec", "z"))
    base = CosmicWebParams(tracer_zmin=0.05, tracer_zmax=0.4)
    say(f"positions mock: {cat.height} galaxies, {len(mock.segments)} true filament axes; params {base.as_dict()}")
    grid = fraction_grid(ra, dec, z, base, (4.0, 5.0, 6.0), (0.0, 0.02, 0.05, 0.1, 0.2))
    for g in grid:
        say("fractions", json.dumps(g))
    best = min(grid, key=distance_to_desi)
    results["fraction_grid"], results["desi_like_choice"] = grid, best
    say("closest to DESI DR1", best)
    results["truth"] = truth_metrics(cat, axes, base, out)
    results["decomposition_mock"] = decomposition("positions_mock", ra, dec, z, base, nside=8,
                                                  max_partitions=4 if quick else None)
    if DATA.exists():
        for name, (cra, cdec, cz, p) in real_catalogs(base).items():
            results[f"decomposition_{name}"] = decomposition(name, cra, cdec, cz, p, nside=8,
                                                             max_partitions=12 if quick else None)
            results[name] = real_survey(name, cra, cdec, cz, p, out)
    (out / "validation.json").write_text(json.dumps(results, indent=1))
    say(f"wrote {out / 'validation.json'}")
    return results


# ---------------------------------------------------------------- scaling
def peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec (VmHWM; ru_maxrss would carry the parent's), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RssSampler:
    """Peaks of RssAnon and RssFile (MB) of this process, sampled every `dt` s by a thread (VmHWM: the sum only)."""

    def __init__(self, dt: float = 0.01):
        import threading

        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._dt = dt
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _read(self):
        for ln in Path("/proc/self/status").read_text().splitlines():
            k, _, v = ln.partition(":")
            if k in self.peak:
                self.peak[k] = max(self.peak[k], int(v.split()[0]) / 1024)

    def _run(self):
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self._dt)

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        self._read()
        return {"peak_anon_mb": round(self.peak["RssAnon"], 1), "peak_file_mb": round(self.peak["RssFile"], 1)}


#: Partition keys of the bench's targets, as in the lakehouse: survey-program-pixel (nside 64).
_KEY_PREFIX = "main-bright-"


def _key(pix) -> pl.Expr:
    """Partition key column from a pixel column."""
    return pl.concat_str(pl.lit(_KEY_PREFIX), pix.cast(pl.Utf8))


def write_targets(cat: pl.DataFrame, out: Path) -> int:
    """The mock as a `targets`-like parquet dataset (TARGET_COLUMNS, hive hpxgroup=pixel // 100, sorted by pixel)."""
    import shutil

    from desi_assets.cosmic_web_catalog import TARGET_COLUMNS

    pix = hp.ang2pix(64, cat["ra"].to_numpy(), cat["dec"].to_numpy(), nest=True, lonlat=True)
    t = pl.DataFrame({"healpix": pix, "targetid": np.arange(cat.height, dtype=np.int64),
                      "target_ra": cat["ra"], "target_dec": cat["dec"], "z": cat["z"]}).with_columns(
        coadd_key=_key(pl.col("healpix")), survey=pl.lit("main"), program=pl.lit("bright"),
        hpxgroup=(pl.col("healpix") // 100).cast(pl.Int32), zwarn=pl.lit(0, pl.Int64),
        spectype=pl.lit("GALAXY")).select(TARGET_COLUMNS).sort("healpix", "targetid")
    if out.exists():
        shutil.rmtree(out)
    for (g,), part in t.partition_by("hpxgroup", as_dict=True).items():
        d = out / f"hpxgroup={g}"
        d.mkdir(parents=True)
        part.drop("hpxgroup").write_parquet(d / "part-0.parquet", row_group_size=16384, statistics=True)
    return t["healpix"].n_unique()


def _scan_targets(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(str(path / "**" / "*.parquet"), hive_partitioning=True)


def _one(args) -> None:
    """Child process: one timed run, prints JSON with wall seconds and peak RSS (MB).

    partitioned: what the `cosmic_web` asset does for one partition (defs/cosmic_web/assets.py) with parquet in
    place of Delta: read the partition's targets, then only its region (`region_filter`: pixel + buffer) as the
    asset does, and `environment_rows` sampling the memory-mapped field (`--field`, written by mode field).
    """
    p = CosmicWebParams(tracer_zmin=0.05, tracer_zmax=0.4, mean_density_mpc3=args.nbar or None)
    base_rss = peak_rss_mb()
    sampler = _RssSampler()
    t0 = time.perf_counter()
    extra = {}
    if args.mode == "global":
        cat = pl.read_parquet(args.catalog)
        cosmic_web(*(cat[c].to_numpy() for c in ("ra", "dec", "z")), p)
        extra = {"galaxies": cat.height}
        n_part = 1
    elif args.mode == "field":  # the upstream tidal_field asset: every target, built once, saved (memory-mapped)
        from desi_assets.cosmic_web_catalog import TARGET_COLUMNS, targets_survey_field

        targets = _scan_targets(Path(args.targets)).select(TARGET_COLUMNS).collect()
        f = targets_survey_field(targets, replace(p, mean_density_mpc3=None))
        f.save(args.field)
        extra = {"galaxies": targets.height, "lattice_shape": list(f.lattice.shape),
                 "lattice_cells": int(np.prod(f.lattice.shape)), "stored_cells": int(f.cells.size),
                 "stored_mb": round(f.nbytes / 2**20, 1), "mean_density_mpc3": f.mean_density_mpc3}
        n_part = 1
    else:  # one or more partitions, one after another, the asset's way (never the whole catalog)
        from desi_assets.cosmic_web_catalog import TARGET_COLUMNS, environment_rows, region_filter
        from desi_assets.science.cosmic_web import SurveyField

        field = SurveyField.load(args.field)  # memory-mapped: the pages of the region's cells only
        p = replace(p, mean_density_mpc3=p.mean_density_mpc3 or field.mean_density_mpc3 or None)
        centre = hp.ang2pix(64, args.center_ra, args.center_dec, nest=True, lonlat=True)
        pick = [int(centre)] + [int(x) for x in hp.get_all_neighbours(64, int(centre), nest=True) if x >= 0]
        scan = _scan_targets(Path(args.targets)).select(TARGET_COLUMNS)
        parts = []
        for pix in pick[:args.partitions]:
            tp = time.perf_counter()
            keys = [f"{_KEY_PREFIX}{pix}"]
            own = scan.filter(pl.col("coadd_key").is_in(keys)).collect()
            in_region, near = region_filter(own, keys, p)
            region = scan.filter(in_region).collect()
            rows, res = environment_rows(own, region, p, make_slice=args.make_slice, field=field)
            assert rows.height == own.height
            parts.append({"pixel": pix, "own_rows": own.height, "region_rows": region.height,
                          "region_pixels": len(near), "web_class_set": float(np.mean(rows["web_class"].is_not_null()
                                                                                   .to_numpy())),
                          "seconds": round(time.perf_counter() - tp, 2)})
        n_part = len(parts)
        extra = {"partitions": parts, "region_rows": parts[0]["region_rows"], "own_rows": parts[0]["own_rows"],
                 "region_pixels": parts[0]["region_pixels"], "make_slice": args.make_slice}
    wall = time.perf_counter() - t0
    extra |= sampler.stop()
    status = dict(ln.split(":", 1) for ln in Path("/proc/self/status").read_text().splitlines() if ":" in ln)
    extra |= {f"{k}_end_mb": round(int(status[k].split()[0]) / 1024, 1) for k in ("RssAnon", "RssFile") if k in status}
    print(json.dumps({**extra, "wall_s": wall, "per_partition_s": wall / n_part, "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": base_rss}))


def _child(mode: str, catalog: Path | None = None, targets: Path | None = None, field: Path | None = None,
           partitions: int = 1, make_slice: bool = True, center=(180.0, 30.0)) -> dict:
    cmd = [sys.executable, __file__, "one", "--mode", mode, "--partitions", str(partitions),
           "--center-ra", str(center[0]), "--center-dec", str(center[1])]
    cmd += (["--catalog", str(catalog)] if catalog else []) + (["--targets", str(targets)] if targets else [])
    cmd += (["--field", str(field)] if field else []) + ([] if make_slice else ["--no-slice"])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{mode} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cap_radius_deg(n: float, n_ref: float = 1.3e5, r_ref: float = 10.0) -> float:
    """Cap radius (deg) holding n galaxies at the density where a cap of r_ref holds n_ref."""
    return float(np.degrees(np.arccos(1 - n / n_ref * (1 - np.cos(np.radians(r_ref))))))


def scaling(out: Path, sizes: list[float], series: tuple[str, ...] = ("density", "area"),
            modes: tuple[str, ...] = ("global", "partitioned"), make_slice: bool = True,
            keep: bool = False, nested: bool = False) -> list[dict]:
    """Per size: the mock, its targets dataset, [global run], survey field build, one partition (the asset's way).

    Series "area": the survey grows by area at the BGS-like density (one partition's region, its pixel plus the
    buffer, stays the same once the survey is larger than it); "density": more tracers on a fixed 314 deg² cap.
    Each run is its own process (peak RSS of that run alone); big scratch is removed unless `keep`.
    `nested`: the area series' smaller surveys are caps cut from the largest one's mock, so that every size
    holds the same partition with the same region (the same galaxies) once the survey is larger than it.
    """
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [("density", n, PositionsMockConfig(density_mpc3=1e-3 * n / 1.3e5)) for n in sizes]
    runs += [("area", n, PositionsMockConfig(radius_deg=_cap_radius_deg(n))) for n in sizes]
    runs = [r for r in runs if r[0] in series]
    parent = None
    if nested and any(r[0] == "area" for r in runs):
        n_max, cfg_max = max((r[1], r[2]) for r in runs if r[0] == "area")
        parent = out / f"mock_area_{int(n_max)}.parquet"
        if not parent.exists():
            subprocess.run([sys.executable, __file__, "mock", "--catalog", str(parent), "--density",
                            str(cfg_max.density_mpc3), "--radius", str(cfg_max.radius_deg)], check=True)
    for name, n, cfg in runs:
        path, tdir, fdir = (out / f"{s}_{name}_{int(n)}" for s in ("mock", "targets", "field"))
        path = path.with_suffix(".parquet")
        t0 = time.perf_counter()
        if not (path.exists() and tdir.exists()):  # written by a child so that this process stays small
            cut = ["--from", str(parent)] if parent is not None and name == "area" else []
            subprocess.run([sys.executable, __file__, "mock", "--catalog", str(path), "--targets", str(tdir),
                            "--density", str(cfg.density_mpc3), "--radius", str(cfg.radius_deg)] + cut, check=True)
        mock_s = time.perf_counter() - t0
        nan = {"wall_s": float("nan"), "peak_rss_mb": float("nan")}
        g = _child("global", catalog=path) if "global" in modes else nan
        build = "partitioned" in modes or "field" in modes or ("partition" in modes and not fdir.exists())
        fl = _child("field", targets=tdir, field=fdir) if build else nan
        if not build and fdir.exists():  # "partition" alone: the kept field, its shape from its meta.json
            meta = json.loads((fdir / "meta.json").read_text())
            fl |= {"galaxies": _scan_targets(tdir).select(pl.len()).collect().item(), "lattice_shape": meta["shape"]}
        p = _child("partitioned", targets=tdir, field=fdir, make_slice=make_slice,
                   center=(cfg.center_ra, cfg.center_dec)) if {"partitioned", "partition"} & set(modes) else nan
        r1 = lambda x: None if x is None or not np.isfinite(x) else round(float(x), 1)  # noqa: E731
        area = 2 * np.pi * (1 - np.cos(np.radians(cfg.radius_deg))) * (180 / np.pi) ** 2
        row = {"series": name, "target_tracers": n, "galaxies": fl.get("galaxies", g.get("galaxies")),
               "area_deg2": round(area), "density_mpc3": cfg.density_mpc3, "mock_s": round(mock_s, 1),
               "global_wall_s": r1(g["wall_s"]), "global_peak_rss_mb": r1(g["peak_rss_mb"]),
               "field_wall_s": r1(fl["wall_s"]), "field_peak_rss_mb": r1(fl["peak_rss_mb"]),
               "field_lattice": fl.get("lattice_shape"), "field_stored_mb": fl.get("stored_mb"),
               "partition_region_rows": p.get("region_rows"), "partition_region_pixels": p.get("region_pixels"),
               "partition_own_rows": p.get("own_rows"), "partition_wall_s": r1(p["wall_s"]),
               "partition_peak_rss_mb": r1(p["peak_rss_mb"]), "partition_peak_anon_mb": p.get("peak_anon_mb"),
               "partition_peak_file_mb": p.get("peak_file_mb"),
               "partition_rss_before_mb": r1(p.get("rss_before_mb")),
               "partition_make_slice": p.get("make_slice")}
        rows.append(row)
        say("scaling", json.dumps(row))
        (out / f"scaling{'' if make_slice else '_noslice'}.json").write_text(json.dumps(rows, indent=1))
        if not keep:
            for d in (path, tdir, fdir):
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
    dens = [r for r in rows if r["series"] == "density"]
    if len(dens) >= 2:
        n = np.log([r["galaxies"] for r in dens])
        for key in ("global_wall_s", "global_peak_rss_mb"):
            if any(r[key] is None for r in dens):
                continue
            slope, icpt = np.polyfit(n, np.log([max(r[key], 1e-3) for r in dens]), 1)
            say(f"extrapolation {key} at 1e7 galaxies (power law slope {slope:.2f}): "
                f"{np.exp(icpt + slope * np.log(1e7)):.0f}")
    area = [r for r in rows if r["series"] == "area" and r["field_lattice"]]
    if area:
        # the survey field's memory goes with its lattice, not its galaxies: bytes per lattice cell
        cells = np.array([np.prod(r["field_lattice"]) for r in area], float)
        per_cell = max((r["field_peak_rss_mb"] * 2**20 / c for r, c in zip(area, cells) if r["field_peak_rss_mb"]),
                       default=float("nan"))  # nan when the fields were kept from an earlier run
        d = CosmicWebParams()
        chi = float(d.chi_range()[1]) + d.lattice_pad()
        # DESI BGS to z = 0.4 over NGC + SGC (every RA, Dec > −20°): the bounding box of that dome
        shape = [int(np.ceil(2 * chi / d.cell_mpc))] * 2 + [int(np.ceil(chi * (1 + np.sin(np.radians(20))) / d.cell_mpc))]
        n_cells = float(np.prod(shape))
        if np.isfinite(per_cell):
            say(f"extrapolation survey field at DESI DR1 BGS (z < 0.4, Dec > -20 deg): lattice {shape} = "
                f"{n_cells:.3g} cells of {d.cell_mpc} Mpc; at the measured max {per_cell:.1f} B/cell peak -> "
                f"{per_cell * n_cells / 2**30:.1f} GiB (budget: the seed's 144 GB machine)")
        # one partition: its region (pixel + buffer) is the same at DR1 as in any survey larger than it
        big = [r for r in area if r["partition_region_pixels"] and r["area_deg2"] > _region_area_deg2(r)]
        if big:
            pk = [r["partition_peak_rss_mb"] for r in big]
            say(f"one partition (region < survey, {len(big)} sizes {[r['galaxies'] for r in big]} galaxies, region "
                f"{[r['partition_region_rows'] for r in big]} rows): peak RSS {pk} MB (spread {max(pk) - min(pk):.1f} "
                f"MB); at DESI DR1 (~1e7 galaxies) a region at this density per deg² is the same: ~{max(pk):.0f} MB "
                f"a partition (budget: the seed's 16 GB machine)")
    return rows


def _region_area_deg2(row: dict) -> float:
    """Area (deg²) of a partition's region: its nside-64 pixels."""
    return row["partition_region_pixels"] * hp.nside2pixarea(64, degrees=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["validate", "truth", "fractions", "decompose", "calibrate", "calibration-plot",
                                    "real", "scaling", "one", "mock"])
    p.add_argument("--smoothings", default="3,4,6,8")
    p.add_argument("--thresholds", default="0,0.1,0.2,0.3,0.4,0.5,0.7,1.0")
    p.add_argument("--tidal-radius", type=float, default=CosmicWebParams().tidal_radius_mpc,
                   help="tidal radius (Mpc); 0: the whole lattice")
    p.add_argument("--tidal-field", default=CosmicWebParams().tidal_field, choices=["survey", "local"],
                   help="survey: the one survey-wide field; local: per-run field (with --tidal-radius)")
    p.add_argument("--series", default="density,area")
    p.add_argument("--modes", default="global,partitioned",
                   help="global, field (build), partition (one partition, reusing a kept --keep field), "
                        "partitioned (field + partition)")
    p.add_argument("--density", type=float, default=1e-3)
    p.add_argument("--radius", type=float, default=10.0)
    p.add_argument("--out", default="bench/out/cosmic_web")
    p.add_argument("--quick", action="store_true", help="SDSS decomposition on 12 partitions only")
    p.add_argument("--sizes", default="1e4,1e5,1e6")
    p.add_argument("--catalog")
    p.add_argument("--mode", default="global")
    p.add_argument("--nside", type=int, default=32)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--nbar", type=float, default=0.0)
    p.add_argument("--field", default=None, help="survey field directory (one: written by --mode field)")
    p.add_argument("--targets", default=None, help="targets-like parquet dataset (mock: written; one: read)")
    p.add_argument("--center-ra", type=float, default=180.0, help="one: the partition is the pixel here")
    p.add_argument("--center-dec", type=float, default=30.0)
    p.add_argument("--no-slice", dest="make_slice", action="store_false",
                   help="partition without the PNG slice (the asset's make_plot: false)")
    p.add_argument("--keep", action="store_true", help="scaling: keep the mocks, targets and fields")
    p.add_argument("--nested", action="store_true", help="scaling, area: smaller surveys are caps of the largest")
    p.add_argument("--from", dest="from_catalog", default=None, help="mock: cut the cap from this catalog")
    a = p.parse_args(argv)
    if a.what == "one":
        _one(a)
    elif a.what == "mock":
        if a.from_catalog:  # a cap of --radius about the mock's centre cut from a bigger mock
            cat = pl.read_parquet(a.from_catalog)
            c = PositionsMockConfig()
            cos_d = (np.sin(np.radians(cat["dec"].to_numpy())) * np.sin(np.radians(c.center_dec))
                     + np.cos(np.radians(cat["dec"].to_numpy())) * np.cos(np.radians(c.center_dec))
                     * np.cos(np.radians(cat["ra"].to_numpy() - c.center_ra)))
            cat = cat.filter(pl.Series(cos_d >= np.cos(np.radians(a.radius))))
        else:
            cat = make_positions_mock(PositionsMockConfig(density_mpc3=a.density, radius_deg=a.radius)).catalog
        cat = cat.select("ra", "dec", "z")
        if Path(a.catalog) != Path(a.from_catalog or ""):
            cat.write_parquet(a.catalog)
        if a.targets:
            write_targets(cat, Path(a.targets))
    elif a.what == "validate":
        validate(Path(a.out), a.quick)
    elif a.what == "decompose":
        base = CosmicWebParams(tracer_zmin=0.05, tracer_zmax=0.4)
        if a.catalog == "mock":
            cat = make_positions_mock(PositionsMockConfig()).catalog
            cats = {"positions_mock": (*(cat[c].to_numpy() for c in ("ra", "dec", "z")), base)}
        else:
            cats = {k: v for k, v in real_catalogs(base).items() if k.startswith(a.catalog)}
        for name, (cra, cdec, cz, cp) in cats.items():
            decomposition(name, cra, cdec, cz, cp, a.nside, a.partitions or None)
    elif a.what == "truth":  # confusion matrix and DIST_FILAMENT per method at the defaults, on the positions mock
        from desi_assets.sources.mock.positions import segments_frame

        mock = make_positions_mock(PositionsMockConfig())
        axes = segments_frame(mock.segments).select("ra_a", "dec_a", "z_a", "ra_b", "dec_b", "z_b").to_numpy()
        Path(a.out).mkdir(parents=True, exist_ok=True)
        res = truth_metrics(mock.catalog, axes, CosmicWebParams(tracer_zmin=0.05, tracer_zmax=0.4), Path(a.out))
        (Path(a.out) / "truth.json").write_text(json.dumps(res, indent=1))
    elif a.what == "fractions":  # volume fractions of the real catalogs over (R_s, λ_th), compact and whole-lattice
        for name, (cra, cdec, cz, cp) in real_catalogs(CosmicWebParams()).items():
            for mode, rt in (("survey", None), ("local", cp.tidal_radius_mpc), ("local", None)):
                for g in fraction_grid(cra, cdec, cz, replace(cp, tidal_field=mode, tidal_radius_mpc=rt,
                                                              buffer_mpc=60.0),
                                       [float(x) for x in a.smoothings.split(",")],
                                       [float(x) for x in a.thresholds.split(",")]):
                    say("fractions", name, json.dumps(g), "distance_to_desi_dr1", round(distance_to_desi(g), 3))
    elif a.what == "calibration-plot":  # every calibration_*.json under --out in one figure
        rows = [r for f in sorted(Path(a.out).glob("calibration_*.json")) for r in json.loads(f.read_text())]
        say(plot_calibration(Path(a.out) / "calibration.png", rows, DESI_DR1, "positions mock: accuracy and "
                             "volume fractions vs λ_th; bands: DESI DR1 T-web volume fractions (arXiv:2604.02463)"))
    elif a.what == "real":  # volume and galaxy fractions, Σ5, plots on SDSS DR7 and GAMA at the defaults
        Path(a.out).mkdir(parents=True, exist_ok=True)
        rows = {name: real_survey(name, cra, cdec, cz, cp, Path(a.out))
                for name, (cra, cdec, cz, cp) in real_catalogs(CosmicWebParams()).items()}
        (Path(a.out) / "real.json").write_text(json.dumps(rows, indent=1))
    elif a.what == "calibrate":
        calibrate(Path(a.out), [float(x) for x in a.smoothings.split(",")],
                  [float(x) for x in a.thresholds.split(",")], a.tidal_radius or None, a.tidal_field)
    else:
        scaling(Path(a.out), [float(x) for x in a.sizes.split(",")], tuple(a.series.split(",")),
                tuple(a.modes.split(",")), a.make_slice, a.keep, a.nested)
    return 0


if __name__ == "__main__":
    sys.exit(main())
