"""DESI data-model tables (FIBERMAP, EXP_FIBERMAP, SCORES, REDSHIFTS, TSNR2) and atomic FITS writing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import uniform_filter1d

from desi_assets.sources.mock.columns import (EXP_FIBERMAP_COLUMNS, FIBERMAP_COLUMNS, REDSHIFTS_COLUMNS,
                                              SCORES_COLUMNS, TSNR2_COLUMNS)
from desi_assets.sources.mock.instrument import FIBERSTATUS, FLUX_UNIT, IVAR_UNIT

_NP = {"K": np.int64, "J": np.int32, "I": np.int16, "B": np.uint8, "E": np.float32, "D": np.float64,
       "L": np.bool_}
DESI_BITS = {"LRG": 1 << 0, "ELG": 1 << 1, "QSO": 1 << 2, "BGS": 1 << 60, "MWS": 1 << 61}
PRIORITY = {"ELG": 3000, "LRG": 3200, "QSO": 3400, "BGS": 2100, "MWS": 1400}
OBSCOND = {"dark": 1, "bright": 4, "backup": 65536}
EXPTIME = {"dark": (1000.0, 150.0), "bright": (300.0, 60.0), "backup": (150.0, 40.0)}


def _empty(spec, n):
    out = {}
    for name, fmt, _unit in spec:
        code = fmt.lstrip("0123456789")
        rep = int(fmt[: len(fmt) - len(code)] or 1)
        if code == "A":
            out[name] = np.full(n, "", dtype=f"U{rep}")
        elif rep > 1:
            out[name] = np.zeros((n, rep), dtype=_NP[code])
        else:
            out[name] = np.zeros(n, dtype=_NP[code])
    return out


def _table(spec, data, extname):
    cols = []
    for name, fmt, unit in spec:
        if name not in data:
            continue
        cols.append(fits.Column(name=name, format=fmt, unit=unit or None, array=data[name]))
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["EXTNAME"] = extname
    return hdu


def make_exposures(rng: np.random.Generator, pix: int, program: str, n: int) -> dict[str, np.ndarray]:
    """Exposure list of the pixel (2–3 tiles × 1–2 exposures) and each target's 1–4 exposures."""
    ntile = int(rng.integers(2, 4))
    base_tile = {"dark": 1000, "bright": 20000, "backup": 40000}[program]
    tiles = base_tile + rng.choice(9000, ntile, replace=False)
    rows = []
    mjd0 = 59348.2
    expid = 90000 + int(rng.integers(0, 50000))
    for t in tiles:
        dn = int(rng.integers(0, 400))
        for e in range(int(rng.integers(1, 3))):
            mjd = mjd0 + dn + 0.015 * e + rng.uniform(0, 0.2)
            day = np.datetime64("2021-05-14") + np.timedelta64(dn, "D")
            night = int(str(day).replace("-", ""))
            mu, sd = EXPTIME[program]
            rows.append((int(t), night, expid, mjd, max(60.0, rng.normal(mu, sd))))
            expid += int(rng.integers(1, 40))
    rows = rows[:4] if len(rows) > 4 else rows
    ne = len(rows)
    p_n = {1: [1.0], 2: [0.55, 0.45], 3: [0.45, 0.35, 0.2], 4: [0.4, 0.3, 0.18, 0.12]}[ne]
    nexp = rng.choice(np.arange(1, ne + 1), n, p=p_n)
    keys = rng.uniform(size=(n, ne))
    order = np.argsort(keys, axis=1)
    take = np.arange(ne)[None, :] < nexp[:, None]
    tgt = np.repeat(np.arange(n), nexp)
    eidx = order[take]
    table = np.array(rows, dtype=object)
    exptime = np.array([r[4] for r in rows])
    tile_arr = np.array([r[0] for r in rows])
    # fibre/petal per (target, tile)
    petal_tile = rng.integers(0, 10, (n, ne))
    dev = rng.integers(0, 500, (n, ne))
    petal_tile = petal_tile[:, np.searchsorted(np.unique(tile_arr), tile_arr)]  # same tile → same petal
    dev = dev[:, np.searchsorted(np.unique(tile_arr), tile_arr)]
    coadd_exptime = np.bincount(tgt, weights=exptime[eidx], minlength=n)
    return {
        "nexp": nexp, "tgt": tgt, "eidx": eidx, "rows": table, "coadd_exptime": coadd_exptime,
        "petal": petal_tile[tgt, eidx], "device": dev[tgt, eidx], "petal_first": petal_tile[np.arange(n), order[:, 0]],
    }


