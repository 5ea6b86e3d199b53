"""The validated catalog: join of `targets` and whatever layer tables exist, primary flag, quality flags, GE gates.

The layers and their columns come from the table registry (tables.CATALOG_COLUMNS); which of them exist is read
from the lakehouse at run time, so the join works with any subset present and reports the columns left null.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from desi_assets.storage.tables import CATALOG, CATALOG_COLUMNS, KEY_COLUMNS, REGISTRY
from desi_assets.validation import Between, InSet, NotNull, Unique, run_suite

JOIN_KEYS = ["coadd_key", "targetid"]


class CatalogFlag(enum.IntFlag):
    """Per-layer quality bits of catalog_flags (0 = every layer has a good value)."""

    NOT_USABLE = 1  # targets.usable is false (see targets_quality_flags)
    ZWARN = 2  # redrock ZWARN != 0
    NO_ANOMALY_SCORE = 4  # no anomaly_scores row
    INDICES_NOT_OK = 8  # spectral_indices row missing or status != ok
    KINEMATICS_NOT_OK = 16  # kinematics_and_lines row missing or status != ok (fit failed, low S/N, ...)
    STELLAR_POP_NOT_OK = 32  # stellar_populations row missing or fit_status not ok (ok_spectrum_only is ok)
    WEB_NOT_OK = 64  # cosmic_web row missing or status != ok
    WEB_EDGE = 128  # cosmic_web buffer leaves the footprint
    HIGH_MASKED_FRACTION = 256  # masked_frac above the config limit
    LOW_SNR = 512  # snr_median below the config limit
    OUT_OF_PHYSICAL_RANGE = 1024  # Dn4000, VDISP or logmass outside the gate's physical range (noisy measurement)


#: Layer table -> its status column in the catalog (None: presence of a row is the status).
LAYER_STATUS = {"anomaly_scores": None, "spectral_indices": "indices_status",
                "kinematics_and_lines": "kinematics_status", "stellar_populations": "stellar_pop_status",
                "cosmic_web": "cosmic_web_status"}
_LAYER_FLAG = {"anomaly_scores": CatalogFlag.NO_ANOMALY_SCORE, "spectral_indices": CatalogFlag.INDICES_NOT_OK,
               "kinematics_and_lines": CatalogFlag.KINEMATICS_NOT_OK,
               "stellar_populations": CatalogFlag.STELLAR_POP_NOT_OK, "cosmic_web": CatalogFlag.WEB_NOT_OK}
#: Percentile triples (p16 <= p50 <= p84) of the catalog.
PERCENTILE_TRIPLES = sorted({n.rsplit("_p", 1)[0] for n in CATALOG_COLUMNS if n.endswith("_p50")})


def layer_columns() -> dict[str, dict[str, str]]:
    """Source table -> {source column: catalog column}, from the registry's catalog definition."""
    out: dict[str, dict[str, str]] = {}
    for name, (table, col, *_rest) in CATALOG_COLUMNS.items():
        if table:
            out.setdefault(table, {})[col] = name
    return out


@dataclass
class JoinResult:
    """The joined rows of some partitions plus what was present and missing."""

    frame: pl.DataFrame
    layers_present: list[str]
    layers_missing: list[str]
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # layer -> catalog columns left null

    def coverage(self) -> dict[str, float]:
        """Per layer: fraction of rows that have a row of that layer (0 for absent layers)."""
        n = max(self.frame.height, 1)
        return {layer: (float(self.frame[f"_has_{layer}"].sum()) / n if f"_has_{layer}" in self.frame.columns
                        else 0.0) for layer in LAYER_STATUS}


def _table_columns(lakehouse, table: str) -> list[str] | None:
    """Columns the lakehouse table really has now (None when it is not registered or not created)."""
    if table not in REGISTRY or not lakehouse.exists(table):
        return None
    return lakehouse.columns(table)


def embedding_model_version(lakehouse) -> str | None:
    """Version of the current embedding model (vectors live in LanceDB), or None without one."""
    try:
        return lakehouse.current_model("embedding_model")["version"]
    except FileNotFoundError:
        return None


