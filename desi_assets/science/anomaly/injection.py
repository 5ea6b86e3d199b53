"""Injection of known anomalies into binned, normalised spectra, and the recovery (completeness) report.

All injections act on the 496-bin preprocessed flux (normalised units). A bin is the mean of
16 native 0.8 Å pixels, so it spans 12.8 Å; a feature covering a fraction ``f`` of a bin changes
the bin mean by ``f`` times the pixel-level change (locally flat flux assumed).

Amplitudes (one per spectrum) are drawn log-uniformly over :data:`AMPLITUDE_RANGES`, which
puts half of the draws in the weak half of each range (in log). Nuisance parameters (trough
width and velocity, line widths, positions, arms, signs, spike pixel counts) are drawn from
``rng`` inside :func:`inject`; pass ``return_params=True`` to get them back.

Cosmic rays: a spike of ``A`` σ over ``npix`` (1–3) native pixels is diluted by the 16× binning.
With σ_bin = 1/sqrt(binned ivar) and σ_pixel ≈ 4·σ_bin (√16 pixels averaged), the binned
increment is ``A·σ_pixel·npix/16 = A·npix·σ_bin/4``; a 5σ one-pixel hit becomes a 1.25σ_bin bump.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

from desi_assets.science.wavelength import ARMS, ARM_NAMES, BIN_WIDTH_A, arm_bin_slices

C_KMS = 299_792.458
WAVE_MIN_A = ARMS["b"].start_a
WAVE_MAX_A = ARMS["z"].end_a

#: kind → (low, high, unit/meaning) of the amplitude drawn per spectrum.
AMPLITUDE_RANGES: dict[str, tuple[float, float, str]] = {
    "bal": (0.10, 0.90, "fractional trough depth (CIV; SiIV at half depth)"),
    "strong_line": (200.0, 1500.0, "rest-frame equivalent width, Å ([OIII]5007, else [NeV]3426)"),
    "dead_segment": (20.0, 300.0, "observed-frame width set to zero, Å"),
    "calibration_jump": (0.05, 0.30, "fractional scale |k−1| of one arm"),
    "cosmic_ray": (5.0, 50.0, "spike height per native pixel, σ_pixel"),
    "broad_balmer": (10.0, 300.0, "broad Hα rest-frame equivalent width, Å (Hβ at 1/3)"),
}
INJECTION_KINDS: tuple[str, ...] = tuple(AMPLITUDE_RANGES)

#: Nuisance ranges.
BAL_WIDTH_KMS = (2_000.0, 10_000.0)
BAL_ONSET_KMS = (0.0, 5_000.0)
NARROW_FWHM_KMS = (200.0, 600.0)
BROAD_FWHM_KMS = (2_000.0, 6_000.0)
CR_NPIX = (1, 3)

CIV_A, SIIV_A = 1549.06, 1396.76
OIII_A, NEV_A = 5008.24, 3426.84
HA_A, HB_A, MGII_A = 6564.61, 4862.68, 2799.49


def draw_amplitudes(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n amplitudes for kind, log-uniform over AMPLITUDE_RANGES[kind] (units in that table)."""
    lo, hi, _ = AMPLITUDE_RANGES[kind]
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))


