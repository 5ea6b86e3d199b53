"""The one table registry: name, schema (with units), partitioning of every lakehouse table."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Columns every partition-scoped table starts with (DESIGN §2).
KEY_FIELDS: list[pa.Field] = [
    pa.field("coadd_key", pa.string(), nullable=False, metadata={"doc": "partition key, e.g. main-dark-10378"}),
    pa.field("survey", pa.string(), metadata={"doc": "DESI survey (main, sv3, …); null for tiles without it"}),
    pa.field("program", pa.string(), metadata={"doc": "DESI program (dark, bright, backup, other)"}),
    pa.field("healpix", pa.int64(), metadata={"doc": "nside-64 nested HEALPix pixel of the target"}),
    pa.field("hpxgroup", pa.int32(), nullable=False, metadata={"doc": "physical partition: coadd-file healpix // 100 (tiles: -1)"}),
    pa.field("targetid", pa.int64(), nullable=False, metadata={"doc": "DESI TARGETID"}),
]


def _f(name: str, typ: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, typ, metadata={"doc": doc})


F32L = pa.list_(pa.float32())
I32L = pa.list_(pa.int32())


@dataclass(frozen=True)
class TableSpec:
    """A Delta table: name, Arrow schema, physical partition columns and whether rows belong to a coadd."""

    name: str
    schema: pa.Schema
    description: str
    partition_by: tuple[str, ...] = ("hpxgroup",)
    partition_scoped: bool = True  # rows carry coadd_key and are replaced per partition
    #: Spectra are noisy floats: compression saves ~2% of bytes and costs ~3x write time, and
    #: min/max statistics of list columns are useless for pruning. Bulk tables skip both.
    bulk: bool = False
    #: List columns with few distinct values (mask bits, masked fractions, a per-file LSF):
    #: dictionary + RLE encoding shrinks them ~10x for little CPU (spectra: 97.6 -> 64.5 kB/spectrum).
    dictionary_lists: tuple[str, ...] = ()

    def list_columns(self) -> list[str]:
        """Names of the list (array) columns."""
        return [f.name for f in self.schema if pa.types.is_list(f.type)]

    def column_docs(self) -> dict[str, str]:
        """Column name -> documentation string (with units)."""
        return {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in self.schema}


TARGETS = TableSpec(
    "targets",
    pa.schema(KEY_FIELDS + [
        _f("target_ra", pa.float64(), "TARGET_RA, deg ICRS"),
        _f("target_dec", pa.float64(), "TARGET_DEC, deg ICRS"),
        _f("coadd_fiberstatus", pa.int32(), "COADD_FIBERSTATUS bits (0 good)"),
        _f("objtype", pa.string(), "OBJTYPE (TGT, SKY, BAD, …)"),
        _f("desi_target", pa.int64(), "DESI_TARGET bits"),
        _f("bgs_target", pa.int64(), "BGS_TARGET bits"),
        _f("mws_target", pa.int64(), "MWS_TARGET bits"),
        _f("scnd_target", pa.int64(), "SCND_TARGET bits"),
        _f("coadd_numexp", pa.int32(), "exposures in the coadd"),
        _f("coadd_exptime", pa.float32(), "total exposure time, s"),
        _f("ebv", pa.float32(), "SFD E(B-V), mag"),
        _f("flux_g", pa.float32(), "Legacy Surveys g flux, nanomaggy"),
        _f("flux_r", pa.float32(), "Legacy Surveys r flux, nanomaggy"),
        _f("flux_z", pa.float32(), "Legacy Surveys z flux, nanomaggy"),
        _f("z", pa.float64(), "redrock redshift"),
        _f("zerr", pa.float64(), "redrock redshift error"),
        _f("zwarn", pa.int64(), "redrock ZWARN bits (0 good)"),
        _f("spectype", pa.string(), "redrock class: GALAXY, QSO, STAR"),
        _f("subtype", pa.string(), "redrock subtype"),
        _f("deltachi2", pa.float64(), "redrock chi2 difference to the next best fit"),
        _f("chi2", pa.float64(), "redrock best-fit chi2"),
        _f("npixels", pa.int64(), "pixels used by redrock"),
        _f("nexp", pa.int32(), "rows in EXP_FIBERMAP for this target"),
        _f("first_night", pa.int32(), "first observing night, YYYYMMDD"),
        _f("last_night", pa.int32(), "last observing night, YYYYMMDD"),
        _f("min_mjd", pa.float64(), "first exposure MJD, d"),
        _f("max_mjd", pa.float64(), "last exposure MJD, d"),
        _f("mean_mjd", pa.float64(), "mean exposure MJD, d"),
        _f("fiber", pa.int32(), "fibre of the first exposure (0-4999)"),
        _f("petal_loc", pa.int32(), "petal of the first exposure (0-9)"),
        _f("tileid", pa.int32(), "tile of the first exposure"),
        _f("median_coadd_snr_b", pa.float32(), "median S/N per pixel, b arm"),
        _f("median_coadd_snr_r", pa.float32(), "median S/N per pixel, r arm"),
        _f("median_coadd_snr_z", pa.float32(), "median S/N per pixel, z arm"),
        _f("masked_frac", pa.float32(), "fraction of pixels not good (mask, ivar<=0, non-finite)"),
        _f("quality_flags", pa.int32(), "QualityFlag bits (0 usable)"),
        _f("quality_reason", pa.string(), "names of the QualityFlag bits set"),
        _f("usable", pa.bool_(), "passes the quality cut used by preprocessing"),
        _f("source_path", pa.string(), "coadd file the row came from"),
    ]),
    "One row per spectrum: FIBERMAP columns we keep, redrock, exposure summary and quality flags.",
)

SPECTRA = TableSpec(
    "spectra",
    pa.schema(KEY_FIELDS + [
        _f("flux_b", F32L, "b-arm flux, 1e-17 erg/s/cm2/Å (2751 pixels, grid in science.wavelength)"),
        _f("ivar_b", F32L, "b-arm inverse variance, 1e34 (erg/s/cm2/Å)^-2"),
        _f("mask_b", I32L, "b-arm SPECMASK bits"),
        _f("flux_r", F32L, "r-arm flux (2326 pixels)"),
        _f("ivar_r", F32L, "r-arm inverse variance"),
        _f("mask_r", I32L, "r-arm SPECMASK bits"),
        _f("flux_z", F32L, "z-arm flux (2881 pixels)"),
        _f("ivar_z", F32L, "z-arm inverse variance"),
        _f("mask_z", I32L, "z-arm SPECMASK bits"),
        _f("lsf_sigma", F32L, "line-spread Gaussian sigma at the 496 bin centres, Å (file-level estimate)"),
    ]),
    "Per-arm native-resolution spectra and the compact line-spread function.",
    bulk=True,
    dictionary_lists=("mask_b", "mask_r", "mask_z", "lsf_sigma"),
)

PREPROCESSED = TableSpec(
    "preprocessed_spectra",
    pa.schema(KEY_FIELDS + [
        _f("flux", F32L, "496-bin flux (16x mean per arm, b171+r145+z180) / norm, dimensionless"),
        _f("ivar", F32L, "496-bin inverse variance in normalised units"),
        _f("masked_frac", F32L, "fraction of the 16 pixels of each bin that are not good"),
        _f("norm", pa.float64(), "median |binned flux|, 1e-17 erg/s/cm2/Å"),
    ]),
    "The seed's 496-bin normalised spectra for usable targets.",
    bulk=True,
    dictionary_lists=("masked_frac",),
)

INGEST_ERRORS = TableSpec(
    "ingest_errors",
    pa.schema([
        pa.field("coadd_key", pa.string(), nullable=False),
        _f("file", pa.string(), "path or URL of the file that failed"),
        _f("error_type", pa.string(), "exception class name"),
        _f("message", pa.string(), "error message (names the missing piece)"),
        _f("failed_at", pa.timestamp("us", tz="UTC"), "time of the failure"),
        pa.field("hpxgroup", pa.int32(), nullable=False),
    ]),
    "Files that could not be ingested, with the reason. Latest failure per partition.",
)

TRAINING_SET = TableSpec(
    "training_set",
    pa.schema([
        pa.field("coadd_key", pa.string(), nullable=False),
        pa.field("targetid", pa.int64(), nullable=False),
        _f("spectype", pa.string(), "redrock class the sample is balanced on"),
        _f("z", pa.float64(), "redrock redshift"),
        _f("split", pa.string(), "train or val"),
        _f("flux", F32L, "496-bin normalised flux (copied from preprocessed_spectra)"),
        _f("ivar", F32L, "496-bin normalised inverse variance"),
        _f("masked_frac", F32L, "fraction of each bin's 16 pixels that were masked"),
    ]),
    "Class-balanced (GALAXY/QSO/STAR) sample across partitions, with a validation split.",
    partition_by=(), partition_scoped=False,
)

ANOMALY_SCORES = TableSpec(
    "anomaly_scores",
    pa.schema(KEY_FIELDS + [
        _f("score", pa.float64(), "seed score rB+rR+rZ (dimensionless)"),
        _f("r_b", pa.float64(), "b-arm mean squared residual / median(flux^2) over the whole spectrum"),
        _f("r_r", pa.float64(), "r-arm residual ratio"),
        _f("r_z", pa.float64(), "z-arm residual ratio"),
        _f("frac_b", pa.float64(), "r_b / score"),
        _f("frac_r", pa.float64(), "r_r / score"),
        _f("frac_z", pa.float64(), "r_z / score"),
        _f("worst_band", pa.string(), "B, R or Z: arm with the largest residual ratio"),
        _f("dominance", pa.string(), "B_DOMINANT, R_DOMINANT, Z_DOMINANT, MULTI_BAND or ARTIFACT_SUSPECT"),
        _f("category", pa.string(), "seed category (ARTIFACT_SUSPECT, GENUINELY_NOVEL, HIGH_Z_CANDIDATE, UNUSUAL_AGN, UNUSUAL_GALAXY)"),
        _f("is_anomaly", pa.bool_(), "score > threshold"),
        _f("chi2_b", pa.float64(), "b-arm reduced chi2 of the reconstruction (ivar-weighted; bins holding masked "
                                   "pixels left out)"),
        _f("chi2_r", pa.float64(), "r-arm reduced chi2"),
        _f("chi2_z", pa.float64(), "z-arm reduced chi2"),
        _f("score_noise_aware", pa.float64(), "chi2_b + chi2_r + chi2_z"),
        _f("is_anomaly_noise_aware", pa.bool_(), "score_noise_aware > its threshold"),
        _f("score_local", pa.float64(), "max(local_sigma, arm_step_sigma), each over its clean 90th percentile for the "
                                        "spectrum's class (dimensionless; science.anomaly.local)"),
        _f("local_sigma", pa.float64(), "significance (sigma) of the strongest 1-13-bin residual feature after noise "
                                        "and model error"),
        _f("local_wave", pa.float64(), "observed wavelength (Angstrom) of that feature's centre"),
        _f("local_width_bins", pa.int32(), "width of that feature in 12.8 Angstrom bins"),
        _f("arm_step_sigma", pa.float64(), "significance (sigma) of the largest fractional-residual step across the "
                                           "b/r or r/z arm boundary"),
        _f("is_anomaly_local", pa.bool_(), "score_local > its threshold"),
        _f("highz_signature", pa.bool_(), "blue-arm Lya/forest signature of z > 2"),
        _f("model_version", pa.string(), "anomaly_model version that produced the row"),
    ]),
    "Autoencoder anomaly scores per spectrum: the seed score, a noise-aware chi2 score and a localised significance.",
)

INJECTION_RESULTS = TableSpec(
    "injection_results",
    pa.schema([
        pa.field("targetid", pa.int64(), nullable=False),
        _f("kind", pa.string(), "injected anomaly class, or 'clean'"),
        _f("amplitude", pa.float64(), "injected amplitude in the kind's unit (see science.anomaly.injection)"),
        _f("score", pa.float64(), "seed score after injection"),
        _f("score_noise_aware", pa.float64(), "noise-aware score after injection"),
        _f("score_local", pa.float64(), "localised score after injection"),
        _f("model_version", pa.string(), "anomaly_model version"),
    ]),
    "Injection/recovery trials on held-out normal spectra.",
    partition_by=(), partition_scoped=False,
)

REGISTRY: dict[str, TableSpec] = {t.name: t for t in (TARGETS, SPECTRA, PREPROCESSED, INGEST_ERRORS, TRAINING_SET,
                                                       ANOMALY_SCORES, INJECTION_RESULTS)}


def register(spec: TableSpec) -> TableSpec:
    """Add a table defined by another layer to the registry and return it."""
    REGISTRY[spec.name] = spec
    return spec


def table_spec(name: str) -> TableSpec:
    """Look up a table by name, with a clear error for unknown names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown lakehouse table {name!r}; known: {sorted(REGISTRY)}") from None