def join_partitions(lakehouse, keys: Sequence[str], masked_frac_max: float = 0.5, snr_min: float = 1.0,
                    limits: GateLimits | None = None) -> JoinResult:
    """Catalog rows of `keys`: targets left-joined with every existing layer on (coadd_key, targetid)."""
    cols = layer_columns()
    have = _table_columns(lakehouse, "targets")
    if have is None:
        raise FileNotFoundError("the `targets` table does not exist; ingest some coadds first")
    base = lakehouse.read("targets", keys=keys, columns=KEY_COLUMNS + [c for c in cols["targets"] if c in have])
    base = base.rename({c: n for c, n in cols["targets"].items() if c in base.columns and c != n})
    present, missing, missing_cols = [], [], {}
    for table in (t for t in cols if t != "targets"):
        tcols = _table_columns(lakehouse, table)
        wanted = cols[table]
        if tcols is None:
            missing.append(table)
            missing_cols[table] = sorted(wanted.values())
            continue
        present.append(table)
        take = [c for c in wanted if c in tcols]
        absent = sorted(wanted[c] for c in wanted if c not in tcols)
        if absent:
            missing_cols[table] = absent
        part = (lakehouse.read(table, keys=keys, columns=JOIN_KEYS + take)
                .unique(JOIN_KEYS, keep="last", maintain_order=True)
                .rename({c: wanted[c] for c in take if c != wanted[c]})
                .with_columns(pl.lit(True).alias(f"_has_{table}")))
        base = base.join(part, on=JOIN_KEYS, how="left").with_columns(pl.col(f"_has_{table}").fill_null(False))
    version = embedding_model_version(lakehouse)
    if version is None:
        missing_cols["embeddings"] = ["embedding_model_version"]
    base = base.with_columns(pl.lit(version, pl.String).alias("embedding_model_version"))
    base = with_snr_median(base)
    base = with_primary(base, _all_coadds_of(lakehouse, base["targetid"].unique()))
    base = with_flags(base, masked_frac_max, snr_min, limits)
    return JoinResult(base, present, missing, missing_cols)


def with_snr_median(df: pl.DataFrame) -> pl.DataFrame:
    """snr_median: median of the three arms' median per-pixel S/N (nulls ignored)."""
    arms = [c for c in ("median_coadd_snr_b", "median_coadd_snr_r", "median_coadd_snr_z") if c in df.columns]
    if not arms:
        return df.with_columns(pl.lit(None, pl.Float32).alias("snr_median"))
    return df.with_columns(pl.concat_list(arms).list.median().cast(pl.Float32).alias("snr_median"))


def _all_coadds_of(lakehouse, targetids: pl.Series) -> pl.DataFrame:
    """(targetid, coadd_key, zwarn, snr_median) of every coadd in `targets` holding these TARGETIDs."""
    arms = ["median_coadd_snr_b", "median_coadd_snr_r", "median_coadd_snr_z"]
    rows = (lakehouse.scan("targets").select(["targetid", "coadd_key", "zwarn", *arms])
            .filter(pl.col("targetid").is_in(targetids.to_list())).collect())
    return with_snr_median(rows).select(["targetid", "coadd_key", "zwarn", "snr_median"])


def with_primary(df: pl.DataFrame, all_coadds: pl.DataFrame) -> pl.DataFrame:
    """`primary` (lowest ZWARN, then highest snr_median, then coadd_key) and `n_coadds` over all coadds of a target."""
    ranked = (pl.concat([all_coadds, df.select(all_coadds.columns)], how="vertical_relaxed")
              .unique(JOIN_KEYS, keep="first")
              .sort(["targetid", pl.col("zwarn").fill_null(2**62), pl.col("snr_median").fill_null(-1.0),
                     "coadd_key"], descending=[False, False, True, False]))
    best = ranked.group_by("targetid").agg(pl.col("coadd_key").first().alias("_best"),
                                           pl.len().cast(pl.Int32).alias("n_coadds"))
    return (df.drop(["primary", "n_coadds"], strict=False).join(best, on="targetid", how="left")
            .with_columns((pl.col("_best") == pl.col("coadd_key")).fill_null(True).alias("primary"))
            .drop("_best"))


