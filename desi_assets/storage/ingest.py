"""Per-file ingest: one coadd (+ redrock) file -> rows of `targets`, `spectra`, `preprocessed_spectra`.

``ingest_file`` is the one code path for a file, with one failure boundary around all of its work
(fetch, read, frames, LSF binning, preprocessing): a bad file is recorded in ``ingest_errors`` with
its reason and never stops the others. ``ingest_batch`` runs it over a batch (the asset and
``bench/ingest.py`` both call it) and commits the rows through ``WriteBuffer``.

Commit order: ``spectra`` and ``preprocessed_spectra`` first, ``targets`` last. A key counts as landed
only once ``targets`` holds it (``landed_keys``); a kill between the commits leaves keys in the bulk
tables without ``targets`` rows (``unmarked_keys``), and rerunning those partitions repairs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from desi_assets.plots import plot_spectra
from desi_assets.science.preprocess import bin_lsf, preprocess
from desi_assets.science.wavelength import ARMS, binned_wavelength
from desi_assets.sources.keys import key_hpxgroup, parse_key
from desi_assets.sources.model import ArmData, CoaddFile, DesiFileError, QualityFlag
from desi_assets.sources.reader import TARGET_SCHEMA, read_coadd
from desi_assets.storage.arrays import to_list_array, to_numpy_2d
from desi_assets.storage.lakehouse import LakehouseResource
from desi_assets.storage.tables import KEY_COLUMNS, TARGETS

#: Tables written per file, in commit order: `targets` last, as the marker that a key has landed.
COMMIT_ORDER: tuple[str, ...] = ("spectra", "preprocessed_spectra", "targets")
RAW_TABLES: tuple[str, ...] = ("spectra", "targets")
PRE_TABLES: tuple[str, ...] = ("preprocessed_spectra",)
ARM_COLUMNS: list[str] = [f"{w}_{a}" for a in ARMS for w in ("flux", "ivar", "mask")]
#: Spectra buffered per Delta commit by default (~100 kB of memory each); IngestConfig.commit_spectra.
DEFAULT_COMMIT_SPECTRA = 2048
#: RESOLUTION rows sampled per arm for one LSF per file (IngestConfig.lsf_per_target = false); 0: nominal LSF.
DEFAULT_LSF_ROWS = 16


# ----------------------------------------------------------------------------- rows of one file


def key_columns(coadd: CoaddFile) -> pl.DataFrame:
    """The key columns of every row of one file (hpxgroup from keys.key_hpxgroup: file pixel // 100, tiles -1)."""
    t = coadd.targets
    return pl.DataFrame({
        "coadd_key": [coadd.coadd_key] * t.height,
        "survey": [coadd.survey] * t.height,
        "program": [coadd.program] * t.height,
        "healpix": t["healpix"],
        "hpxgroup": pl.Series([key_hpxgroup(coadd.coadd_key)] * t.height, dtype=pl.Int32),
        "targetid": t["targetid"],
    }, schema_overrides={"survey": pl.String, "program": pl.String})


def targets_frame(coadd: CoaddFile) -> pl.DataFrame:
    """The `targets` rows of one file: key columns, reader columns, usability and provenance."""
    t = coadd.targets
    keep = [c for c in TARGETS.schema.names if c in t.columns and c not in KEY_COLUMNS]
    usable = (t["quality_flags"] & QualityFlag.unusable_mask()) == 0
    return pl.concat([key_columns(coadd), t.select(keep)], how="horizontal").with_columns(
        usable=usable, source_path=pl.lit(coadd.path))


def spectra_frame(coadd: CoaddFile) -> pa.Table:
    """The `spectra` rows of one file as Arrow (list columns built without per-row Python)."""
    keys = key_columns(coadd).to_arrow()
    cols, names = list(keys.columns), list(keys.column_names)
    for arm in ARMS:
        a = coadd.arms[arm]
        for what, arr in (("flux", a.flux), ("ivar", a.ivar), ("mask", a.mask)):
            cols.append(to_list_array(arr.astype(np.int32 if what == "mask" else np.float32, copy=False)))
            names.append(f"{what}_{arm}")
    cols.append(to_list_array(bin_lsf({k: v.lsf_sigma for k, v in coadd.arms.items()})))  # (nspec, 496)
    names.append("lsf_sigma")
    return pa.Table.from_arrays(cols, names=names)


def preprocessed_rows(keys: pl.DataFrame, arms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                      usable: np.ndarray) -> tuple[pl.DataFrame, int]:
    """`preprocessed_spectra` rows from key columns and per-arm (flux, ivar, mask) arrays; also the count excluded."""
    usable = np.asarray(usable, dtype=bool)
    rows = keys.filter(pl.Series(usable))
    arms = {a: tuple(x[usable] for x in v) for a, v in arms.items()}
    if rows.height == 0:
        arms = {a: (np.zeros((0, ARMS[a].npix), np.float32),) * 3 for a in ARMS}
    pre = preprocess(arms)
    ok = pre.valid
    out = rows.select(KEY_COLUMNS).filter(pl.Series(ok)).with_columns(
        pl.Series("flux", to_list_array(pre.flux[ok])),
        pl.Series("ivar", to_list_array(pre.ivar[ok])),
        pl.Series("masked_frac", to_list_array(pre.masked_frac[ok])),
        pl.Series("norm", pre.norm[ok]),
    )
    return out, int(keys.height - out.height)


def arm_arrays(coadd: CoaddFile) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-arm (flux, ivar, mask) arrays of one file, as preprocessing takes them."""
    return {a: (coadd.arms[a].flux, coadd.arms[a].ivar, coadd.arms[a].mask) for a in ARMS}


def file_quarantine_reason(coadd: CoaddFile) -> str | None:
    """Why a whole file's rows landed unusable (file-level QualityFlag bits and the reader's warnings), or None."""
    bits = int(np.bitwise_or.reduce(coadd.targets["quality_flags"].to_numpy())) if coadd.nspec else 0
    bits &= QualityFlag.file_level_mask()
    if not bits:
        return None
    why = [w for w in coadd.warnings if "redrock" in w.lower() or "WAVELENGTH" in w]
    if bits & QualityFlag.NO_REDROCK and coadd.redrock_path is None:
        why.append("no redrock file")
    return f"{QualityFlag.describe(bits)}: " + "; ".join(why or ["file-level quality flags set"])


# ----------------------------------------------------------------------------- sources of a file's arrays


def archive_loader(archive, lsf_rows: int = DEFAULT_LSF_ROWS, lsf_per_target: bool = True
                   ) -> Callable[[str], CoaddFile]:
    """Loader reading a key's coadd (+ redrock) file from a SpectraArchive."""
    def load(key: str) -> CoaddFile:
        coadd_path, redrock_path = archive.fetch(key)
        return read_coadd(coadd_path, redrock_path if redrock_path else None, lsf_rows=lsf_rows,
                          lsf_per_target=lsf_per_target)
    return load