#: Legacy Surveys DR9-like 5σ depths (AB mag) of the FIBERMAP photometry for galaxies; point sources (PSF)
#: reach PSF_DEPTH_GAIN mag deeper; each object's depth scatters by DEPTH_SCATTER_MAG (rms) per band.
PHOT_DEPTH_5SIGMA = {"G": 24.0, "R": 23.4, "Z": 22.5, "W1": 21.0, "W2": 20.4}
PSF_DEPTH_GAIN = 0.3
DEPTH_SCATTER_MAG = 0.15


def photometric_sigma(rng: np.random.Generator, n: int, psf: np.ndarray) -> dict[str, np.ndarray]:
    """Per-object 1σ flux errors (nanomaggies) per band from PHOT_DEPTH_5SIGMA (sky-limited, flux-independent)."""
    out = {}
    for b, m5 in PHOT_DEPTH_5SIGMA.items():
        depth = m5 + np.where(psf, PSF_DEPTH_GAIN, 0.0) + rng.normal(0, DEPTH_SCATTER_MAG, n)
        out[b] = 10 ** (-0.4 * (depth - 22.5)) / 5.0
    return out


def _brick(ra, dec):
    dec_s = np.where(dec >= 0, "p", "m")
    return np.array([f"{int(r * 10):04d}{s}{int(abs(d) * 10):03d}" for r, s, d in zip(ra, dec_s, dec)])