def with_flags(df: pl.DataFrame, masked_frac_max: float, snr_min: float, limits: GateLimits | None = None
               ) -> pl.DataFrame:
    """catalog_flags bits (CatalogFlag) and their names in catalog_flags_reason."""
    F = CatalogFlag

    def col(name):
        return pl.col(name) if name in df.columns else pl.lit(None)

    terms = [(F.NOT_USABLE, ~col("usable").fill_null(False)), (F.ZWARN, col("zwarn").fill_null(1) != 0),
             (F.HIGH_MASKED_FRACTION, col("masked_frac").fill_null(1.0) > masked_frac_max),
             (F.LOW_SNR, col("snr_median").fill_null(0.0) < snr_min),
             (F.WEB_EDGE, col("web_edge").fill_null(False))]
    lim = GateLimits() if limits is None else limits
    oor = [_outside(c, lo, hi).fill_null(False) for c, (lo, hi) in physical_ranges(lim).items() if c in df.columns]
    if oor:
        terms.append((F.OUT_OF_PHYSICAL_RANGE, pl.any_horizontal(oor)))
    for layer, bit in _LAYER_FLAG.items():
        has = col(f"_has_{layer}").fill_null(False)
        status = LAYER_STATUS[layer]
        ok = has if status is None else has & col(status).fill_null("").str.starts_with("ok")  # ok, ok_spectrum_only
        terms.append((bit, ~ok))
    flags = pl.sum_horizontal([pl.when(t).then(int(b)).otherwise(0) for b, t in terms]).cast(pl.Int32)
    reason = pl.concat_str([pl.when(t).then(pl.lit(b.name)).otherwise(None) for b, t in terms], separator="|",
                           ignore_nulls=True)
    return df.with_columns(flags.alias("catalog_flags"), reason.alias("catalog_flags_reason"))


def to_catalog_rows(join: JoinResult) -> pl.DataFrame:
    """The joined frame restricted to the catalog schema (helper columns dropped)."""
    return join.frame.select([c for c in CATALOG.schema.names if c in join.frame.columns])


# --- Great Expectations gates ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateLimits:
    """Values the gates read (filled from the catalog layer's typed config)."""

    ra: tuple[float, float] = (0.0, 360.0)
    dec: tuple[float, float] = (-90.0, 90.0)
    z: tuple[float, float] = (-0.01, 7.0)
    dn4000: tuple[float, float] = (0.0, 3.0)
    vdisp: tuple[float, float] = (0.0, 600.0)
    logmass: tuple[float, float] = (6.0, 13.0)
    web_classes: tuple[int, ...] = (0, 1, 2, 3)
    #: Largest fraction of a partition's measured Dn4000/VDISP/logmass values allowed outside the physical range
    #: (noisy low-S/N measurements scatter out; a unit or code bug moves far more). web_class must always be valid.
    max_out_of_range_fraction: float = 0.05
    #: ... but a small partition may always have this many (1 of 8 measured values is 12%, not a bug)
    min_allowed_out_of_range: int = 2
    max_null_fraction: tuple[tuple[str, float], ...] = (("ra", 0.0), ("dec", 0.0), ("z", 0.01), ("zwarn", 0.01),
                                                         ("spectype", 0.01))


#: Gate name -> what it checks (descriptions are completed with the limits by gate_descriptions).
GATES = ("catalog_keys", "catalog_coordinates", "catalog_percentiles_ordered", "catalog_physical_ranges",
         "catalog_null_fractions", "catalog_row_count")


def gate_descriptions(lim: GateLimits) -> dict[str, str]:
    """Gate name -> description quoting the limits used."""
    nulls = ", ".join(f"{c} ≤ {f:g}" for c, f in lim.max_null_fraction)
    return {
        "catalog_keys": "coadd_key and targetid not null; (coadd_key, targetid) unique",
        "catalog_coordinates": f"ra in [{lim.ra[0]:g}, {lim.ra[1]:g}] deg, dec in [{lim.dec[0]:g}, {lim.dec[1]:g}] "
                               f"deg, z in [{lim.z[0]:g}, {lim.z[1]:g}]",
        "catalog_percentiles_ordered": f"p16 ≤ p50 ≤ p84 for {', '.join(PERCENTILE_TRIPLES)} where present",
        "catalog_physical_ranges": f"at most {lim.max_out_of_range_fraction:.0%} (or {lim.min_allowed_out_of_range}) "
                                   f"of the measured values outside "
                                   f"Dn4000 ({lim.dn4000[0]:g}, {lim.dn4000[1]:g}), VDISP [{lim.vdisp[0]:g}, "
                                   f"{lim.vdisp[1]:g}] km/s, logmass [{lim.logmass[0]:g}, {lim.logmass[1]:g}] "
                                   f"log10(Msun) (those rows carry OUT_OF_PHYSICAL_RANGE); web_class always in "
                                   f"{list(lim.web_classes)}",
        "catalog_null_fractions": f"null fraction per column: {nulls}",
        "catalog_row_count": "catalog rows of each partition = `targets` rows ingested for it",
    }


@dataclass
class GateOutcome:
    """One gate on one partition's rows."""

    gate: str
    passed: bool
    failures: list[dict]
    statistics: dict[str, float]