def lakehouse_loader(lakehouse: LakehouseResource) -> Callable[[str], CoaddFile]:
    """Loader reading a landed key back from `targets` + `spectra` (arrays and flags; LSF not restored)."""
    def load(key: str) -> CoaddFile:
        t = lakehouse.read("targets", keys=[key]) if lakehouse.exists("targets") else pl.DataFrame()
        if t.height == 0:
            raise LookupError(f"{key}: not in `targets` (never ingested, or its write was interrupted); "
                              f"materialize raw_spectra for it first")
        sp = lakehouse.read("spectra", keys=[key], columns=["targetid", *ARM_COLUMNS])
        if not t["targetid"].equals(sp["targetid"]):  # file order differs: align (duplicates are unusable)
            t, sp = t.sort("targetid", maintain_order=True), sp.sort("targetid", maintain_order=True)
        if sp.height != t.height:
            raise LookupError(f"{key}: `spectra` has {sp.height} rows, `targets` {t.height}; rerun raw_spectra")
        arms = {a: ArmData(wave=ARMS[a].wavelength(), flux=to_numpy_2d(sp[f"flux_{a}"]),
                           ivar=to_numpy_2d(sp[f"ivar_{a}"]), mask=to_numpy_2d(sp[f"mask_{a}"], np.int32),
                           lsf_sigma=np.zeros((t.height, 0), np.float32)) for a in ARMS}
        return CoaddFile(path=t["source_path"][0] or key, kind=parse_key(key).kind, coadd_key=key,
                         survey=t["survey"][0], program=t["program"][0], healpix=parse_key(key).healpix,
                         targets=t.select(list(TARGET_SCHEMA)), arms=arms)
    return load


# ----------------------------------------------------------------------------- errors and commits


def record_ingest_error(lakehouse: LakehouseResource, key: str, file: str, error_type: str, message: str,
                        outcome: str = "failed") -> None:
    """Append one row to `ingest_errors` so that no failure (or quarantine) is silent."""
    lakehouse.append("ingest_errors", ingest_error_row(key, file, error_type, message, outcome))


def ingest_error_row(key: str, file: str, error_type: str, message: str, outcome: str = "failed") -> pl.DataFrame:
    """One `ingest_errors` row (hpxgroup from keys.key_hpxgroup, as in every other table)."""
    return pl.DataFrame({
        "coadd_key": [key], "file": [file], "error_type": [error_type], "message": [message],
        "failed_at": [datetime.now(timezone.utc)], "hpxgroup": pl.Series([key_hpxgroup(key)], dtype=pl.Int32),
        "outcome": [outcome]})


