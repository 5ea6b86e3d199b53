"""`desi-ard cosmic-web`: the cosmic-web columns for any redshift catalog (FITS or Parquet), in input order."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from desi_assets.science.cosmic_web import (CosmicWebParams, SurveyField, cosmic_web, cosmic_web_partitioned,
                                            survey_field, survey_mean_density)
from desi_assets.storage.tables import KEY_COLUMNS

#: Output columns after the input's id/RA/Dec/z (same names and units as the `cosmic_web` table).
OUTPUT_COLUMNS = ("comoving_distance_mpc", "d5_mpc", "d10_mpc", "sigma_5", "sigma_10", "delta", "lambda1", "lambda2",
                  "lambda3", "web_class", "dist_filament_mpc", "edge", "is_tracer", "status")


def web_class_series(classes: np.ndarray) -> pl.Series:
    """WEB_CLASS as a nullable Int8 column (−1, no class, becomes null)."""
    c = np.asarray(classes, np.float64)
    return pl.Series("web_class", np.where(c >= 0, c, np.nan), nan_to_null=True).cast(pl.Int8)


def read_catalog(path: Path | str, columns: list[str]) -> pl.DataFrame:
    """The named columns of a FITS (first table HDU) or Parquet catalog, with a clear error for missing ones."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pl.read_parquet(path)
    elif path.suffix.lower() in (".fits", ".fit", ".fz") or path.name.lower().endswith(".fits.gz"):
        from astropy.table import Table

        t = Table.read(path)
        have = {c.lower(): c for c in t.colnames}
        miss = [c for c in columns if c.lower() not in have]
        if miss:
            raise KeyError(f"{path}: no column(s) {miss}; columns are {t.colnames}")
        cols = {c: np.asarray(t[have[c.lower()]]) for c in columns}
        return pl.DataFrame({c: v.astype(v.dtype.newbyteorder("=")) for c, v in cols.items()})
    else:
        raise ValueError(f"{path}: catalog must be FITS or Parquet (.fits, .parquet)")
    have = {c.lower(): c for c in df.columns}
    miss = [c for c in columns if c.lower() not in have]
    if miss:
        raise KeyError(f"{path}: no column(s) {miss}; columns are {df.columns}")
    return df.select([pl.col(have[c.lower()]).alias(c) for c in columns])


def catalog_environment(df: pl.DataFrame, params: CosmicWebParams, ra_col: str = "ra", dec_col: str = "dec",
                        z_col: str = "z", id_col: str | None = None, mag_col: str | None = None,
                        partition_nside: int | None = None) -> pl.DataFrame:
    """The input's id/RA/Dec/z columns plus the cosmic-web columns, one row per input row in input order.

    `partition_nside`: computed one NESTED HEALPix pixel at a time with its buffer (bounded memory; equal to
    the whole-catalog run for non-edge galaxies), else in one run.
    """
    f = lambda c: df[c].cast(pl.Float64).fill_null(np.nan).to_numpy()  # noqa: E731
    ids, mag = df[id_col].to_numpy() if id_col else None, f(mag_col) if mag_col else None
    if partition_nside:
        c = cosmic_web_partitioned(f(ra_col), f(dec_col), f(z_col), params, partition_nside, ids=ids, mag=mag)
    else:
        c = cosmic_web(f(ra_col), f(dec_col), f(z_col), params, ids=ids, mag=mag).columns
    out = df.select([x for x in (id_col, ra_col, dec_col, z_col) if x])
    extra = {k: pl.Series(k, c[k], nan_to_null=True) for k in OUTPUT_COLUMNS if k not in ("web_class", "status")}
    extra["web_class"] = web_class_series(c["web_class"])
    extra["status"] = pl.Series("status", c["status"].astype(str))
    return out.with_columns(**extra)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `cosmic-web` subcommand's options (defaults from CosmicWebParams)."""
    d = CosmicWebParams()
    p.add_argument("--catalog", required=True, help="FITS or Parquet file of galaxy positions")
    p.add_argument("--out", required=True, help="output Parquet, one row per input galaxy in input order")
    p.add_argument("--ra-col", default="ra")
    p.add_argument("--dec-col", default="dec")
    p.add_argument("--z-col", default="z")
    p.add_argument("--id-col", default=None, help="column identifying duplicates (optional)")
    p.add_argument("--mag-col", default=None, help="apparent magnitude for the --abs-mag-max tracer cut")
    p.add_argument("--partition-nside", type=int, default=None,
                   help="run one NESTED HEALPix pixel (at this nside) at a time with its buffer, as the asset does")
    for fld in fields(CosmicWebParams):
        if fld.name in ("frame_ra_deg", "frame_dec_deg"):
            continue
        default = getattr(d, fld.name)
        typ = type(default) if default is not None else float
        p.add_argument("--" + fld.name.replace("_", "-"), type=typ, default=default, help=f"default {default}")


