"""Measure the C3K SSP set's resolution by cross-fitting BC03 (2.5 Å FWHM, STACK-NOTES) with C3K, per window.

    .venv/bin/python bench/physics_templates.py

pPXF's σ of an old BC03 SSP fitted with C3K templates gives FWHM_C3K = √(2.5² − (2.355 σ λ/c)²).
"""

import os

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402


def main() -> None:
    from desi_assets.science.physics.fit import FitSettings, fit_spectrum
    from desi_assets.science.physics.spectra import C_KMS
    from desi_assets.science.physics.templates import BC03_FWHM_A, load_templates

    bc = load_templates("bc03", 25.0)
    c3k = load_templates("c3k", 25.0, fwhm_a=0.0)
    lam = np.exp(bc.ln_lam)
    old = bc.flux[:, (bc.zmet == 1.0) & (bc.ages_yr > 5e9)].mean(1)  # solar, ages > 5 Gyr
    wl = np.arange(lam[0] + 5, lam[-1] - 5, 0.5)
    gal = np.interp(wl, lam, old)
    settings = FitSettings(templates="c3k", template_fwhm_a=0.0, velscale=25.0, degree=10, snr_min=0.0,
                           vdisp_start_kms=60.0)
    print(f"{'window (Å)':<14}{'σ fit (km/s)':>14}{'FWHM_C3K (Å)':>14}{'σ_C3K (km/s)':>14}")
    for lo, hi in ((3800, 4600), (4600, 5400), (5400, 6200), (6200, 7000)):
        m = (wl > lo) & (wl < hi)
        r = fit_spectrum(wl[m], gal[m], np.full(m.sum(), 1e6), np.full(m.sum(), 1e-3), 0.0, c3k, settings)
        mid = 0.5 * (lo + hi)
        fw_fit = 2.355 * r.vdisp * mid / C_KMS
        fw = np.sqrt(max(BC03_FWHM_A**2 - fw_fit**2, 0.0))
        print(f"{lo}-{hi:<9}{r.vdisp:>14.1f}{fw:>14.2f}{fw / 2.355 / mid * C_KMS:>14.1f}   ({r.status})")


if __name__ == "__main__":
    main()
