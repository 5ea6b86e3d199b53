"""`desi-ard fit-spectrum`: the physics layer's science on one spectrum from a file, as a JSON-ready dict.

Reads a DESI coadd (through `sources.reader`, with its redrock file or --z), an SDSS spec/spec-lite
file (COADD HDU: loglam, flux, ivar, wdisp; z from SPECOBJ; WDISP rescaled to the width of the file's own
sky lines, `spectra.sky_lsf_scale`, reported as `lsf_scale`), or a plain stack (FLUX, IVAR, WAVE image
HDUs, vacuum Å, with --z and --fwhm). The same functions as the `physics` assets run on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class OneSpectrum:
    """One spectrum on its own grid: vacuum λ (Å), F_λ, ivar, LSF σ (observed Å) per pixel, z and provenance."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    lsf_sigma: np.ndarray
    z: float
    instrument: str
    targetid: int | None = None
    spectype: str | None = None
    zwarn: int | None = None
    lsf_scale: float = 1.0  # stated LSF × this = the LSF used (SDSS: from the sky lines)


def read_one(path: str | Path, targetid: int | None = None, z: float | None = None,
             fwhm_a: float | None = None) -> OneSpectrum:
    """Read one spectrum: DESI coadd, SDSS spec(-lite) or a FLUX/IVAR/WAVE stack; z from the file unless given."""
    from astropy.io import fits

    path = Path(path)
    with fits.open(path, memmap=False) as h:
        names = {x.name.upper() for x in h}
    if "COADD" in names:
        return _read_sdss(path, z, fwhm_a)
    if "B_FLUX" in names:
        return _read_desi(path, targetid, z)
    if {"FLUX", "IVAR", "WAVE"} <= names or ("WAVE" in names and "IVAR" in names):
        return _read_stack(path, z, fwhm_a)
    raise ValueError(f"{path}: not a DESI coadd (B_FLUX…), an SDSS spec file (COADD) or a FLUX/IVAR/WAVE stack; "
                     f"HDUs: {sorted(names)}")


def _read_desi(path: Path, targetid: int | None, z: float | None) -> OneSpectrum:
    from desi_assets.science.physics.spectra import combine_arms, lsf_on_grid
    from desi_assets.science.preprocess import bin_lsf
    from desi_assets.science.wavelength import ARMS, combined_wavelength
    from desi_assets.sources.reader import read_coadd

    c = read_coadd(path, "auto" if z is None else None)
    tids = c.targets["targetid"].to_list()
    if targetid is None:
        spectype = c.targets["spectype"].to_list() if "spectype" in c.targets.columns else [None] * len(tids)
        row = next((i for i, s in enumerate(spectype) if s == "GALAXY"), 0)
    elif targetid in tids:
        row = tids.index(targetid)
    else:
        raise ValueError(f"{path}: TARGETID {targetid} not in the file (it holds {len(tids)} spectra)")
    flux, ivar = combine_arms({a: c.arms[a].flux[row:row + 1] for a in ARMS},
                              {a: c.arms[a].ivar[row:row + 1] for a in ARMS},
                              {a: c.arms[a].mask[row:row + 1] for a in ARMS})
    lsf = lsf_on_grid(bin_lsf({a: c.arms[a].lsf_sigma[row] for a in ARMS}))[0]
    t = c.targets.row(row, named=True)
    zz = z if z is not None else t.get("z")
    if zz is None:
        raise ValueError(f"{path}: no redrock redshift for TARGETID {tids[row]}; pass --z")
    return OneSpectrum(combined_wavelength(), flux[0], ivar[0], lsf, float(zz), "DESI", int(tids[row]),
                       t.get("spectype"), t.get("zwarn"))


def _read_sdss(path: Path, z: float | None, fwhm_a: float | None) -> OneSpectrum:
    from astropy.io import fits

    from desi_assets.science.physics.spectra import sky_lsf_scale

    with fits.open(path, memmap=False) as h:
        t = h["COADD"].data
        wave = 10 ** np.asarray(t["loglam"], dtype=np.float64)  # SDSS wavelengths are vacuum
        flux = np.asarray(t["flux"], dtype=np.float64)
        ivar = np.asarray(t["ivar"], dtype=np.float64)
        mask = np.asarray(t["and_mask"]) if "and_mask" in t.names else np.zeros(wave.size, int)
        dpix = wave * np.log(10) * np.median(np.diff(np.asarray(t["loglam"], dtype=np.float64)))
        lsf = np.asarray(t["wdisp"], dtype=np.float64) * dpix if fwhm_a is None else np.full(wave.size, fwhm_a / 2.355)
        # WDISP understates the coadd's LSF (the sky lines of NGC 3522's file are 18% wider): rescale it to them
        scale = sky_lsf_scale(wave, np.asarray(t["sky"], dtype=np.float64), lsf) if (
            fwhm_a is None and "sky" in t.names) else 1.0
        lsf = lsf * scale
        spec = h["SPECOBJ"].data if "SPECOBJ" in [x.name for x in h] else None
        zz = z if z is not None else (float(spec["Z"][0]) if spec is not None else None)
        tid = int(spec["SPECOBJID"][0]) if spec is not None and "SPECOBJID" in spec.names else None
        cls = str(spec["CLASS"][0]).strip() if spec is not None and "CLASS" in spec.names else None
    if zz is None:
        raise ValueError(f"{path}: no SPECOBJ redshift; pass --z")
    ivar = np.where(mask == 0, ivar, 0.0)
    return OneSpectrum(wave, flux, ivar, lsf, zz, "SDSS", tid, cls, lsf_scale=scale)


