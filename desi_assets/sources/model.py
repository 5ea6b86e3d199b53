"""In-memory form of one DESI coadd file, its quality flags and its typed errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import polars as pl


class QualityFlag(enum.IntFlag):
    """Per-target quality bits set by the reader (0 means usable)."""

    BAD_FIBERSTATUS = 1 << 0  # COADD_FIBERSTATUS != 0
    BAD_TARGETID = 1 << 1  # TARGETID <= 0 (unassigned / sky-less fibre)
    NO_DATA = 1 << 2  # ivar == 0 everywhere (all arms)
    NONFINITE_FLUX = 1 << 3  # NaN or inf in flux
    ALL_ZERO_FLUX = 1 << 4  # flux == 0 everywhere
    NO_REDSHIFT = 1 << 5  # no redrock row for this target
    ZWARN = 1 << 6  # redrock ZWARN != 0
    NOT_TARGET = 1 << 7  # OBJTYPE is not TGT
    MISSING_ARM = 1 << 8  # an arm is absent from the file
    DUPLICATE_TARGETID = 1 << 9  # TARGETID repeats inside the file
    NONSTANDARD_WAVELENGTH = 1 << 10  # an arm's wavelength array is not the DESI grid (e.g. nm, not Å)
    NO_REDROCK = 1 << 11  # the file has no redrock file, or one that matches none of its TARGETIDs

    @classmethod
    def unusable_mask(cls) -> int:
        """Bits that exclude a spectrum from preprocessing and science."""
        return int(cls.BAD_FIBERSTATUS | cls.BAD_TARGETID | cls.NO_DATA | cls.NONFINITE_FLUX
                   | cls.ALL_ZERO_FLUX | cls.DUPLICATE_TARGETID | cls.NONSTANDARD_WAVELENGTH | cls.NO_REDROCK)

    @classmethod
    def file_level_mask(cls) -> int:
        """Unusable bits that come from the file as a whole: ingest records them in `ingest_errors` too."""
        return int(cls.NONSTANDARD_WAVELENGTH | cls.NO_REDROCK)

    @classmethod
    def describe(cls, value: int) -> str:
        """Comma-separated names of the bits set in value."""
        return ",".join(f.name for f in cls if value & f) or "OK"


class DesiFileError(Exception):
    """A DESI file that cannot be used at all; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TruncatedFileError(DesiFileError):
    """The file ends before its headers say it should (or is not FITS)."""


class MissingHDUError(DesiFileError):
    """A required HDU (e.g. B_FLUX or FIBERMAP) is absent."""

    def __init__(self, path: str, hdu: str):
        self.hdu = hdu
        super().__init__(path, f"required HDU {hdu!r} is missing")


class ShapeMismatchError(DesiFileError):
    """Arrays that must agree in shape do not (e.g. FLUX vs IVAR, FLUX vs FIBERMAP)."""


class WavelengthGridError(ShapeMismatchError):
    """An arm has a different pixel count from DESI's grid, so its spectra cannot share the tables' layout."""


@dataclass
class ArmData:
    """One arm of one file: wavelength (Å), flux (1e-17 erg/s/cm²/Å), ivar, mask, LSF sigma (Å)."""

    wave: np.ndarray  # (npix,) float64
    flux: np.ndarray  # (n, npix) float32
    ivar: np.ndarray  # (n, npix) float32
    mask: np.ndarray  # (n, npix) int32 (0 = good)
    lsf_sigma: np.ndarray  # (n, npix) float32 Gaussian sigma in Å, per target (a broadcast file-level one if sampled)
    lsf_rows_sampled: int = 0  # rows of RESOLUTION the LSF came from (0 = none: nominal)


@dataclass
class CoaddFile:
    """Everything downstream needs from one coadd (+ redrock) file."""

    path: str
    kind: str  # "healpix" | "tile"
    coadd_key: str  # partition key, e.g. "main-dark-10378" or "tile-80613-4"
    survey: str | None
    program: str | None
    healpix: int | None  # file-level pixel (healpix files); per-row healpix is in targets
    targets: pl.DataFrame  # one row per spectrum, lower-case columns (see reader docs)
    arms: dict[str, ArmData]
    redrock_path: str | None = None
    missing: list[str] = field(default_factory=list)  # optional HDUs/files that were absent
    warnings: list[str] = field(default_factory=list)

    @property
    def nspec(self) -> int:
        """Number of spectra in the file."""
        return self.targets.height
