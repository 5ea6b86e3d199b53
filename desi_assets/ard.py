"""The consumer API: one catalog row per target, spectra, similar objects — over the lakehouse or a named release.

    import desi_assets.ard as ard
    db = ard.connect()                       # the lakehouse `make demo` builds ($DESI_ARD_LAKEHOUSE or ./lakehouse)
    sample = db.query("logmass_p50 > 11 and web_class == 0 and snr_median > 10")
    neighbours = db.find_similar(targetid=sample["targetid"][0], k=50)
    ard.plot_spectrum(neighbours["targetid"][0], show_model=True)

Errors the user can cause (unknown TARGETID, bad expression, unknown column, unknown release) raise `ArdError`
with a message that says what to do; the CLI prints it without a traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import polars as pl

from desi_assets.storage.lakehouse import LakehouseResource, default_root
from desi_assets.storage.tables import REGISTRY

#: HEALPix resolution of the `healpix` column (nested).
NSIDE = 64
#: coadd-file healpix // HPXGROUP_DIV is the physical partition (`hpxgroup`) of every table.
HPXGROUP_DIV = 100

_last: Ard | None = None


class ArdError(ValueError):
    """A user-facing error of the API: the message says what was wrong and what exists."""


def connect(root_or_uri: str | None = None, release: str | None = None,
            storage_options: dict[str, str] | None = None) -> Ard:
    """Open a lakehouse (default: the `make demo` one) at its latest state, or at a named release."""
    global _last
    _last = Ard(root_or_uri or default_root(), release, storage_options or {})
    return _last


class Ard:
    """A connection: table versions fixed at open (latest, or those of `release`), lazy scans, cached lookups."""

    def __init__(self, root: str, release: str | None, storage_options: dict[str, str]):
        try:
            self.lakehouse = LakehouseResource(root=root, storage_options=storage_options)
        except ValueError as exc:
            raise ArdError(str(exc)) from None
        self.release = release
        self.manifest = None
        if release is not None:
            from desi_assets.storage.release import ReleaseError, load_manifest

            try:
                self.manifest = load_manifest(self.lakehouse, release)
            except ReleaseError as exc:
                raise ArdError(str(exc)) from None
        self._dt: dict = {}

    # --- tables ---------------------------------------------------------------------------------------------
    def version(self, table: str) -> int | None:
        """Delta version this connection reads of `table` (None: the table does not exist here)."""
        if self.manifest is not None:
            entry = self.manifest["tables"].get(table)
            return None if entry is None else int(entry["version"])
        return self.lakehouse.version(table)

    def _delta(self, table: str):
        if table not in self._dt:
            from deltalake import DeltaTable

            v = self.version(table)
            if v is None:
                raise ArdError(f"table {table!r} does not exist in {self.lakehouse.root}"
                               + (f" at release {self.release!r}" if self.release else "; materialize its asset"))
            self._dt[table] = DeltaTable(self.lakehouse.table_uri(table), version=v,
                                         storage_options=self.lakehouse._so())
        return self._dt[table]

    def scan(self, table: str = "catalog") -> pl.LazyFrame:
        """Lazy Polars scan of a table at this connection's version."""
        if table not in REGISTRY:
            raise ArdError(f"unknown table {table!r}; known: {sorted(REGISTRY)}")
        return pl.scan_delta(self._delta(table))

    @cached_property
    def columns(self) -> list[str]:
        """Columns of the catalog."""
        return list(self.scan("catalog").collect_schema().names())

    def describe(self) -> pl.DataFrame:
        """Catalog columns with their type, unit and documentation."""
        schema = self._delta("catalog").schema().to_arrow()
        return pl.DataFrame({"column": [f.name for f in schema], "type": [str(f.type) for f in schema],
                             "unit": [(f.metadata or {}).get(b"unit", b"").decode() for f in schema],
                             "doc": [(f.metadata or {}).get(b"doc", b"").decode() for f in schema]})

    # --- queries --------------------------------------------------------------------------------------------
    def _check_columns(self, names: Sequence[str]) -> None:
        unknown = [n for n in dict.fromkeys(names) if n not in self.columns]
        if unknown:
            hints = {n: difflib.get_close_matches(n, self.columns, 3) for n in unknown}
            raise ArdError("unknown column(s) " + ", ".join(
                f"{n!r}" + (f" (did you mean {', '.join(hints[n])}?)" if hints[n] else "") for n in unknown)
                + "; db.columns lists them, db.describe() gives units")

    def filter_expr(self, expr: str | pl.Expr) -> pl.Expr:
        """A Polars expression from the seed syntax ("z > 0.1 and spectype == 'GALAXY'"), SQL WHERE, or an Expr."""
        if isinstance(expr, pl.Expr):
            e = expr
        elif isinstance(expr, str):
            text = re.sub(r"(?<![<>!=])==(?!=)", "=", expr)
            text = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", text))
            try:
                e = pl.sql_expr(text)
            except Exception as exc:  # polars raises several SQL error types
                raise ArdError(f"cannot parse expression {expr!r}: {exc}. Write e.g. \"z > 0.1 and spectype == "
                               f"'GALAXY'\" (and/or/not, ==, !=, <, between, in (...))") from None
        else:
            raise ArdError(f"expression must be a string or a polars expression, not {type(expr).__name__}")
        self._check_columns(e.meta.root_names())
        return e

    def _pruned(self, lf: pl.LazyFrame, expr_text: str | None) -> pl.LazyFrame:
        """Add an hpxgroup filter when the expression pins healpix values (partition pruning)."""
        if not expr_text:
            return lf
        m = re.search(r"\bhealpix\s*(?:==|=)\s*(\d+)", expr_text) or re.search(
            r"\bhealpix\s+in\s*[\(\[]([\d,\s]+)[\)\]]", expr_text, re.I)
        if not m or re.search(r"\bor\b", expr_text, re.I):
            return lf
        pix = [int(p) for p in re.findall(r"\d+", m.group(1))]
        return lf.filter(pl.col("hpxgroup").is_in(sorted({p // HPXGROUP_DIV for p in pix})))

    def query(self, expr: str | pl.Expr | None = None, columns: Sequence[str] | None = None,
              limit: int | None = None, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """Catalog rows matching a seed-syntax/SQL-WHERE string, a Polars expression, or a full SQL SELECT."""
        if isinstance(expr, str) and re.match(r"\s*select\b", expr, re.I):
            return self.sql(expr, lazy=lazy)
        lf = self.scan("catalog")
        if expr is not None and not (isinstance(expr, str) and not expr.strip()):
            lf = self._pruned(lf.filter(self.filter_expr(expr)), expr if isinstance(expr, str) else None)
        if columns:
            self._check_columns(columns)
            lf = lf.select(list(columns))
        if limit is not None:
            lf = lf.head(limit)
        return lf if lazy else self._collect(lf)

    def sql(self, statement: str, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """A SQL SELECT over the tables of this connection (FROM catalog, targets, ...)."""
        names = {t for t in re.findall(r"\b(?:from|join)\s+([A-Za-z_]\w*)", statement, re.I)}
        unknown = sorted(n for n in names if n not in REGISTRY)
        if unknown:
            raise ArdError(f"unknown table(s) {unknown} in SQL; known: {sorted(REGISTRY)}")
        ctx = pl.SQLContext({n: self.scan(n) for n in names}, eager=False)
        try:
            lf = ctx.execute(statement)
            lf.collect_schema()
        except Exception as exc:
            raise ArdError(f"bad SQL {statement!r}: {exc}") from None
        return lf if lazy else self._collect(lf)

    @staticmethod
    def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
        try:
            return lf.collect()
        except (pl.exceptions.ColumnNotFoundError, pl.exceptions.SQLInterfaceError, pl.exceptions.InvalidOperationError,
                pl.exceptions.SchemaError, pl.exceptions.ComputeError) as exc:
            raise ArdError(f"query failed: {str(exc).splitlines()[0]}") from None

    def cone(self, ra: float, dec: float, radius_deg: float, columns: Sequence[str] | None = None,
             where: str | pl.Expr | None = None) -> pl.DataFrame:
        """Catalog rows within radius_deg of (ra, dec) (deg), reading only the HEALPix pixels the disc touches."""
        import healpy as hp

        if not (0 < radius_deg <= 180) or not (-90 <= dec <= 90):
            raise ArdError(f"cone needs -90 <= dec <= 90 and 0 < radius_deg <= 180 (got dec={dec}, r={radius_deg})")
        vec = hp.ang2vec(ra, dec, lonlat=True)
        pix = hp.query_disc(NSIDE, vec, np.radians(radius_deg), inclusive=True, nest=True)
        groups = sorted({int(p) // HPXGROUP_DIV for p in pix})
        lf = self.scan("catalog").filter(pl.col("hpxgroup").is_in(groups) & pl.col("healpix").is_in(pix.tolist()))
        if where is not None:
            lf = lf.filter(self.filter_expr(where))
        r0, d0 = np.radians(ra), np.radians(dec)
        rr, dd = pl.col("ra").radians(), pl.col("dec").radians()
        cosd = (dd.sin() * np.sin(d0) + dd.cos() * np.cos(d0) * (rr - r0).cos()).clip(-1, 1)
        lf = lf.with_columns(cosd.arccos().degrees().alias("separation_deg")).filter(
            pl.col("separation_deg") <= radius_deg).sort("separation_deg")
        if columns:
            self._check_columns(columns)
            lf = lf.select([*columns, "separation_deg"])
        return self._collect(lf)

    # --- similar objects ------------------------------------------------------------------------------------
    def find_similar(self, targetid: int | None = None, vector=None, k: int = 10, where: str | None = None
                     ) -> pl.DataFrame:
        """The k nearest spectra in the current embedding table (LanceDB), by TARGETID or by vector."""
        if (targetid is None) == (vector is None):
            raise ArdError("find_similar needs exactly one of targetid= or vector=")
        try:
            from desi_assets.storage.vectors import find_similar_in_lakehouse
        except ImportError as exc:
            raise ArdError(f"similarity search is not available: {exc}") from None
        try:
            return find_similar_in_lakehouse(self.lakehouse, int(targetid) if targetid is not None else
                                             np.asarray(vector, np.float32), k, where)
        except FileNotFoundError as exc:
            raise ArdError(f"no embedding vectors in {self.lakehouse.root}: {exc}") from None
        except KeyError as exc:
            raise ArdError(str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise ArdError(f"find_similar failed: {exc}") from None

    # --- spectra --------------------------------------------------------------------------------------------
    @cached_property
    def _index(self) -> pl.DataFrame:
        """targetid -> (coadd_key, hpxgroup, z, spectype, primary), sorted by targetid (loaded once)."""
        table = "catalog" if self.version("catalog") is not None else "targets"
        cols = ["targetid", "coadd_key", "hpxgroup", "z", "spectype"] + (["primary"] if table == "catalog" else [])
        idx = self.scan(table).select(cols).collect()
        if "primary" not in idx.columns:
            idx = idx.with_columns(pl.lit(True).alias("primary"))
        return idx.sort(["targetid", "primary"], descending=[False, True])

    def locate(self, targetid: int, coadd_key: str | None = None) -> dict:
        """(coadd_key, hpxgroup, z, spectype) of a TARGETID's primary coadd (or of `coadd_key`)."""
        idx = self._index
        ids = idx["targetid"].to_numpy()
        lo, hi = np.searchsorted(ids, targetid, "left"), np.searchsorted(ids, targetid, "right")
        rows = idx.slice(int(lo), int(hi - lo))
        if coadd_key is not None:
            rows = rows.filter(pl.col("coadd_key") == coadd_key)
        if rows.height == 0:
            raise ArdError(f"unknown TARGETID {targetid}" + (f" in coadd {coadd_key!r}" if coadd_key else "")
                           + f" in {self.lakehouse.root}" + (f" release {self.release}" if self.release else ""))
        return rows.row(0, named=True)

    def _files(self, table: str) -> pl.DataFrame:
        """(path, hpxgroup, min/max coadd_key) of a table's data files at this version (cached)."""
        key = f"_files_{table}"
        if key not in self.__dict__:
            import pyarrow as pa

            acts = pl.from_arrow(pa.table(self._delta(table).get_add_actions(flatten=True)))
            self.__dict__[key] = acts.select(
                pl.col("path"), pl.col("partition.hpxgroup").cast(pl.Int64).alias("hpxgroup"),
                pl.col("min.coadd_key").alias("lo"), pl.col("max.coadd_key").alias("hi"))
        return self.__dict__[key]

    def _read_row(self, table: str, files: pl.DataFrame, loc: dict, targetid: int,
                  columns: Sequence[str]) -> dict | None:
        hit = files.filter((pl.col("hpxgroup") == loc["hpxgroup"]) & (pl.col("lo") <= loc["coadd_key"])
                           & (pl.col("hi") >= loc["coadd_key"]))
        base = self._delta(table).table_uri.rstrip("/")
        list_cols = set(REGISTRY[table].list_columns())
        paths = [p if "://" in p or p.startswith("/") else f"{base}/{p}" for p in hit["path"]]
        if not paths:
            return None
        if self.lakehouse.is_local:  # pyarrow decodes a filtered list-column row group ~8x faster than Polars
            import pyarrow.parquet as pq

            for path in paths:  # read only the row group holding the row (files with several row groups)
                f = pq.ParquetFile(path.removeprefix("file://"))
                keys = f.read(columns=["targetid", "coadd_key"])
                hit = np.flatnonzero((keys.column("targetid").to_numpy() == targetid)
                                     & (keys.column("coadd_key").to_numpy(zero_copy_only=False) == loc["coadd_key"]))
                if hit.size == 0:
                    continue
                starts = np.cumsum([0] + [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)])
                rg = int(np.searchsorted(starts, hit[0], "right") - 1)
                t = f.read_row_group(rg, columns=list(columns)).slice(int(hit[0] - starts[rg]), 1)
                return {c: t.column(c)[0].values.to_numpy(zero_copy_only=False) if c in list_cols else
                        t.column(c)[0].as_py() for c in columns}
            return None
        df = (pl.scan_parquet(paths, hive_partitioning=False, storage_options=self.lakehouse._so())
              .filter((pl.col("targetid") == targetid) & (pl.col("coadd_key") == loc["coadd_key"]))
              .select(list(columns)).collect())
        return df.row(0, named=True) if df.height else None

    def get_spectrum(self, targetid: int, coadd_key: str | None = None, models: bool = True) -> dict:
        """Per-arm wave (Å), flux (1e-17 erg/s/cm²/Å), ivar and mask at native resolution, plus models present."""
        from desi_assets.science.wavelength import ARMS

        loc = self.locate(int(targetid), coadd_key)
        cols = [f"{k}_{a}" for a in ARMS for k in ("flux", "ivar", "mask")]
        row = self._read_row("spectra", self._files("spectra"), loc, int(targetid), cols)
        if row is None:
            raise ArdError(f"TARGETID {targetid} ({loc['coadd_key']}) has no row in `spectra`")
        out = {"targetid": int(targetid), "coadd_key": loc["coadd_key"], "z": loc["z"], "spectype": loc["spectype"],
               "arms": {a: {"wave": ARMS[a].wavelength(), "flux": np.asarray(row[f"flux_{a}"], np.float32),
                            "ivar": np.asarray(row[f"ivar_{a}"], np.float32),
                            "mask": np.asarray(row[f"mask_{a}"], np.int32)} for a in ARMS},
               "models": {}}
        if models:
            out["models"] = self._models(loc, int(targetid))
        return out

    def _models(self, loc: dict, targetid: int) -> dict:
        """Model spectra that exist: the anomaly autoencoder's reconstruction on the 496-bin grid."""
        if self.version("preprocessed_spectra") is None:
            return {}
        try:
            from desi_assets.storage import models as model_store

            net = model_store.load_published(self.lakehouse).net
        except (FileNotFoundError, KeyError, OSError):
            return {}
        from desi_assets.science.anomaly.scoring import reconstruct_masked
        from desi_assets.science.wavelength import binned_wavelength

        row = self._read_row("preprocessed_spectra", self._files("preprocessed_spectra"), loc, targetid,
                             ["flux", "masked_frac", "norm"])
        if row is None:
            return {}
        flux = np.asarray(row["flux"], np.float32)[None]
        recon = reconstruct_masked(net, flux, np.asarray(row["masked_frac"])[None] > 0)[0] * row["norm"]
        return {"autoencoder": (binned_wavelength(), np.asarray(recon))}

    def plot_spectrum(self, targetid: int, show_model: bool = True, path=None):
        """Matplotlib figure of the spectrum's arms, its models and the main lines at its redshift."""
        from desi_assets.plots_catalog import plot_spectrum as _plot

        return _plot(self.get_spectrum(targetid, models=show_model), show_model, path)


def _default() -> Ard:
    return _last if _last is not None else connect()


def plot_spectrum(targetid: int, show_model: bool = True, path=None, db: Ard | None = None):
    """Figure of a spectrum (the last `connect()`ed lakehouse unless db is given); saved to path if given."""
    return (db or _default()).plot_spectrum(targetid, show_model, path)


def get_spectrum(targetid: int, db: Ard | None = None) -> dict:
    """Spectrum of a TARGETID from the last connected lakehouse (see Ard.get_spectrum)."""
    return (db or _default()).get_spectrum(targetid)


def quenching_diagram(sample: pl.DataFrame, path=None, color: str | None = None):
    """HδA against Dn4000 of a sample (rows with both), optionally coloured by a column; a matplotlib Figure."""
    from desi_assets.plots_catalog import quenching_diagram as _plot

    need = ["dn4000", "hdelta_a"] + ([color] if color else [])
    missing = [c for c in need if c not in sample.columns]
    if missing:
        raise ArdError(f"quenching_diagram needs columns {missing} in the sample")
    s = sample.drop_nulls(["dn4000", "hdelta_a"])
    return _plot(s["dn4000"].to_numpy(), s["hdelta_a"].to_numpy(),
                 s[color].to_numpy() if color else None, color or "", path)


def catalog_units(db: Ard) -> dict[str, str]:
    """Catalog column -> unit string from the table registry ('' when dimensionless or a flag)."""
    return dict(zip(*db.describe().select("column", "unit").to_dict(as_series=False).values()))


def export(db: Ard, path: str, fmt: str = "fits", columns: Sequence[str] | None = None,
           where: str | None = None) -> int:
    """Write the (filtered) catalog as a FITS binary table (units in TUNITn, names upper-case) or Parquet; rows."""
    df = db.query(where, columns=columns)
    if fmt == "parquet":
        df.write_parquet(path)
        return df.height
    if fmt != "fits":
        raise ArdError(f"unknown export format {fmt!r}: fits or parquet")
    import warnings

    import astropy.units as u
    from astropy.table import MaskedColumn, Table

    units = catalog_units(db)
    t = Table()
    for name in df.columns:
        s = df[name]
        if s.dtype == pl.String:
            col = MaskedColumn(s.fill_null("").to_numpy().astype(str), mask=s.is_null().to_numpy())
        elif s.dtype == pl.Boolean:
            col = MaskedColumn(s.fill_null(False).to_numpy(), mask=s.is_null().to_numpy())
        elif s.dtype.is_integer():
            col = MaskedColumn(s.fill_null(-1).to_numpy(), mask=s.is_null().to_numpy())
        else:
            col = MaskedColumn(s.cast(pl.Float64).fill_null(np.nan).to_numpy())
        unit = units.get(name, "")
        if unit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                col.unit = u.Unit(unit, parse_strict="silent")
        t[name.upper()] = col
    t.meta["EXTNAME"] = "CATALOG"
    t.meta["RELEASE"] = db.release or "latest"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        t.write(path, format="fits", overwrite=True)
    return len(t)