class WriteBuffer:
    """Rows of several files, committed together once they hold `limit` spectra: one commit per table, targets last."""

    def __init__(self, lakehouse: LakehouseResource, limit: int):
        self.lakehouse, self.limit = lakehouse, limit
        self.committed: list[str] = []  # keys whose every table has been committed
        self.clear()

    def clear(self) -> None:
        """Drop the buffered rows."""
        self.keys: list[str] = []
        self.tables: dict[str, list] = {name: [] for name in (*COMMIT_ORDER, "ingest_errors")}
        self.rows = 0

    def add(self, key: str, rows: int, frames: dict[str, pl.DataFrame | pa.Table]) -> None:
        """Buffer one file's frames (table name -> rows); `full` says when to flush."""
        self.keys.append(key)
        for name, frame in frames.items():
            self.tables[name].append(frame)
        self.rows += rows

    @property
    def full(self) -> bool:
        """True once the buffer holds `limit` spectra."""
        return self.rows >= self.limit

    def flush(self) -> None:
        """Commit the buffered rows: spectra, preprocessed_spectra, then targets (the marker), then quarantines."""
        for name in COMMIT_ORDER:
            frames = self.tables[name]
            if frames:
                data = pa.concat_tables(frames) if isinstance(frames[0], pa.Table) else pl.concat(frames)
                self.lakehouse.write_partitions(name, data, self.keys)
        if self.tables["ingest_errors"]:
            self.lakehouse.append("ingest_errors", pl.concat(self.tables["ingest_errors"]))
        self.committed.extend(self.keys)
        self.clear()


def landed_keys(lakehouse: LakehouseResource, keys: Sequence[str] | None = None) -> set[str]:
    """Keys whose ingest finished: those `targets` holds (it is committed last)."""
    if not lakehouse.exists("targets"):
        return set()
    return set(lakehouse.read("targets", keys=keys, columns=["coadd_key"])["coadd_key"].unique().to_list())


def unmarked_keys(lakehouse: LakehouseResource) -> set[str]:
    """Keys with `spectra` or `preprocessed_spectra` rows but no `targets` rows: an interrupted write; rerun them."""
    bulk: set[str] = set()
    for name in ("spectra", "preprocessed_spectra"):
        if lakehouse.exists(name):
            bulk |= set(lakehouse.read(name, columns=["coadd_key"])["coadd_key"].unique().to_list())
    return bulk - landed_keys(lakehouse)


# ----------------------------------------------------------------------------- one file, one batch


@dataclass
class FileOutcome:
    """What ingest did with one partition: rows buffered, or the error that stopped it (recorded)."""

    key: str
    source: str
    spectra: int = 0  # rows of `targets`/`spectra` (0 when only preprocessed_spectra was selected)
    flagged_unusable: int = 0
    preprocessed: int = 0
    excluded_unusable: int = 0
    median_norm: float | None = None
    error: str | None = None  # "ErrorType: message" when nothing landed
    quarantine: str | None = None  # why every row landed unusable (also an `ingest_errors` row)
    warnings: list[str] = field(default_factory=list)
    examples: dict = field(default_factory=dict, repr=False)  # a few spectra for the example plots

    @property
    def ok(self) -> bool:
        """True when the file's rows were buffered for commit."""
        return self.error is None


def ingest_file(key: str, load: Callable[[str], CoaddFile], buffer: WriteBuffer,
                tables: Sequence[str] = COMMIT_ORDER) -> FileOutcome:
    """Load one partition, build its rows for `tables`, buffer them; any failure is recorded, never raised."""
    out = FileOutcome(key, source=key)
    try:
        parse_key(key)
        coadd = load(key)
        out.source, out.warnings = coadd.path, list(coadd.warnings)
        if coadd.coadd_key != key:
            raise DesiFileError(coadd.path, f"holds partition {coadd.coadd_key!r}, not {key!r}")
        targets = targets_frame(coadd)
        frames: dict[str, pl.DataFrame | pa.Table] = {}
        if "spectra" in tables:
            frames["spectra"] = spectra_frame(coadd)
        if "preprocessed_spectra" in tables:
            pre, out.excluded_unusable = preprocessed_rows(targets.select(KEY_COLUMNS), arm_arrays(coadd),
                                                           targets["usable"].to_numpy())
            frames["preprocessed_spectra"], out.preprocessed = pre, pre.height
            out.median_norm = float(pre["norm"].median()) if pre.height else None
            out.examples["preprocessed"] = pre.head(3)
        if "targets" in tables:
            frames["targets"] = targets
            out.spectra, out.flagged_unusable = coadd.nspec, int((~targets["usable"]).sum())
            out.examples["raw"] = _raw_examples(coadd, targets["usable"].to_numpy())
            out.quarantine = file_quarantine_reason(coadd)
            if out.quarantine:
                frames["ingest_errors"] = ingest_error_row(key, coadd.path, "Quarantined", out.quarantine, "flagged")
    except Exception as exc:  # noqa: BLE001 - the per-file boundary: every failure is recorded, never silent
        out.error = f"{type(exc).__name__}: {exc}"
        record_ingest_error(buffer.lakehouse, key, out.source, type(exc).__name__, str(exc))
        return out
    buffer.add(key, coadd.nspec, frames)
    return out