def evaluate_gates(rows: pl.DataFrame, n_targets: int, lim: GateLimits) -> list[GateOutcome]:
    """Run every GE gate on one partition's catalog rows; n_targets = `targets` rows ingested for it."""
    pdf = rows.with_columns(pl.concat_str([pl.col("coadd_key"), pl.col("targetid").cast(pl.String)], separator="/")
                            .alias("catalog_key")).to_pandas()
    out = []

    def suite(gate, frame, expectations, stats=None):
        res = run_suite(gate, frame, expectations)
        out.append(GateOutcome(gate, res.success, res.failures(), stats or {}))

    suite("catalog_keys", pdf, [NotNull("coadd_key"), NotNull("targetid"), Unique("catalog_key")],
          {"rows": rows.height, "duplicate_keys": rows.height - rows.select(JOIN_KEYS).n_unique()})
    suite("catalog_coordinates", pdf, [Between("ra", *lim.ra), Between("dec", *lim.dec), Between("z", *lim.z)])
    gaps = {}
    for q in PERCENTILE_TRIPLES:
        if all(f"{q}_{p}" in rows.columns for p in ("p16", "p50", "p84")):
            gaps[f"{q}_p50_minus_p16"] = (rows[f"{q}_p50"] - rows[f"{q}_p16"]).to_numpy()
            gaps[f"{q}_p84_minus_p50"] = (rows[f"{q}_p84"] - rows[f"{q}_p50"]).to_numpy()
    import pandas as pd

    gap_frame = pd.DataFrame(gaps) if gaps else pd.DataFrame({"none": [0.0]})
    suite("catalog_percentiles_ordered", gap_frame, [Between(c, 0.0, None) for c in gaps])
    out_frac = out_of_range_fractions(rows, lim)
    stats = {f"out_of_range_{c}": f for c, f in out_frac.items()}
    measured = {c: rows.height - rows[c].null_count() for c in out_frac}
    res = run_suite("catalog_physical_ranges", stats or {"none": 0.0},
                    [Between(f"out_of_range_{c}", 0.0, max(lim.max_out_of_range_fraction,
                                                           lim.min_allowed_out_of_range / max(n, 1)))
                     for c, n in measured.items()])
    wc = run_suite("catalog_web_class", _nullable_ints(pdf), [InSet("web_class", tuple(lim.web_classes))]
                   if "web_class" in pdf.columns else [])
    out.append(GateOutcome("catalog_physical_ranges", res.success and wc.success, res.failures() + wc.failures(),
                           stats))
    n = max(rows.height, 1)
    fracs = {c: (float(rows[c].null_count()) / n if c in rows.columns else 1.0) for c, _ in lim.max_null_fraction}
    suite("catalog_null_fractions", {f"null_fraction_{c}": v for c, v in fracs.items()},
          [Between(f"null_fraction_{c}", 0.0, f) for c, f in lim.max_null_fraction], fracs)
    diff = rows.height - n_targets
    suite("catalog_row_count", {"row_difference": float(diff)}, [Between("row_difference", 0, 0)],
          {"rows": rows.height, "targets": n_targets})
    return out


def physical_ranges(lim: GateLimits) -> dict[str, tuple[float, float]]:
    """Catalog column -> (lo, hi) physical range of the gate."""
    return {"dn4000": lim.dn4000, "dn4000_corr": lim.dn4000, "vdisp": lim.vdisp,
            **{f"logmass_{p}": lim.logmass for p in ("p16", "p50", "p84")}}


def _outside(col: str, lo: float, hi: float) -> pl.Expr:
    return (pl.col(col) < lo) | (pl.col(col) > hi)


def out_of_range_fractions(rows: pl.DataFrame, lim: GateLimits) -> dict[str, float]:
    """Per range-gated column with values: fraction of the non-null values outside its physical range."""
    out = {}
    for c, (lo, hi) in physical_ranges(lim).items():
        if c in rows.columns and rows[c].null_count() < rows.height:
            vals = rows[c].drop_nulls()
            out[c] = float(((vals < lo) | (vals > hi)).sum()) / vals.len()
    return out


def _nullable_ints(pdf):
    """web_class as float (GE's value set check on pandas nullable Int8 with NA is unreliable)."""
    if "web_class" in pdf.columns:
        pdf = pdf.assign(web_class=pdf["web_class"].astype("float64"))
    return pdf


def sky_counts(ra_deg: np.ndarray, dec_deg: np.ndarray, nside: int = 64) -> np.ndarray:
    """Targets per nside HEALPix pixel (RING order, for healpy.mollview), counts."""
    import healpy as hp

    ok = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    pix = hp.ang2pix(nside, ra_deg[ok], dec_deg[ok], lonlat=True)
    return np.bincount(pix, minlength=hp.nside2npix(nside)).astype(float)