def _read_stack(path: Path, z: float | None, fwhm_a: float | None) -> OneSpectrum:
    from astropy.io import fits

    with fits.open(path, memmap=False) as h:
        wave = np.asarray(h["WAVE"].data, dtype=np.float64).ravel()
        flux = np.asarray(h["FLUX"].data, dtype=np.float64)
        ivar = np.asarray(h["IVAR"].data, dtype=np.float64)
    flux, ivar = np.atleast_2d(flux)[0], np.atleast_2d(ivar)[0]
    if z is None:
        raise ValueError(f"{path}: a stack carries no redshift; pass --z (0 for a rest-frame stack)")
    fw = 1.2 if fwhm_a is None else fwhm_a  # DESI LSF / (1 + z) for a rest-frame DESI stack at z ≈ 0.4
    return OneSpectrum(wave, flux, ivar, np.full(wave.size, fw / 2.355), float(z), "stack")


def _clean(x):
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else round(float(x), 5)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def fit_one(path: str | Path, targetid: int | None = None, z: float | None = None, fwhm_a: float | None = None,
            templates: str = "bc03", template_fwhm_a: float | None = None) -> dict:
    """Indices and pPXF kinematics + lines of one spectrum in a file (see read_one), as a JSON-ready dict."""
    from desi_assets.science.physics import indices as ix
    from desi_assets.science.physics.fit import LINE_NAMES, FitSettings, fit_spectrum, one_blas_thread
    from desi_assets.science.physics.templates import load_templates

    s = read_one(path, targetid, z, fwhm_a)
    res = ix.measure_indices(s.wave, s.flux[None, :], s.ivar[None, :], np.array([s.z]))
    settings = FitSettings(templates=templates, template_fwhm_a=template_fwhm_a)
    tset = load_templates(settings.templates, settings.velscale, settings.template_fwhm_a)
    with one_blas_thread():
        fit = fit_spectrum(s.wave, s.flux, s.ivar, s.lsf_sigma, s.z, tset, settings)
    row = fit.row()
    lines = {n: {"flux": _clean(row[f"flux_{n}"]), "flux_err": _clean(row[f"flux_{n}_err"]),
                 "ew": _clean(row[f"ew_{n}"]), "ew_err": _clean(row[f"ew_{n}_err"])} for n in LINE_NAMES
             if row[f"flux_{n}"] == row[f"flux_{n}"]}
    return {
        "file": str(path), "instrument": s.instrument, "targetid": s.targetid, "z": s.z, "spectype": s.spectype,
        "lsf_scale": _clean(s.lsf_scale),
        "indices": {k: {"value": _clean(res.value[k][0]), "error": _clean(res.error[k][0]),
                        "flag": ix.REASONS[int(res.reason[k][0])]} for k in ix.INDEX_NAMES},
        "kinematics": {k: _clean(v) for k, v in row.items() if not k.startswith(("flux_", "ew_"))}
        | {"templates": templates, "vdisp_floor_kms": settings.vdisp_floor_kms,
           "template_fwhm_a": settings.template_fwhm_a if settings.template_fwhm_a is not None else tset.fwhm_a},
        "lines": lines,
    }


def add_arguments(p) -> None:
    """Arguments of `desi-ard fit-spectrum`."""
    p.add_argument("file", help="DESI coadd-*.fits (redrock beside it, or --z), SDSS spec-*.fits, or a FLUX/IVAR/WAVE "
                                "stack")
    p.add_argument("--targetid", type=int, default=None, help="DESI TARGETID (default: the first GALAXY)")
    p.add_argument("--z", type=float, default=None, help="redshift (default: redrock / SPECOBJ)")
    p.add_argument("--fwhm", type=float, default=None,
                   help="instrumental FWHM in observed Å where the file has none (stacks: default 1.2)")
    p.add_argument("--templates", default="bc03", choices=["bc03", "c3k"], help="stellar template set")
    p.add_argument("--template-fwhm", type=float, default=None,
                   help="template resolution FWHM, Å (default: the set's measured value)")


def run(args, say=print) -> int:
    """Fit the file's spectrum and print the result as JSON; 0 when the fit is ok."""
    import json
    import os

    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    out = fit_one(args.file, args.targetid, args.z, args.fwhm, args.templates, args.template_fwhm)
    say(json.dumps(out, indent=1))
    return 0 if out["kinematics"]["status"] == "ok" else 1