def run(args: argparse.Namespace, say=print) -> int:
    """Read, compute, write; prints a short summary."""
    params = replace(CosmicWebParams(), **{f.name: getattr(args, f.name) for f in fields(CosmicWebParams)
                                            if hasattr(args, f.name)})
    cols = [c for c in (args.id_col, args.ra_col, args.dec_col, args.z_col, args.mag_col) if c]
    t0 = time.perf_counter()
    df = read_catalog(args.catalog, cols)
    out = catalog_environment(df, params, args.ra_col, args.dec_col, args.z_col, args.id_col, args.mag_col,
                              getattr(args, "partition_nside", None))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.write_parquet(args.out)
    frac = out.filter(pl.col("web_class").is_not_null())["web_class"].value_counts(normalize=True).sort("web_class")
    say(f"{out.height} galaxies -> {args.out} in {time.perf_counter() - t0:.1f} s; "
        f"edge fraction {out['edge'].mean():.3f}; galaxy fraction per web class "
        f"{dict(zip(frac['web_class'].to_list(), [round(x, 3) for x in frac['proportion']]))}")
    return 0


# ---------------------------------------------------------------- per-partition (the asset's logic)
#: `targets` columns the layer reads.
TARGET_COLUMNS = [*KEY_COLUMNS, "target_ra", "target_dec", "z", "zwarn", "spectype"]
STATUS_NOT_GALAXY = "not_galaxy"


def _pixels_of(frame: pl.DataFrame) -> np.ndarray:
    """nside-64 pixel of each row: the `healpix` column, else computed from RA/Dec (tile coadds)."""
    import healpy as hp

    ra, dec = frame["target_ra"].fill_null(0.0).to_numpy(), frame["target_dec"].fill_null(0.0).to_numpy()
    calc = hp.ang2pix(64, ra, dec, nest=True, lonlat=True)
    hpx = frame["healpix"].to_numpy(allow_copy=True) if frame.height else np.zeros(0)
    return np.where(frame["healpix"].is_null().to_numpy(), calc, np.nan_to_num(hpx)).astype(np.int64)


def region_of(own_pixels: np.ndarray, params: CosmicWebParams) -> np.ndarray:
    """nside-64 pixels a partition reads: its own plus every pixel within the buffer angle (params.buffer_deg())."""
    from desi_assets.science.cosmic_web.footprint import region_pixels

    return region_pixels(own_pixels, 64, params.buffer_deg())


def region_filter(own: pl.DataFrame, keys: list[str], params: CosmicWebParams) -> tuple[pl.Expr, list[int]]:
    """Filter on `targets` for a partition's region (its coadds + every nside-64 pixel within the buffer), and
    those pixels: what the `cosmic_web` asset reads besides its own rows."""
    near = region_of(own["healpix"].drop_nulls().unique().to_numpy(), params).tolist()
    return pl.col("healpix").is_in(near) | pl.col("coadd_key").is_in(list(keys)), near


def _galaxies(frame: pl.DataFrame, spectypes: tuple[str, ...], require_zwarn_zero: bool) -> pl.DataFrame:
    """Rows used as galaxies: spectype in `spectypes` (and ZWARN == 0)."""
    keep = frame["spectype"].is_in(list(spectypes))
    if require_zwarn_zero:
        keep &= frame["zwarn"].fill_null(1) == 0
    return frame.filter(keep)


def with_survey_density(targets: pl.DataFrame, params: CosmicWebParams, spectypes: tuple[str, ...] = ("GALAXY",),
                        require_zwarn_zero: bool = True) -> CosmicWebParams:
    """`params` with the survey-wide tracer n̄ (Mpc⁻³) of every `targets` row when mean_density_mpc3 is unset.

    Every partition must normalise δ by the same n̄ as the global run; its own pixel + buffer would not.
    """
    if params.mean_density_mpc3 is not None or targets.height == 0:
        return params
    gal = _galaxies(targets.unique(subset=["coadd_key", "targetid"], keep="first"), spectypes, require_zwarn_zero)
    f = lambda c: gal[c].cast(pl.Float64).fill_null(np.nan).to_numpy()  # noqa: E731
    nbar = survey_mean_density(f("target_ra"), f("target_dec"), f("z"), params, ids=gal["targetid"].to_numpy(),
                               footprint=np.unique(_pixels_of(targets)))
    return replace(params, mean_density_mpc3=nbar or None)