def _edges(wave_bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(wave_bins, dtype=np.float64)
    return w - BIN_WIDTH_A / 2, w + BIN_WIDTH_A / 2


def box_fraction(lo: np.ndarray, hi: np.ndarray, wave_bins: np.ndarray) -> np.ndarray:
    """Fraction (N,496) of each 12.8 Å bin covered by the observed interval [lo, hi] (Å)."""
    e0, e1 = _edges(wave_bins)
    lo = np.asarray(lo, dtype=np.float64)[:, None]
    hi = np.asarray(hi, dtype=np.float64)[:, None]
    fr = np.clip((np.minimum(hi, e1) - np.maximum(lo, e0)) / BIN_WIDTH_A, 0.0, 1.0)
    fr[fr > 1.0 - 1e-9] = 1.0  # fully covered bins exactly (no 1e-14 rounding residue)
    return fr


def gaussian_bin_profile(center: np.ndarray, sigma: np.ndarray, wave_bins: np.ndarray) -> np.ndarray:
    """Bin-averaged unit-flux Gaussian (N,496) in Å⁻¹ (multiply by a line flux in flux·Å)."""
    e0, e1 = _edges(wave_bins)
    c = np.asarray(center, dtype=np.float64)[:, None]
    s = np.asarray(sigma, dtype=np.float64)[:, None]
    return (ndtr((e1 - c) / s) - ndtr((e0 - c) / s)) / BIN_WIDTH_A


def _local_continuum(flux: np.ndarray, wave_bins: np.ndarray, center: np.ndarray, half: float = 300.0) -> np.ndarray:
    """Median flux within ±half Å of center (per spectrum); falls back to median|flux| when ≤0."""
    w = np.asarray(wave_bins, dtype=np.float64)
    m = np.abs(w[None, :] - center[:, None]) < half
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows → NaN → fallback below
        cont = np.nanmedian(np.where(m, flux, np.nan), axis=1)
    glob = np.median(np.abs(flux), axis=1)
    glob = np.where(glob > 0, glob, 1.0)
    return np.where(np.isfinite(cont) & (cont > 0.05 * glob), cont, glob)


def _covered(lam: np.ndarray, margin: float = 20.0) -> np.ndarray:
    return (lam > WAVE_MIN_A + margin) & (lam < WAVE_MAX_A - margin)


def inject(
    flux: np.ndarray,
    ivar: np.ndarray,
    z: np.ndarray,
    wave_bins: np.ndarray,
    kind: str,
    amplitude: np.ndarray | float,
    rng: np.random.Generator,
    spectype: np.ndarray | None = None,
    return_params: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Copy of normalised flux (N,496) with one `kind` anomaly per spectrum at the given amplitude (AMPLITUDE_RANGES units).

    ``ivar`` is the binned inverse variance in the same normalised units (used by
    ``cosmic_ray`` only and never modified), ``z`` the redshift per spectrum, ``wave_bins`` the
    496 bin-centre wavelengths (Å, ``binned_wavelength()``), ``spectype`` optional (``bal``).

    Kinds: ``bal`` (CIV trough blueward of CIV at depth A plus SiIV at A/2, width 2,000–10,000
    km/s, onset 0–5,000 km/s; non-QSO spectra or troughs outside 3600–9824 Å get a generic trough
    of the same velocity width at a random observed position); ``strong_line`` (Gaussian,
    FWHM 200–600 km/s, rest EW A at [OIII]5007 if covered, else [NeV]3426, else a random
    observed position); ``dead_segment`` (observed [lo, lo+A] Å set to 0, lo random);
    ``calibration_jump`` (one random arm × (1 ± A)); ``cosmic_ray`` (module doc);
    ``broad_balmer`` (broad Hα EW A and Hβ EW A/3, FWHM 2,000–6,000 km/s; if neither is covered,
    z ≳ 1.0, broad MgII2800 at EW A/3, else broad CIV1549 at EW A/3). EWs are relative to the local continuum (median within ±300 Å).
    """
    if kind not in AMPLITUDE_RANGES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {INJECTION_KINDS}")
    f = np.array(flux, dtype=np.float64, copy=True)
    ivar = np.asarray(ivar, dtype=np.float64)
    n = f.shape[0]
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), (n,))
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), (n,)).copy()
    w = np.asarray(wave_bins, dtype=np.float64)
    params: dict[str, Any] = {"kind": kind, "amplitude": amp}

    if kind == "bal":
        width = rng.uniform(*BAL_WIDTH_KMS, size=n)
        onset = rng.uniform(*BAL_ONSET_KMS, size=n)
        hi = CIV_A * (1 + z) * (1 - onset / C_KMS)
        lo = CIV_A * (1 + z) * (1 - (onset + width) / C_KMS)
        is_qso = np.ones(n, bool) if spectype is None else (
            np.char.upper(np.char.strip(np.asarray(spectype).astype(str))) == "QSO")
        in_grid = (lo > WAVE_MIN_A) & (hi < WAVE_MAX_A)
        qso_mode = is_qso & in_grid
        # Generic trough: same velocity width, centred at a random observed wavelength.
        centre = rng.uniform(WAVE_MIN_A + 300, WAVE_MAX_A - 300, size=n)
        half = centre * width / C_KMS / 2
        lo = np.where(qso_mode, lo, centre - half)
        hi = np.where(qso_mode, hi, centre + half)
        f *= 1.0 - amp[:, None] * box_fraction(lo, hi, w)
        s_hi = SIIV_A * (1 + z) * (1 - onset / C_KMS)
        s_lo = SIIV_A * (1 + z) * (1 - (onset + width) / C_KMS)
        s_lo, s_hi = np.where(qso_mode, s_lo, 0.0), np.where(qso_mode, s_hi, 0.0)
        f *= 1.0 - 0.5 * amp[:, None] * box_fraction(s_lo, s_hi, w)
        params.update(lo_a=lo, hi_a=hi, siiv_lo_a=s_lo, siiv_hi_a=s_hi, width_kms=width,
                      onset_kms=onset, qso_mode=qso_mode)
    elif kind == "strong_line":
        fwhm = rng.uniform(*NARROW_FWHM_KMS, size=n)
        l_oiii, l_nev = OIII_A * (1 + z), NEV_A * (1 + z)
        centre = np.where(_covered(l_oiii), l_oiii,
                          np.where(_covered(l_nev), l_nev, rng.uniform(WAVE_MIN_A + 100, WAVE_MAX_A - 100, size=n)))
        line = np.where(_covered(l_oiii), "OIII5007", np.where(_covered(l_nev), "NeV3426", "generic"))
        sigma = centre * fwhm / C_KMS / 2.3548
        cont = _local_continuum(f, w, centre)
        line_flux = amp * (1 + z) * cont
        f += line_flux[:, None] * gaussian_bin_profile(centre, sigma, w)
        params.update(center_a=centre, sigma_a=sigma, line=line, line_flux=line_flux, continuum=cont)
    elif kind == "dead_segment":
        lo = rng.uniform(WAVE_MIN_A, WAVE_MAX_A - amp)
        hi = lo + amp
        f *= 1.0 - box_fraction(lo, hi, w)
        params.update(lo_a=lo, hi_a=hi)
    elif kind == "calibration_jump":
        arm_idx = rng.integers(0, 3, size=n)
        sign = rng.choice([-1.0, 1.0], size=n)
        factor = 1.0 + sign * amp
        arm_of_bin = np.concatenate([np.full(sl.stop - sl.start, i) for i, sl in enumerate(arm_bin_slices().values())])
        sel = arm_of_bin[None, :] == arm_idx[:, None]
        f = np.where(sel, f * factor[:, None], f)
        params.update(arm=np.array(ARM_NAMES)[arm_idx], factor=factor)
    elif kind == "cosmic_ray":
        npix = rng.integers(CR_NPIX[0], CR_NPIX[1] + 1, size=n)
        good = (ivar > 0) & np.isfinite(ivar)
        u = np.where(good, rng.random(f.shape), -1.0)
        b = np.argmax(u, axis=1)
        has = good.any(axis=1)
        iv = ivar[np.arange(n), b]
        sigma_bin = np.where(has, 1.0 / np.sqrt(np.where(iv > 0, iv, 1.0)), 0.0)
        inc = amp * npix * sigma_bin / 4.0  # = A·σ_pixel·npix/16 with σ_pixel = 4·σ_bin
        f[np.arange(n), b] += inc
        params.update(bin=b, npix=npix, sigma_bin=sigma_bin, increment=inc)
    elif kind == "broad_balmer":
        fwhm = rng.uniform(*BROAD_FWHM_KMS, size=n)
        added = np.zeros(n, bool)
        for lam0, frac in ((HA_A, 1.0), (HB_A, 1.0 / 3.0)):
            c = lam0 * (1 + z)
            cov = _covered(c)
            sig = c * fwhm / C_KMS / 2.3548
            cont = _local_continuum(f, w, c)
            lf = np.where(cov, amp * frac * (1 + z) * cont, 0.0)
            f += lf[:, None] * gaussian_bin_profile(c, sig, w)
            added |= cov
        fallback = {}
        for name, lam0 in (("mgii", MGII_A), ("civ", CIV_A)):
            c = lam0 * (1 + z)
            use = ~added & _covered(c)
            cont = _local_continuum(f, w, c)
            lf = np.where(use, amp / 3.0 * (1 + z) * cont, 0.0)
            f += lf[:, None] * gaussian_bin_profile(c, c * fwhm / C_KMS / 2.3548, w)
            added |= use
            fallback[name] = use
        params.update(fwhm_kms=fwhm, balmer=~(fallback["mgii"] | fallback["civ"]) & added, **fallback)
    out = f.astype(np.asarray(flux).dtype if np.asarray(flux).dtype.kind == "f" else np.float32)
    return (out, params) if return_params else out


def choose_hosts(kind: str, spectype: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of n host spectra for kind (BAL troughs: QSOs when there are ≥ 10); rows repeat only when too few."""
    spectype = np.asarray(spectype).astype(str)
    pool = np.arange(spectype.size)
    if kind == "bal":
        qso = np.flatnonzero(np.char.upper(np.char.strip(spectype)) == "QSO")
        pool = qso if qso.size >= 10 else pool
    if pool.size == 0:
        return pool  # no spectra: no trials
    return rng.choice(pool, size=n, replace=pool.size < n)


def injected_snr(clean_flux: np.ndarray, injected_flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Noise-limited S/N of each injection (N,): sqrt(Σ ivar·(injected − clean)²) over bins with ivar > 0.

    This is the significance a matched filter would give the injected signal if the model fitted
    the clean spectrum exactly (to within the noise) and the filter had the injected shape: an
    upper bound on what a reconstruction-residual score can reach. A generic detector does not know
    the shape or position; a search over ~500 positions × ~10 widths at FPR 1% needs ≈ 4.6σ per
    trial, hence the default S/N ≥ 5 of :func:`detectability_ceiling` (a known template at a known
    position would need only ≈ 3.6σ for 90% recovery at 1% FPR).
    """
    d = np.asarray(injected_flux, dtype=np.float64) - np.asarray(clean_flux, dtype=np.float64)
    iv = np.asarray(ivar, dtype=np.float64)
    good = (iv > 0) & np.isfinite(iv) & np.isfinite(d)
    return np.sqrt(np.sum(np.where(good, iv * d * d, 0.0), axis=1))


def detectability_ceiling(snr: np.ndarray, kinds: np.ndarray, amplitudes: np.ndarray,
                          min_snr: float = 5.0, max_fpr: float = 0.01) -> dict[str, dict[str, float]]:
    """Per kind (+ "overall"): share of injections with noise-limited S/N ≥ min_snr, and the Neyman–Pearson bound.

    ``frac_detectable``: share with S/N ≥ ``min_snr``, roughly what a search over unknown
    positions and widths can reach with a perfect model. ``np_bound``: mean Φ(S/N − z₁₋ₐ), with
    z₁₋ₐ the one-sided Gaussian quantile at FPR ``max_fpr`` (2.33 at 1%). That is the recovery of the
    likelihood-ratio test that knows each injection's exact signal, given a perfect model and
    Gaussian noise. By the Neyman–Pearson lemma no detector at that FPR recovers more. Each comes
    for all amplitudes and for the strong half, as in :func:`recovery_report` (amplitude ≥ the
    geometric midpoint of AMPLITUDE_RANGES).
    """
    snr = np.asarray(snr, dtype=np.float64)
    kinds = np.asarray(kinds).astype(str)
    amps = np.asarray(amplitudes, dtype=np.float64)
    mid = np.array([np.sqrt(AMPLITUDE_RANGES[x][0] * AMPLITUDE_RANGES[x][1]) if x in AMPLITUDE_RANGES else np.inf
                    for x in kinds])  # per injection; unknown kinds are never "strong"
    power = ndtr(snr - ndtri(1.0 - max_fpr))
    out: dict[str, dict[str, float]] = {}
    for k in list(dict.fromkeys(kinds.tolist())) + ["overall"]:
        m = np.ones(kinds.shape, bool) if k == "overall" else kinds == k
        strong = m & (amps >= mid)

        def mean(x: np.ndarray, sel: np.ndarray) -> float:
            return float(np.mean(x[sel])) if sel.any() else float("nan")

        out[k] = {
            "n": int(m.sum()),
            "frac_detectable": mean(snr >= min_snr, m),
            "frac_detectable_strong_half": mean(snr >= min_snr, strong),
            "np_bound": mean(power, m),
            "np_bound_strong_half": mean(power, strong),
            "median_snr": float(np.median(snr[m])) if m.any() else float("nan"),
            "min_snr": float(min_snr),
            "max_fpr": float(max_fpr),
        }
    return out


# --------------------------------------------------------------------------------------------
# Recovery report


def roc_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC AUC (probability a positive outscores a negative, ties ½) via the Mann–Whitney U statistic."""
    neg = np.asarray(neg, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    neg, pos = np.nan_to_num(neg, nan=-np.inf), np.nan_to_num(pos, nan=-np.inf)
    n0, n1 = neg.size, pos.size
    if n0 == 0 or n1 == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    return float(u / (n0 * n1))


def threshold_at_fpr(clean_scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Smallest clean-score value t with fraction(clean > t) ≤ max_fpr (score units)."""
    s = np.sort(np.nan_to_num(np.asarray(clean_scores, dtype=np.float64), nan=-np.inf))
    if s.size == 0:
        return float("nan")
    k = int(np.ceil((1.0 - max_fpr) * s.size)) - 1
    return float(s[min(max(k, 0), s.size - 1)])


def _completeness(amp: np.ndarray, detected: np.ndarray, n_bins: int, log: bool) -> dict[str, list[float]]:
    if amp.size == 0:
        return {"amplitude": [], "recovery": [], "n": []}
    x = np.log(amp) if log else amp
    edges = np.quantile(x, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
    amps, rec, cnt = [], [], []
    for b in range(n_bins):
        m = idx == b
        if m.sum() == 0:
            continue
        centre = np.median(x[m])
        amps.append(float(np.exp(centre) if log else centre))
        rec.append(float(detected[m].mean()))
        cnt.append(int(m.sum()))
    return {"amplitude": amps, "recovery": rec, "n": cnt}


def _amp50(curve: dict[str, list[float]], log: bool) -> tuple[float, str]:
    a = np.asarray(curve["amplitude"], dtype=np.float64)
    r = np.asarray(curve["recovery"], dtype=np.float64)
    if a.size == 0:
        return float("nan"), "none"
    if r[0] >= 0.5:
        return float(a[0]), "upper_limit"
    above = np.nonzero(r >= 0.5)[0]
    if above.size == 0:
        return float("nan"), "not_reached"
    j = int(above[0])
    x0, x1 = (np.log(a[j - 1]), np.log(a[j])) if log else (a[j - 1], a[j])
    t = (0.5 - r[j - 1]) / (r[j] - r[j - 1])
    x = x0 + t * (x1 - x0)
    return float(np.exp(x) if log else x), "interpolated"


def recovery_report(
    clean_scores: np.ndarray,
    injected_scores: np.ndarray,
    kinds: np.ndarray,
    amplitudes: np.ndarray,
    threshold: float = 5.0,
    max_fpr: float = 0.01,
    n_amp_bins: int = 6,
) -> dict[str, dict[str, Any]]:
    """Per-kind recovery at threshold, FPR on clean, ROC AUC, strong-half recovery, recovery at FPR≤1%, amplitude at 50%.

    Keys: each kind plus ``"overall"``. "Strong half": amplitudes at or above the geometric
    midpoint of AMPLITUDE_RANGES[kind] (the median of the injected amplitudes for unknown kinds).
    The completeness curve bins amplitudes into ``n_amp_bins`` equal-count bins (log-spaced for
    known kinds) and ``amplitude_50`` interpolates linearly (in log amplitude) to recovery 0.5 at
    ``threshold``; ``amplitude_50_status`` says whether it was interpolated, is an upper limit
    (the weakest bin already ≥ 50%) or was not reached.
    """
    clean = np.nan_to_num(np.asarray(clean_scores, dtype=np.float64), nan=-np.inf)
    inj = np.nan_to_num(np.asarray(injected_scores, dtype=np.float64), nan=-np.inf)
    kinds = np.asarray(kinds).astype(str)
    amps = np.asarray(amplitudes, dtype=np.float64)
    fpr = float(np.mean(clean > threshold)) if clean.size else float("nan")
    t1 = threshold_at_fpr(clean, max_fpr)
    fpr1 = float(np.mean(clean > t1)) if clean.size else float("nan")
    report: dict[str, dict[str, Any]] = {}
    groups = [(k, kinds == k) for k in dict.fromkeys(kinds.tolist())] + [("overall", np.ones(kinds.shape, bool))]
    for k, m in groups:
        s, a = inj[m], amps[m]
        det = s > threshold
        known = k in AMPLITUDE_RANGES
        if known:
            lo, hi, unit = AMPLITUDE_RANGES[k]
            mid = float(np.sqrt(lo * hi))
        else:
            unit, mid = "", float(np.median(a)) if a.size else float("nan")
        strong = a >= mid
        entry: dict[str, Any] = {
            "n": int(m.sum()),
            "threshold": float(threshold),
            "recovery": float(det.mean()) if det.size else float("nan"),
            "fpr": fpr,
            "auc": roc_auc(clean, s),
            "recovery_strong_half": float(det[strong].mean()) if strong.any() else float("nan"),
            "strong_half_min_amplitude": mid,
            "threshold_fpr1": t1,
            "fpr_at_threshold_fpr1": fpr1,
            "recovery_at_fpr1": float(np.mean(s > t1)) if s.size else float("nan"),
        }
        if k != "overall":
            use_log = known or bool(np.all(a > 0))
            curve = _completeness(a, det, n_amp_bins, log=use_log)
            a50, status = _amp50(curve, log=use_log)
            entry.update(amplitude_unit=unit, completeness=curve, amplitude_50=a50, amplitude_50_status=status)
        report[k] = entry
    return report