@dataclass
class BatchReport:
    """Outcome of one batch: per-file outcomes, commit timings and the example plots drawn."""

    outcomes: list[FileOutcome]
    committed: list[str]
    seconds: float
    plots: dict[str, str] = field(default_factory=dict)  # table -> PNG path

    @property
    def good(self) -> list[FileOutcome]:
        """Outcomes of the files whose rows were committed."""
        done = set(self.committed)
        return [o for o in self.outcomes if o.ok and o.key in done]

    @property
    def failed(self) -> list[FileOutcome]:
        """Outcomes of the files that did not land."""
        done = set(self.committed)
        return [o for o in self.outcomes if not o.ok or o.key not in done]


def ingest_batch(keys: Sequence[str], load: Callable[[str], CoaddFile], lakehouse: LakehouseResource,
                 tables: Sequence[str] = COMMIT_ORDER, commit_spectra: int = DEFAULT_COMMIT_SPECTRA,
                 plot_tag: str | None = None,
                 on_file: Callable[[int, FileOutcome], None] | None = None) -> BatchReport:
    """ingest_file over `keys` with buffered commits; `ingest_errors` is created (empty) if missing."""
    t0 = time.perf_counter()
    lakehouse.ensure("ingest_errors")
    buffer = WriteBuffer(lakehouse, commit_spectra)
    outcomes: list[FileOutcome] = []
    report = BatchReport(outcomes, buffer.committed, 0.0)
    for i, key in enumerate(keys):
        outcomes.append(ingest_file(key, load, buffer, tables))
        if on_file:
            on_file(i, outcomes[-1])
        if buffer.full or i == len(keys) - 1:
            _flush(buffer, outcomes)
    report.seconds = time.perf_counter() - t0
    if plot_tag:
        report.plots = example_plots(lakehouse, report.good, plot_tag)
    for o in outcomes:
        o.examples = {}
    return report


def _flush(buffer: WriteBuffer, outcomes: list[FileOutcome]) -> None:
    """Commit the buffer; if a commit fails, its files become failures (recorded) and the batch goes on."""
    pending = list(buffer.keys)
    try:
        buffer.flush()
    except Exception as exc:  # noqa: BLE001 - e.g. a Delta conflict that outlived its retries
        buffer.clear()
        for o in outcomes:
            if o.key in pending and o.ok:
                o.error = f"{type(exc).__name__}: commit failed: {exc}"
                record_ingest_error(buffer.lakehouse, o.key, o.source, type(exc).__name__, f"commit failed: {exc}")


# ----------------------------------------------------------------------------- example plots


def _raw_examples(coadd: CoaddFile, usable: np.ndarray) -> dict | None:
    good = np.flatnonzero(usable)[:3]
    if good.size == 0:
        return None
    t = coadd.targets
    return {"wave": np.concatenate([coadd.arms[a].wave for a in ARMS]),
            "flux": np.concatenate([coadd.arms[a].flux[good] for a in ARMS], axis=1),
            "labels": [f"TARGETID {t['targetid'][int(i)]}  {t['spectype'][int(i)]}  z={t['z'][int(i)]}"
                       for i in good]}


def example_plots(lakehouse: LakehouseResource, good: Sequence[FileOutcome], tag: str) -> dict[str, str]:
    """PNGs of a few spectra of the batch (raw: flux vs Å; preprocessed: normalised, 496 bins); table -> path."""
    out: dict[str, str] = {}
    raw = next((o for o in good if o.examples.get("raw")), None)
    if raw is not None:
        ex = raw.examples["raw"]
        path = lakehouse.artifact_dir("plots") / "raw_spectra" / f"{tag}.png"
        out["spectra"] = str(plot_spectra(path, ex["wave"], ex["flux"], ex["labels"], f"raw spectra: {raw.key}"))
    pre = next((o for o in good if o.examples.get("preprocessed") is not None
                and o.examples["preprocessed"].height), None)
    if pre is not None:
        rows = pre.examples["preprocessed"]
        path = Path(lakehouse.artifact_dir("plots")) / "preprocessed_spectra" / f"{tag}.png"
        out["preprocessed_spectra"] = str(plot_spectra(
            path, binned_wavelength(), to_numpy_2d(rows["flux"][:3]), [f"TARGETID {t}" for t in rows["targetid"][:3]],
            f"preprocessed (496 bins): {tag}", ylabel="flux / median|flux|"))
    return out