def targets_survey_field(targets: pl.DataFrame, params: CosmicWebParams, spectypes: tuple[str, ...] = ("GALAXY",),
                         require_zwarn_zero: bool = True) -> SurveyField:
    """The survey-wide tidal field of every `targets` row (the `tidal_field` asset): its galaxies, footprint, n̄."""
    params = with_survey_density(targets, params, spectypes, require_zwarn_zero)
    gal = _galaxies(targets.unique(subset=["coadd_key", "targetid"], keep="first"), spectypes, require_zwarn_zero)
    f = lambda c: gal[c].cast(pl.Float64).fill_null(np.nan).to_numpy()  # noqa: E731
    fp = np.unique(_pixels_of(targets)) if targets.height else np.zeros(0, np.int64)
    return survey_field(f("target_ra"), f("target_dec"), f("z"), params, ids=gal["targetid"].to_numpy(),
                        footprint=fp)


def environment_rows(own: pl.DataFrame, region: pl.DataFrame, params: CosmicWebParams,
                     spectypes: tuple[str, ...] = ("GALAXY",), require_zwarn_zero: bool = True,
                     make_slice: bool = False, field: SurveyField | None = None):
    """`cosmic_web` rows for every row of `own` from the galaxies of `region` (which includes `own`); and the result.

    `field`: the survey's tidal field (params.tidal_field "survey"), sampled at the galaxies.
    """
    region = region.unique(subset=["coadd_key", "targetid"], keep="first", maintain_order=True)
    region = region.sort(["targetid", "coadd_key"])  # duplicates resolve to the same first row in every run
    footprint = np.unique(_pixels_of(region))
    gal = _galaxies(region, spectypes, require_zwarn_zero)
    own_keys = set(own["coadd_key"].unique().to_list())
    query = gal["coadd_key"].is_in(list(own_keys)).to_numpy()
    f = lambda c: gal[c].cast(pl.Float64).fill_null(np.nan).to_numpy()  # noqa: E731
    res = cosmic_web(f("target_ra"), f("target_dec"), f("z"), params, query=query, ids=gal["targetid"].to_numpy(),
                     footprint=footprint, make_slice=make_slice, field=field)
    c = res.columns
    vals = gal.filter(pl.Series(query)).select("coadd_key", "targetid").with_columns(
        **{k: pl.Series(k, c[k], nan_to_null=True) for k in OUTPUT_COLUMNS if k not in ("web_class", "status")},
        web_class=web_class_series(c["web_class"]),
        status=pl.Series("status", c["status"].astype(str)))
    rows = own.select(TARGET_COLUMNS).join(vals, on=["coadd_key", "targetid"], how="left", maintain_order="left")
    rows = rows.with_columns(status=pl.col("status").fill_null(STATUS_NOT_GALAXY))
    return rows.drop("zwarn", "spectype"), res


def neighbour_keys(landed: list[str], known: list[str], params: CosmicWebParams) -> list[str]:
    """Partitions whose cosmic_web depends on the landed ones: the landed keys and every known key in their buffer."""
    from desi_assets.sources.keys import parse_key

    def pix(k: str) -> int | None:
        try:
            return parse_key(k).healpix
        except ValueError:
            return None

    landed_pix = np.array([p for p in map(pix, landed) if p is not None], np.int64)
    near = set(region_of(landed_pix, params).tolist()) if landed_pix.size else set()
    out = list(dict.fromkeys(landed))
    out += [k for k in known if k not in out and pix(k) in near]
    return out


def partition_summary(rows: pl.DataFrame, res) -> dict:
    """Key statistics of a run's rows: galaxies, class fractions (volume, galaxies), Σ5 percentiles, edge fraction."""
    gal = rows.filter(pl.col("status") != STATUS_NOT_GALAXY)
    cls = gal["web_class"].drop_nulls().to_numpy()
    s5 = gal["sigma_5"].drop_nulls().drop_nans().to_numpy()
    names = ("void", "sheet", "filament", "knot")
    return {
        "galaxies": gal.height, "tracers": res.n_tracers, "randoms": res.n_randoms,
        "volume_fractions": {k: round(v, 4) for k, v in res.volume_fractions.items()},
        "galaxy_fractions": {k: round(float(np.mean(cls == i)), 4) if cls.size else 0.0 for i, k in enumerate(names)},
        "log10_sigma5_p16_p50_p84": [round(float(x), 3) for x in np.log10(np.percentile(s5, [16, 50, 84]))]
        if s5.size else [],
        "edge_fraction": round(float(gal["edge"].mean() or 0.0), 4) if gal.height else 0.0,
        "invalid_fraction": round(float((gal["status"] == "invalid_redshift").mean() or 0.0), 4) if gal.height else 0.0,
        "complete": bool(rows.select("coadd_key", "targetid").is_unique().all()),
    }