def make_fibermap(rng, targetid, ra, dec, tracer, program, photo, expo, subtype, fiberfrac,
                  rng_phot: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Coadd FIBERMAP (71 real columns, real dtypes) with targeting, photometry and coadd summaries.

    photo: noiseless total fluxes (nanomaggies) G, R, Z and optionally W1, W2 (NaN → drawn from Z as before,
    and written back into photo);
    FLUX_* get Gaussian noise of photometric_sigma (drawn from rng_phot) and FLUX_IVAR_* = 1/σ²;
    FIBERFLUX_* are the noiseless fluxes × fiberfrac (the spectrum's aperture).
    """
    n = len(targetid)
    fm = _empty(FIBERMAP_COLUMNS, n)
    star = tracer == "MWS"
    psf = star | (tracer == "QSO")
    fm["TARGETID"] = targetid
    fm["TARGET_RA"], fm["TARGET_DEC"] = ra, dec
    fm["DESINAME"] = np.array([f"DESI J{r:08.4f}{d:+08.4f}" for r, d in zip(ra, dec)])
    fm["PMRA"] = np.where(star, rng.normal(0, 8, n), 0).astype(np.float32)
    fm["PMDEC"] = np.where(star, rng.normal(-3, 8, n), 0).astype(np.float32)
    fm["REF_EPOCH"] = np.where(star, 2015.5, 0).astype(np.float32)
    bits = np.array([DESI_BITS[t] for t in tracer], dtype=np.int64)
    fm["DESI_TARGET"] = bits
    fm["FA_TARGET"] = bits
    fm["FA_TYPE"] = np.where(star, 4, 1).astype(np.uint8)
    fm["OBJTYPE"] = np.full(n, "TGT")
    fm["SUBPRIORITY"] = rng.uniform(size=n)
    fm["OBSCONDITIONS"] = np.full(n, OBSCOND[program], dtype=np.int32)
    fm["RELEASE"] = np.full(n, 9010, dtype=np.int16)
    fm["BRICKNAME"] = _brick(ra, dec)
    fm["BRICKID"] = ((targetid >> 22) & ((1 << 20) - 1)).astype(np.int32)
    fm["BRICK_OBJID"] = (targetid & ((1 << 22) - 1)).astype(np.int32)
    morph = np.where(psf, "PSF", rng.choice(["REX", "EXP", "DEV", "SER"], n, p=[0.4, 0.3, 0.15, 0.15]))
    fm["MORPHTYPE"] = morph
    fm["EBV"] = rng.uniform(0.015, 0.03, n).astype(np.float32)
    rng_phot = np.random.default_rng() if rng_phot is None else rng_phot
    true = {b: np.asarray(photo[b], np.float64) for b in "GRZ"}
    # W1/W2 where no SED gives them (QSOs): from z as before (these draws keep the main stream unchanged)
    w1_ratio, w2_ratio = rng.uniform(0.8, 2.0, n), rng.uniform(0.5, 1.2, n)
    w1 = np.asarray(photo.get("W1", np.full(n, np.nan)), np.float64)
    true["W1"] = np.where(np.isfinite(w1), w1, true["Z"] * w1_ratio)
    w2 = np.asarray(photo.get("W2", np.full(n, np.nan)), np.float64)
    true["W2"] = np.where(np.isfinite(w2), w2, true["W1"] * w2_ratio)
    photo["W1"], photo["W2"] = true["W1"], true["W2"]
    sigma = photometric_sigma(rng_phot, n, psf)
    frac = fiberfrac.astype(np.float32)
    for b in ("G", "R", "Z", "W1", "W2"):
        fm[f"FLUX_{b}"] = (true[b] + rng_phot.normal(size=n) * sigma[b]).astype(np.float32)
        fm[f"FLUX_IVAR_{b}"] = (1 / sigma[b] ** 2).astype(np.float32)
        if b in "GRZ":
            fm[f"FIBERFLUX_{b}"] = true[b].astype(np.float32) * frac
            fm[f"FIBERTOTFLUX_{b}"] = true[b].astype(np.float32) * frac
    fm["SERSIC"] = np.where(morph == "DEV", 4.0, np.where(morph == "SER", rng.uniform(0.5, 6, n), 1.0)).astype(
        np.float32) * (~psf)
    fm["SHAPE_R"] = np.where(psf, 0, rng.lognormal(0, 0.5, n)).astype(np.float32)
    fm["SHAPE_E1"] = np.where(psf, 0, rng.normal(0, 0.15, n)).astype(np.float32)
    fm["SHAPE_E2"] = np.where(psf, 0, rng.normal(0, 0.15, n)).astype(np.float32)
    fm["REF_ID"] = np.where(star, rng.integers(10**17, 4 * 10**18, n), 0).astype(np.int64)
    fm["REF_CAT"] = np.where(star, "G2", "")
    gmag = np.where(fm["FLUX_R"] > 0, 22.5 - 2.5 * np.log10(np.maximum(fm["FLUX_R"], 1e-6)), 0)
    fm["GAIA_PHOT_G_MEAN_MAG"] = np.where(star, gmag - 0.2, 0).astype(np.float32)
    fm["GAIA_PHOT_BP_MEAN_MAG"] = np.where(star, gmag + 0.2, 0).astype(np.float32)
    fm["GAIA_PHOT_RP_MEAN_MAG"] = np.where(star, gmag - 0.6, 0).astype(np.float32)
    fm["PARALLAX"] = np.where(star, rng.exponential(0.5, n), 0).astype(np.float32)
    fm["PHOTSYS"] = np.full(n, "S")
    fm["PRIORITY_INIT"] = np.array([PRIORITY[t] for t in tracer], dtype=np.int64)
    fm["NUMOBS_INIT"] = np.where(tracer == "QSO", 4, 1).astype(np.int64)
    fm["BGS_TARGET"] = np.where(tracer == "BGS", np.where(fm["FLUX_R"] > 10 ** (-0.4 * (19.5 - 22.5)), 2, 1),
                                0).astype(np.int64)
    fm["MWS_TARGET"] = np.where(star, 1, 0).astype(np.int64)
    fm["PLATE_RA"], fm["PLATE_DEC"] = ra, dec
    tgt, eidx, rows = expo["tgt"], expo["eidx"], expo["rows"]
    tiles = np.array([r[0] for r in rows])[eidx]
    nights = np.array([r[1] for r in rows])[eidx]
    mjd = np.array([r[3] for r in rows], dtype=np.float64)[eidx]
    fm["COADD_NUMEXP"] = expo["nexp"].astype(np.int16)
    fm["COADD_EXPTIME"] = expo["coadd_exptime"].astype(np.float32)
    key_n = np.unique(np.stack([tgt, nights]), axis=1)[0]
    key_t = np.unique(np.stack([tgt, tiles]), axis=1)[0]
    fm["COADD_NUMNIGHT"] = np.bincount(key_n, minlength=n).astype(np.int16)
    fm["COADD_NUMTILE"] = np.bincount(key_t, minlength=n).astype(np.int16)
    fm["MEAN_DELTA_X"] = rng.normal(0, 0.002, n).astype(np.float32)
    fm["RMS_DELTA_X"] = np.abs(rng.normal(0.004, 0.002, n)).astype(np.float32)
    fm["MEAN_DELTA_Y"] = rng.normal(0, 0.002, n).astype(np.float32)
    fm["RMS_DELTA_Y"] = np.abs(rng.normal(0.004, 0.002, n)).astype(np.float32)
    fm["MEAN_PSF_TO_FIBER_SPECFLUX"] = np.where(psf, 0.79, fiberfrac / 0.78 * 0.79).astype(np.float32)
    fm["MEAN_FIBER_RA"] = ra + rng.normal(0, 2e-5, n)
    fm["STD_FIBER_RA"] = np.abs(rng.normal(0, 2e-5, n)).astype(np.float32)
    fm["MEAN_FIBER_DEC"] = dec + rng.normal(0, 2e-5, n)
    fm["STD_FIBER_DEC"] = np.abs(rng.normal(0, 2e-5, n)).astype(np.float32)
    fm["MIN_MJD"] = np.full(n, np.inf)
    np.minimum.at(fm["MIN_MJD"], tgt, mjd)
    fm["MAX_MJD"] = np.full(n, -np.inf)
    np.maximum.at(fm["MAX_MJD"], tgt, mjd)
    fm["MEAN_MJD"] = np.bincount(tgt, weights=mjd, minlength=n) / expo["nexp"]
    return fm


def make_exp_fibermap(targetid, ra, dec, expo, fm) -> dict[str, np.ndarray]:
    """EXP_FIBERMAP: one row per target × exposure (NIGHT, EXPID, MJD, TILEID, FIBER, PETAL_LOC, …)."""
    tgt, eidx, rows = expo["tgt"], expo["eidx"], expo["rows"]
    m = len(tgt)
    e = _empty(EXP_FIBERMAP_COLUMNS, m)
    e["TARGETID"] = targetid[tgt]
    e["PRIORITY"] = fm["PRIORITY_INIT"][tgt].astype(np.int32)
    e["SUBPRIORITY"] = fm["SUBPRIORITY"][tgt]
    e["NIGHT"] = np.array([r[1] for r in rows], dtype=np.int32)[eidx]
    e["EXPID"] = np.array([r[2] for r in rows], dtype=np.int32)[eidx]
    e["MJD"] = np.array([r[3] for r in rows], dtype=np.float64)[eidx]
    e["TILEID"] = np.array([r[0] for r in rows], dtype=np.int32)[eidx]
    e["EXPTIME"] = np.array([r[4] for r in rows], dtype=np.float64)[eidx]
    petal, dev = expo["petal"], expo["device"]
    e["PETAL_LOC"] = petal.astype(np.int16)
    e["DEVICE_LOC"] = dev.astype(np.int32)
    e["LOCATION"] = (1000 * petal + dev).astype(np.int64)
    e["FIBER"] = (500 * petal + dev).astype(np.int32)
    ang = np.radians(36 * petal + 18 + (dev % 36))
    rad = 40 + 360 * (dev / 500.0)
    e["FIBERASSIGN_X"] = (rad * np.cos(ang)).astype(np.float32)
    e["FIBERASSIGN_Y"] = (rad * np.sin(ang)).astype(np.float32)
    e["LAMBDA_REF"] = np.full(m, 5400.0, dtype=np.float32)
    e["PLATE_RA"], e["PLATE_DEC"] = ra[tgt], dec[tgt]
    e["NUM_ITER"] = np.full(m, 2, dtype=np.int64)
    e["FIBER_X"] = e["FIBERASSIGN_X"].astype(np.float64) + 0.002
    e["FIBER_Y"] = e["FIBERASSIGN_Y"].astype(np.float64) - 0.002
    e["DELTA_X"] = np.full(m, 0.002)
    e["DELTA_Y"] = np.full(m, -0.002)
    e["FIBER_RA"], e["FIBER_DEC"] = ra[tgt] + 1e-5, dec[tgt] - 1e-5
    e["PSF_TO_FIBER_SPECFLUX"] = fm["MEAN_PSF_TO_FIBER_SPECFLUX"][tgt].astype(np.float64)
    for a in "BRZ":
        e[f"IN_COADD_{a}"] = np.ones(m, dtype=bool)
    return e


_TSNR_PER_1000S = {"BGS": 900.0, "ELG": 75.0, "LRG": 55.0, "QSO": 20.0, "LYA": 40.0, "GPBDARK": 6000.0,
                   "GPBBRIGHT": 1100.0, "GPBBACKUP": 7500.0}
_TSNR_ARM = {"BGS": (0.3, 0.4, 0.3), "ELG": (0.08, 0.32, 0.6), "LRG": (0.1, 0.35, 0.55),
             "QSO": (0.45, 0.35, 0.2), "LYA": (1.0, 0.0, 0.0), "GPBDARK": (0.35, 0.35, 0.3),
             "GPBBRIGHT": (0.35, 0.35, 0.3), "GPBBACKUP": (0.35, 0.35, 0.3)}


def make_tsnr2(rng, targetid, program, expo) -> dict[str, np.ndarray]:
    """TSNR2 table (per-arm and summed template S/N², scaled with effective exposure time)."""
    n = len(targetid)
    sky = {"dark": 1.0, "bright": 0.45, "backup": 0.3}[program]
    eff = expo["coadd_exptime"] / 1000.0 * sky * rng.lognormal(0, 0.12, n)
    out = {"TARGETID": targetid}
    for name, fmt, _ in TSNR2_COLUMNS[1:]:
        parts = name.split("_")
        tracer = parts[1]
        total = _TSNR_PER_1000S[tracer] * eff
        if len(parts) == 3:
            out[name] = (total * _TSNR_ARM[tracer]["BRZ".index(parts[2])]).astype(np.float32)
        else:
            out[name] = total.astype(np.float32)
    return out


def make_scores(arms, tsnr2) -> dict[str, np.ndarray]:
    """SCORES: integrated/median flux and median S/N per √Å in the B/R/Z score ranges, plus TSNR2."""
    out = {"TARGETID": tsnr2["TARGETID"]}
    ranges = {"b": (4000, 5800), "r": (5800, 7600), "z": (7600, 9800)}
    for arm, (lo, hi) in ranges.items():
        a = arms[arm]
        m = (a["wave"] >= lo) & (a["wave"] < hi)
        f, iv = a["flux"][:, m], a["ivar"][:, m]
        A = arm.upper()
        out[f"INTEG_COADD_FLUX_{A}"] = (f.sum(1) * 0.8).astype(np.float32)
        out[f"MEDIAN_COADD_FLUX_{A}"] = np.median(f, axis=1).astype(np.float32)
        out[f"MEDIAN_COADD_SNR_{A}"] = (np.median(f * np.sqrt(iv), axis=1) / np.sqrt(0.8)).astype(np.float32)
    for k, v in tsnr2.items():
        if k != "TARGETID":
            out[k] = v
    return out


#: DELTACHI2 per unit of S/N² (redrock_snr2): real iron and loa rows give 0.15–0.5 of N_pix·(S/N)².
DCHI2_PER_SNR2 = 0.25
#: Lognormal scatter (e-folds) of DELTACHI2 at fixed S/N.
DCHI2_SCATTER = 0.9
#: P(SMALL_DELTA_CHI2) = FAIL_AT_ZERO_SNR / (1 + (S/N / FAIL_SNR)^2.5), S/N = mean per-arm median S/N per pixel.
FAIL_AT_ZERO_SNR = 0.4
FAIL_SNR = 0.3
#: ZWARN bits (redrock): SMALL_DELTA_CHI2 below DELTACHI2 = 9.
ZWARN_SMALL_DELTA_CHI2 = 1 << 2


def redrock_snr2(arms: dict, noiseless: dict) -> np.ndarray:
    """S/N² per spectrum over all arms: Σ model²·ivar + Σ (model − 81-px mean)²·ivar (features count twice)."""
    tot = 0.0
    for arm, a in arms.items():
        m = np.asarray(noiseless[arm], dtype=np.float32)
        hp = m - uniform_filter1d(m, 81, axis=1, mode="nearest")
        tot = tot + ((m * m + hp * hp) * a["ivar"]).sum(1, dtype=np.float64)
    return tot


def make_redshifts(rng, targetid, z, spectype, subtype, tracer, arms, anom_cls, anom_amp, photo, noiseless):
    """REDSHIFTS rows (redrock-like) whose DELTACHI2, ZWARN and failures follow each spectrum's S/N.

    DELTACHI2 = DCHI2_PER_SNR2 × S/N² (lognormal scatter DCHI2_SCATTER) + a noise floor, or below 9 with a
    probability that rises at low S/N (FAIL_AT_ZERO_SNR, FAIL_SNR); DELTACHI2 < 9 sets
    ZWARN SMALL_DELTA_CHI2 and half of those have a wrong z; confident rows go catastrophically wrong
    with a probability that falls with DELTACHI2. Returns the table and a per-row status string.
    """
    n = len(targetid)
    npix = sum((a["ivar"] > 0).sum(1) for a in arms.values()).astype(np.int64)
    snr = sum(np.median(np.abs(a["flux"]) * np.sqrt(a["ivar"]), axis=1) for a in arms.values())
    zerr_kms = np.where(spectype == "QSO", rng.uniform(80, 400, n), np.where(spectype == "STAR", rng.uniform(1, 5, n),
                                                                              rng.uniform(3, 30, n)))
    zerr = zerr_kms / 299792.458 * (1 + np.nan_to_num(z)) * (1 + 3 / (1 + snr))
    zrr = z + rng.normal(size=n) * zerr
    dchi2 = (DCHI2_PER_SNR2 * redrock_snr2(arms, noiseless) * rng.lognormal(0, DCHI2_SCATTER, n)
             + rng.exponential(4.0, n))
    zwarn = np.zeros(n, dtype=np.int64)
    status = np.full(n, "ok", dtype=object)
    normal = np.array([c is None for c in anom_cls])
    # low-S/N fits where a second redshift fits as well (DESI's ZWARN rate climbs below S/N ≈ 0.5 per pixel)
    snr_model = sum(np.median(np.asarray(noiseless[k]) * np.sqrt(a["ivar"]), axis=1) for k, a in arms.items()) / 3
    p_small = FAIL_AT_ZERO_SNR / (1 + (np.clip(snr_model, 0, None) / FAIL_SNR) ** 2.5)
    lost = rng.uniform(size=n) < p_small
    dchi2[lost] = np.minimum(dchi2[lost], rng.uniform(0.2, 9.0, int(lost.sum())))
    small = normal & (dchi2 < 9)
    catas = normal & ~small & (rng.uniform(size=n) < 0.25 * np.exp(-dchi2 / 30.0))
    zwarn[small] |= ZWARN_SMALL_DELTA_CHI2
    zrr[small] = np.where(rng.uniform(size=small.sum()) < 0.5, zrr[small], rng.uniform(0.0, 1.7, small.sum()))
    status[small] = "small_deltachi2"
    zrr[catas] = rng.uniform(0.05, 1.6, catas.sum())
    status[catas] = "catastrophic"
    st = spectype.astype(object).copy()
    st[catas] = np.where(rng.uniform(size=catas.sum()) < 0.7, "GALAXY", "QSO")
    mis = np.array([c == "mislabeled_highz_qso" for c in anom_cls])
    if mis.any():
        # CIV 1549 read as [OII] 3728, or Lyα read as [OII]: a confident but wrong low-z galaxy
        lam = np.where(rng.uniform(size=mis.sum()) < 0.5, 1549.06, 1215.67)
        zrr[mis] = (1 + z[mis]) * lam / 3728.48 - 1
        st[mis] = "GALAXY"
        dchi2[mis] = rng.uniform(30, 300, mis.sum())
        status[mis] = "mislabeled"
    nco = np.where(st == "GALAXY", 10, np.where(st == "QSO", 4, 5))
    coeff = rng.normal(size=(n, 10)) * (np.abs(photo["R"])[:, None] * 50 + 10) * (0.6 ** np.arange(10))[None, :]
    coeff[np.arange(10)[None, :] >= nco[:, None]] = 0.0
    rr = _empty(REDSHIFTS_COLUMNS, n)
    rr.update({
        "TARGETID": targetid, "Z": zrr.astype(np.float64), "ZERR": zerr, "ZWARN": zwarn,
        "CHI2": npix * rng.normal(1.0, 0.03, n), "COEFF": coeff, "FITMETHOD": np.where(st == "QSO", "PCA", "PCA"),
        "NPIXELS": npix, "SPECTYPE": st.astype("U6"),
        "SUBTYPE": np.where(st == "STAR", subtype.astype(str), "").astype("U20"), "NCOEFF": nco.astype(np.int64),
        "DELTACHI2": dchi2,
    })
    return rr, status


def add_bad_fibres(rng, n_bad, pix, program, fm, efm, arms, noiseless, rr, tsnr2, truth, radec, expo):
    """Insert n_bad rows without data (unassigned, stuck, broken, sky fibres) at random places in every table.

    As in real coadds: COADD_FIBERSTATUS ≠ 0 (values from real files), flux and ivar all zero, COADD_NUMEXP 0,
    negative TARGETID for unassigned/stuck positioners, OBJTYPE SKY for sky fibres, redrock ZWARN NODATA.
    Truth `fiber_kind` names the kind ("target" for science rows); their other truth is null.
    """
    n = len(fm["TARGETID"])
    if n_bad <= 0:
        return fm, efm, arms, noiseless, rr, tsnr2, truth
    kinds = np.array(["unassigned", "stuck", "broken", "sky"])[
        rng.choice(4, n_bad, p=[0.4, 0.15, 0.15, 0.3])]
    kinds[:2] = ["unassigned", "sky"]
    status = np.array([rng.choice(FIBERSTATUS[k]) for k in kinds], dtype=np.int32)
    pos = (np.int64(9010) << 42) | (np.int64(pix) << 22) | (n + np.arange(n_bad, dtype=np.int64))
    tid = np.where(np.isin(kinds, ["unassigned", "stuck"]), -(np.int64(pix) * 10000 + 1 + np.arange(n_bad)), pos)
    b = _empty(FIBERMAP_COLUMNS, n_bad)
    b["TARGETID"], b["COADD_FIBERSTATUS"] = tid, status
    b["TARGET_RA"], b["TARGET_DEC"] = radec
    b["PLATE_RA"], b["PLATE_DEC"] = radec
    b["MEAN_FIBER_RA"], b["MEAN_FIBER_DEC"] = radec
    b["OBJTYPE"] = np.where(kinds == "sky", "SKY", np.where(kinds == "broken", "TGT", ""))
    b["DESI_TARGET"] = np.where(kinds == "sky", np.int64(1) << 32, 0).astype(np.int64)
    b["OBSCONDITIONS"] = np.full(n_bad, OBSCOND[program], dtype=np.int32)
    e = _empty(EXP_FIBERMAP_COLUMNS, n_bad)
    r0 = expo["rows"][0]
    petal, dev = rng.integers(0, 10, n_bad), rng.integers(0, 500, n_bad)
    e.update(TARGETID=tid, NIGHT=np.full(n_bad, r0[1], np.int32), EXPID=np.full(n_bad, r0[2], np.int32),
             MJD=np.full(n_bad, r0[3]), TILEID=np.full(n_bad, r0[0], np.int32), EXPTIME=np.full(n_bad, r0[4]),
             PETAL_LOC=petal.astype(np.int16), DEVICE_LOC=dev.astype(np.int32),
             LOCATION=(1000 * petal + dev).astype(np.int64), FIBER=(500 * petal + dev).astype(np.int32),
             FIBERSTATUS=status, PLATE_RA=radec[0], PLATE_DEC=radec[1], FIBER_RA=radec[0], FIBER_DEC=radec[1])
    z = _empty(REDSHIFTS_COLUMNS, n_bad)
    zw = (1 << 9) | (1 << 1) | np.where(kinds == "sky", 1, 0)  # NODATA | LITTLE_COVERAGE | SKY
    z.update(TARGETID=tid, ZWARN=zw.astype(np.int64), FITMETHOD=np.full(n_bad, "PCA"),
             SPECTYPE=np.full(n_bad, "GALAXY"), NCOEFF=np.full(n_bad, 10, np.int64))
    # insertion places: science rows keep their order
    order = np.argsort(np.concatenate([np.arange(n), rng.uniform(0, n, n_bad)]), kind="stable")

    def cat(a, extra):
        return np.concatenate([np.asarray(a), np.asarray(extra, dtype=np.asarray(a).dtype)
                               if np.asarray(a).dtype.kind not in "UO" else np.asarray(extra)])[order]

    fm = {k: cat(v, b[k]) for k, v in fm.items()}
    efm = {k: np.concatenate([v, np.asarray(e[k], dtype=v.dtype)]) for k, v in efm.items()}
    rr = {k: cat(v, z[k]) for k, v in rr.items()}
    tsnr2 = {k: cat(v, tid if k == "TARGETID" else np.zeros(n_bad, np.float32)) for k, v in tsnr2.items()}
    for arm, a in arms.items():
        npix = a["flux"].shape[1]
        zero = np.zeros((n_bad, npix), dtype=np.float32)
        nominal = np.broadcast_to(_nominal_resolution(a["resolution"]), (n_bad,) + a["resolution"].shape[1:])
        a["flux"], a["ivar"] = cat(a["flux"], zero), cat(a["ivar"], zero)
        a["mask"] = cat(a["mask"], zero.astype(np.int32))
        a["resolution"] = cat(a["resolution"], nominal)
        noiseless[arm] = cat(noiseless[arm], zero)
    out = {}
    for k, v in truth.items():
        v = np.asarray(v)
        if k == "targetid":
            extra = tid
        elif k == "healpix":
            extra = np.full(n_bad, pix)
        elif k == "program":
            extra = np.full(n_bad, program)
        elif k == "survey":
            extra = np.full(n_bad, v[0] if len(v) else "main")
        elif k == "ra":
            extra = radec[0]
        elif k == "dec":
            extra = radec[1]
        elif k == "fiber_kind":
            extra = kinds.astype(object)
        elif k == "redrock_status":
            extra = np.full(n_bad, "no_data", dtype=object)
        elif k == "web_class":
            extra = np.full(n_bad, -1)
        elif v.dtype.kind == "f":
            extra = np.full(n_bad, np.nan)
        else:
            extra = np.full(n_bad, None, dtype=object)
        if v.dtype.kind not in "fiu" or k in ("tracer",):
            v = v.astype(object)
        out[k] = np.concatenate([v, np.asarray(extra, dtype=v.dtype if v.dtype.kind in "fiu" else object)])[order]
    return fm, efm, arms, noiseless, rr, tsnr2, out


def _nominal_resolution(res: np.ndarray) -> np.ndarray:
    """Median resolution row (11, npix) of a file, for rows without data."""
    return np.median(res[: min(len(res), 64)], axis=0, keepdims=True).astype(np.float32)


# ---------------------------------------------------------------- writing
def _primary(sim, extra=None) -> fits.PrimaryHDU:
    h = fits.PrimaryHDU()
    for k, v in (("SPGRP", "healpix"), ("SPGRPVAL", sim.pixel), ("HPXPIXEL", sim.pixel), ("HPXNSIDE", 64),
                 ("HPXNEST", True), ("SURVEY", sim.survey), ("PROGRAM", sim.program), ("SPECPROD", "mock"),
                 ("MOCK", True)):
        h.header[k] = v
    for k, v in (extra or {}).items():
        h.header[k] = v
    return h


def _image(data, extname, bunit=None):
    hdu = fits.ImageHDU(data)
    hdu.header["EXTNAME"] = extname
    if bunit:
        hdu.header["BUNIT"] = bunit
    return hdu


def _atomic_write(hdul: fits.HDUList, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def pixel_dir(out_dir: Path, survey: str, program: str, pix: int) -> Path:
    """DESI healpix directory: out_dir/healpix/{survey}/{program}/{pix//100}/{pix}."""
    return Path(out_dir) / "healpix" / survey / program / str(pix // 100) / str(pix)


def write_pixel(out_dir: Path, sim) -> Path:
    """Write truth parquet, redrock and coadd FITS of one simulated pixel (atomic renames); returns coadd path."""
    d = pixel_dir(out_dir, sim.survey, sim.program, sim.pixel)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{sim.survey}-{sim.program}-{sim.pixel}"
    truth_path = d / f"truth-{stem}.parquet"
    tmp = truth_path.with_name(f".{truth_path.name}.tmp{os.getpid()}")
    sim.truth.write_parquet(tmp)
    os.replace(tmp, truth_path)

    fm = _table(FIBERMAP_COLUMNS, sim.fibermap, "FIBERMAP")
    for k, v in (("HPXPIXEL", sim.pixel), ("HPXNSIDE", 64), ("HPXNEST", True), ("SURVEY", sim.survey),
                 ("PROGRAM", sim.program)):
        fm.header[k] = v
    efm = _table(EXP_FIBERMAP_COLUMNS, sim.exp_fibermap, "EXP_FIBERMAP")
    rr = fits.HDUList([_primary(sim), _table(REDSHIFTS_COLUMNS, sim.redshifts, "REDSHIFTS"), fm, efm,
                       _table(TSNR2_COLUMNS, sim.tsnr2, "TSNR2")])
    _atomic_write(rr, d / f"redrock-{stem}.fits")

    hdus = [_primary(sim), fm, efm]
    for arm in ("b", "r", "z"):
        a = sim.arms[arm]
        A = arm.upper()
        hdus += [_image(a["wave"].astype(np.float64), f"{A}_WAVELENGTH", "Angstrom"),
                 _image(a["flux"], f"{A}_FLUX", FLUX_UNIT), _image(a["ivar"], f"{A}_IVAR", IVAR_UNIT),
                 _image(a["mask"].astype(np.int32), f"{A}_MASK"),
                 _image(np.ascontiguousarray(a["resolution"], dtype=np.float32), f"{A}_RESOLUTION")]
    hdus.append(_table(SCORES_COLUMNS, make_scores(sim.arms, sim.tsnr2), "SCORES"))
    coadd = d / f"coadd-{stem}.fits"
    _atomic_write(fits.HDUList(hdus), coadd)
    return coadd
