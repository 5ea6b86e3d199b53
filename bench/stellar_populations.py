"""Stellar-population speed and accuracy: the fast path (s/galaxy/core, CPU-hours for 10 million galaxies,
bias/scatter/coverage on held-out simulated galaxies, the real iron galaxy).

    .venv/bin/python bench/stellar_populations.py [--heldout 900] [--calibrate 500] [--model PATH] [--seed 7]

Held-out galaxies: BC03 delayed-τ galaxies from a red/blue/starburst mixture (`simulate.draw_population`,
"mixed", not the library's prior), BGS/LRG/ELG-like redshifts and magnitudes, the mock's DESI noise curves
(`sources.mock.instrument.noise_sigma`, bright 300 s / dark 1000 s) and Legacy-Surveys-like photometric errors,
preprocessed by the pipeline's own `preprocess`. The calibration set is drawn the same way with another seed.
S/N is per 0.8 Å pixel (median over the 496 bins of flux·√ivar, divided by √16), as the targets table's.
Bagpipes: `--bagpipes N [--bagpipes-only] [--bagpipes-full] [--bagpipes-pool]` fits the N highest-S/N delayed-τ
galaxies of the mock survey's first pixels (with truth) and the real iron galaxy, one fit at a time, and prints
CPU s per galaxy per core, CPU-hours for 10 million galaxies and the posteriors against truth.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np

#: (fraction, z range, normalising band index in BAND_NAMES, magnitude range, program) per tracer.
TRACERS = {"BGS": (0.5, (0.03, 0.45), 1, (14.5, 19.0), "bright"), "LRG": (0.3, (0.4, 1.0), 2, (17.5, 20.5), "dark"),
           "ELG": (0.2, (0.6, 1.5), 0, (20.5, 23.0), "dark")}
EXPTIME_S = {"bright": 300.0, "dark": 1000.0}
#: Photometric 1σ = frac·|f| + floor per band (nanomaggies), as the mock's FIBERMAP.
PHOT_FRAC = np.array([0.02, 0.02, 0.02, 0.05, 0.05])
PHOT_FLOOR = np.array([0.08, 0.08, 0.08, 0.5, 1.0])
REAL_COADD = Path(__file__).resolve().parents[1] / "../shared/data/desi-real/iron/tiles/cumulative/80613/20210324" \
    / "coadd-4-80613-thru20210324.fits"


def heldout_set(n: int, seed: int, kind: str = "mixed"):
    """Simulated galaxies through the DESI-like noise model: (CalibrationSet, per-pixel S/N, tracer names)."""
    from desi_assets.science.preprocess import preprocess
    from desi_assets.science.stellar_populations import fast, simulate
    from desi_assets.science.wavelength import ARMS
    from desi_assets.sources.mock import instrument as I

    rng = np.random.default_rng(seed)
    names = list(TRACERS)
    tr = rng.choice(len(names), n, p=[TRACERS[k][0] for k in names])
    z, mag = np.empty(n), np.empty(n)
    band = np.array([TRACERS[names[t]][2] for t in tr])
    for i, k in enumerate(names):
        m = tr == i
        z[m] = rng.uniform(*TRACERS[k][1], m.sum())
        mag[m] = rng.uniform(*TRACERS[k][3], m.sum())
    p = simulate.draw_population(rng, z, kind)
    sim = simulate.simulate_galaxies(p, z, np.full(n, 10.0))
    scale = 10 ** (-0.4 * (mag - 22.5)) / sim["phot"][np.arange(n), band]
    fiberfrac = np.clip(rng.normal(0.55, 0.1, n), 0.2, 0.75)
    truth = dict(sim["truth"])
    truth["logmass"] = truth["logmass"] + np.log10(scale)
    truth["sfr"] = truth["sfr"] * scale
    phot0 = sim["phot"] * scale[:, None]
    sig_p = PHOT_FRAC[None, :] * np.abs(phot0) + PHOT_FLOOR[None, :]
    phot = phot0 + rng.standard_normal(phot0.shape) * sig_p
    arms = {}
    texp = np.array([EXPTIME_S[TRACERS[names[t]][4]] for t in tr])
    for a, arm in ARMS.items():
        model = sim["arms"][a] * (scale * fiberfrac)[:, None]
        sig = np.empty_like(model)
        for prog in EXPTIME_S:
            m = np.array([TRACERS[names[t]][4] == prog for t in tr])
            if m.any():
                sig[m] = I.noise_sigma(model[m], arm.wavelength(), a, prog, texp[m])
        arms[a] = (model + rng.standard_normal(model.shape) * sig, 1 / sig**2, None)
    pp = preprocess(arms)
    flux = pp.flux * pp.norm[:, None]
    ivar = pp.ivar / pp.norm[:, None] ** 2
    snr = np.median(flux * np.sqrt(ivar), axis=1) / 4.0
    cal = fast.CalibrationSet(flux, ivar, z, phot, 1 / sig_p**2, truth)
    return cal, snr, np.array(names)[tr]


def time_fast(model, data, n: int = 200) -> dict[str, float]:
    """Seconds per galaxy per core (this process, BLAS pinned to 1 thread) on n held-out galaxies."""
    from desi_assets.science.stellar_populations import fast

    sl = slice(0, min(n, len(data.z)))
    t0 = time.process_time()
    w0 = time.perf_counter()
    res = fast.fit_fast(model, data.flux[sl], data.ivar[sl], data.z[sl], data.phot[sl], data.phot_ivar[sl])
    cpu = (time.process_time() - t0) / len(data.z[sl])
    wall = (time.perf_counter() - w0) / len(data.z[sl])
    return {"cpu_s_per_galaxy": cpu, "wall_s_per_galaxy": wall, "median_cost_s": float(np.median(res["cost_s"])),
            "cpu_hours_10M": cpu * 1e7 / 3600}


def accuracy(model, data, snr, snr_min: float = 10.0) -> dict:
    """Bias/scatter of p50 and 68/95% coverage per parameter: all ok rows and S/N > snr_min."""
    from desi_assets.science.stellar_populations import coverage as cov
    from desi_assets.science.stellar_populations import fast

    res = fast.fit_fast(model, data.flux, data.ivar, data.z, data.phot, data.phot_ivar)
    ok = np.array([s.startswith("ok") for s in res["fit_status"]])
    kinds = [str(s).split(":")[0] for s in res["fit_status"]]
    out = {"n": len(ok), "n_ok": int(ok.sum()), "statuses": {k: kinds.count(k) for k in sorted(set(kinds))}}
    for label, m in (("all", ok), (f"snr>{snr_min:g}", ok & (snr > snr_min))):
        rows = {}
        for p in fast.PARAMS:
            t = data.truth[p][m]
            logp = p in ("sfr", "age_mw", "zmet")
            f = (lambda x: np.log10(np.maximum(x, 1e-4))) if p == "sfr" else (np.log10 if logp else (lambda x: x))
            bs = cov.bias_scatter(f(t), f(res[f"{p}_p50"][m]))
            rows[p] = {"n": int(m.sum()), "bias": float(bs["bias"][0]), "scatter": float(bs["scatter"][0]),
                       "cov68": cov.coverage(t, res[f"{p}_p16"][m], res[f"{p}_p84"][m]),
                       "cov95": cov.coverage(t, res[f"{p}_p2_5"][m], res[f"{p}_p97_5"][m])}
        out[label] = rows
    return out


def tension_check(model, n_each: int = 150, seed: int = 99, snr_bin: float = 40.0) -> dict:
    """Completeness and purity of fast.tension_flag for frosted and quenched galaxies among ordinary delayed-τ ones
    (noiseless rest-frame Dn4000/HδA as the indices; spectra with S/N snr_bin per bin, 2% photometry)."""
    from desi_assets.science.stellar_populations import fast, simulate, sps

    rng = np.random.default_rng(seed)
    n = 3 * n_each
    z = rng.uniform(0.05, 0.5, n)
    p = simulate.draw_population(rng, z, "mixed")
    kind = np.repeat(np.array(["delayed_tau", "frosted", "quenched"]), n_each)
    tmax = fast.universe_age_gyr(z) - 0.05
    wa = sps.sfh_weights(p["tstart_gyr"], p["tau_gyr"])
    fr, qu = kind == "frosted", kind == "quenched"
    ts_old = rng.uniform(0.6, 0.95, n) * tmax
    wa[fr] = sps.sfh_weights_frosted(ts_old[fr], rng.uniform(0.3, 1.5, fr.sum()),
                                     np.exp(rng.uniform(np.log(0.01), np.log(0.3), fr.sum())),
                                     rng.uniform(0.02, 0.1, fr.sum()))
    qa = rng.uniform(0.3, 2.0, qu.sum())
    wa[qu] = sps.sfh_weights_quenched(np.maximum(ts_old[qu], qa + 1.0), rng.uniform(2.0, 8.0, qu.sum()), qa)
    sim = simulate.simulate_galaxies(p, z, np.full(n, 10.5), fiberfrac=0.5, age_weights=wa)
    flux, _ = simulate.bin_arms(sim["arms"])
    sig = np.median(flux, axis=1, keepdims=True) / snr_bin * np.ones_like(flux)
    flux = flux + rng.standard_normal(flux.shape) * sig
    ph, phi = simulate.phot_noise(rng, sim["phot"])
    res = fast.fit_fast(model, flux, 1 / sig**2, z, ph, phi)
    flag = fast.tension_flag(res["age_mw_p50"], res["age_mw_p16"], res["age_mw_p84"], sim["dn4000"],
                             sim["hdelta_a"], model=model)
    odd = kind != "delayed_tau"
    out = {"n_flagged": int(flag.sum()),
           "completeness": float(flag[odd].mean()), "purity": float(odd[flag].mean()) if flag.any() else float("nan"),
           "false_positive_rate": float(flag[~odd].mean())}
    for k in ("frosted", "quenched"):
        out[f"completeness_{k}"] = float(flag[kind == k].mean())
        t = sim["truth"]["age_mw"][kind == k]
        out[f"age_bias_dex_{k}"] = float(np.median(np.log10(res["age_mw_p50"][kind == k] / t)))
        out[f"age_cov68_{k}"] = float(np.mean((res["age_mw_p16"][kind == k] <= t) & (t <= res["age_mw_p84"][kind == k])))
    return out


def real_galaxy(model) -> dict | None:
    """Fast-path posteriors of the real iron BGS galaxy (../shared/data), read and preprocessed by the pipeline."""
    from desi_assets.science.preprocess import preprocess
    from desi_assets.science.stellar_populations import fast, photometry
    from desi_assets.sources.reader import read_coadd

    if not REAL_COADD.exists():
        return None
    c = read_coadd(REAL_COADD)
    pp = preprocess({a: (c.arms[a].flux, c.arms[a].ivar, c.arms[a].mask) for a in ("b", "r", "z")})
    t = c.targets
    phot = np.stack([t[f"flux_{b.lower()}"].to_numpy() for b in photometry.BAND_NAMES], 1)
    phot_ivar = np.stack([t[f"flux_ivar_{b.lower()}"].to_numpy() for b in photometry.BAND_NAMES], 1)
    flux, ivar = pp.flux * pp.norm[:, None], pp.ivar / pp.norm[:, None] ** 2
    res = fast.fit_fast(model, flux, ivar, t["z"].to_numpy(), phot, phot_ivar)
    so = fast.fit_fast(model, flux, ivar, t["z"].to_numpy(), None, None)
    # Dn4000 / HδA as the physics layer measures them (full-resolution merged brz grid)
    from desi_assets.science.physics.indices import measure_indices
    from desi_assets.science.physics.spectra import combine_arms
    from desi_assets.science.wavelength import combined_wavelength

    fl, iv = combine_arms({a: c.arms[a].flux for a in "brz"}, {a: c.arms[a].ivar for a in "brz"},
                          {a: c.arms[a].mask for a in "brz"})
    ix = measure_indices(combined_wavelength(), fl, iv, t["z"].to_numpy())
    dn, hd = ix.value["dn4000"], ix.value["hdelta_a"]
    idx_age, idx_sig = fast.dn4000_hdelta_age(dn, hd, model=model, return_scatter=True)
    flag = fast.tension_flag(res["age_mw_p50"], res["age_mw_p16"], res["age_mw_p84"], dn, hd, model=model)
    out = {"targetid": int(t["targetid"][0]), "z": float(t["z"][0]), "fit_status": str(res["fit_status"][0]),
           "chi2_dof": float(res["chi2_dof"][0]), "chi2_per_band": float(res["chi2_per_band"][0]),
           "cost_s": float(res["cost_s"][0]), "dn4000": float(dn[0]), "hdelta_a": float(hd[0]),
           "index_age_gyr": float(idx_age[0]), "index_age_scatter_dex": float(idx_sig[0]), "tension": bool(flag[0]),
           "spectrum_only_status": str(so["fit_status"][0])}
    for p in fast.PARAMS:
        out[p] = [round(float(res[f"{p}_{q}"][0]), 4) for q in fast.QUANTILE_KEYS]
        out[f"{p}_spectrum_only"] = [round(float(so[f"{p}_{q}"][0]), 4) for q in fast.QUANTILE_KEYS]
    return out


def _print_accuracy(acc: dict) -> None:
    print(f"  statuses: {acc['statuses']}")
    for label in [k for k in acc if k.startswith(("all", "snr"))]:
        print(f"  [{label}]  param     n   bias    scatter  cov68  cov95")
        for p, r in acc[label].items():
            print(f"    {p:9s} {r['n']:5d} {r['bias']:+.3f}  {r['scatter']:.3f}   {r['cov68']:.3f}  {r['cov95']:.3f}")


# ---------------------------------------------------------------- Bagpipes (helper sp-bagpipes)

def bagpipes_mock_inputs(n: int, pixels: int = 2, spectra_scale: float = 0.3, *, config=None,
                         indices=None, targetids=None):
    """The n highest-S/N delayed-τ galaxies of the first mock pixels (sources.mock.survey), with truth: (inputs, truths).

    With `targetids`, those GALAXY rows instead (any sfh_kind, in the order given; n and the S/N ranking unused);
    `config` (a MockSurveyConfig) and `indices` (pixel indices) replace the `pixels`/`spectra_scale` survey.
    """
    from desi_assets.science.stellar_populations import bagpipes_fit as bp
    from desi_assets.science.stellar_populations import photometry
    from desi_assets.sources.mock.survey import MockSurveyConfig, simulate_healpix

    config = config or MockSurveyConfig(n_pixels=pixels, spectra_scale=spectra_scale)
    wanted = None if targetids is None else {int(x) for x in targetids}
    cands = []
    for idx in range(config.n_pixels) if indices is None else indices:
        sim = simulate_healpix(config, idx)
        t = sim.truth
        wave = np.concatenate([sim.arms[a]["wave"] for a in "brz"])
        flux = np.concatenate([sim.arms[a]["flux"] for a in "brz"], axis=1)
        ivar = np.concatenate([sim.arms[a]["ivar"] * (sim.arms[a]["mask"] == 0) for a in "brz"], axis=1)
        fm = sim.fibermap
        phot = np.stack([fm[f"FLUX_{b}"] for b in photometry.BAND_NAMES], 1)
        phot_ivar = np.stack([fm[f"FLUX_IVAR_{b}"] for b in photometry.BAND_NAMES], 1)
        tid = np.asarray(fm["TARGETID"])
        snr = np.median(flux * np.sqrt(ivar), axis=1)
        for i, row in enumerate(t.iter_rows(named=True)):
            if row["spectype"] != "GALAXY":
                continue
            if wanted is None and (row["sfh_kind"] != "delayed_tau" or row["anomaly_class"]):
                continue
            if wanted is not None and int(row["targetid"]) not in wanted:
                continue
            j = int(np.flatnonzero(tid == row["targetid"])[0])
            truth = {"logmass": row["logmass"], "sfr": row["sfr"], "age_mw": row["age_gyr"],
                     "dust_av": row["av"], "zmet": row["zmet_zsun"], "tracer": row["tracer"],
                     "snr": float(snr[j]), "sfh_kind": row["sfh_kind"]}
            cands.append((bp.GalaxyInput(int(row["targetid"]), float(row["z"]), wave, flux[j], ivar[j],
                                         phot[j], phot_ivar[j]), truth))
        del sim
    if wanted is not None:
        pos = {c[0].targetid: k for k, c in enumerate(cands)}
        order = [pos[int(x)] for x in targetids if int(x) in pos]
    else:
        order = bp.select_priority(np.array([c[1]["snr"] for c in cands]), n)
    return [cands[i][0] for i in order], [cands[i][1] for i in order]


def bagpipes_real_input():
    """The real iron BGS galaxy (../shared/data) as a Bagpipes input, read by the one reader (None if absent)."""
    from desi_assets.science.stellar_populations import bagpipes_fit as bp
    from desi_assets.science.stellar_populations import photometry
    from desi_assets.sources.reader import read_coadd

    if not REAL_COADD.exists():
        return None
    c = read_coadd(REAL_COADD)
    t = c.targets
    wave = np.concatenate([c.arms[a].wave for a in "brz"])
    flux = np.concatenate([c.arms[a].flux[0] for a in "brz"])
    ivar = np.concatenate([c.arms[a].ivar[0] * (c.arms[a].mask[0] == 0) for a in "brz"])
    phot = np.array([t[f"flux_{b.lower()}"][0] for b in photometry.BAND_NAMES], dtype=np.float64)
    phot_ivar = np.array([t[f"flux_ivar_{b.lower()}"][0] for b in photometry.BAND_NAMES], dtype=np.float64)
    return bp.GalaxyInput(int(t["targetid"][0]), float(t["z"][0]), wave, flux, ivar, phot, phot_ivar)


def bagpipes_bench(n_mock: int, full: bool, pool: bool) -> None:
    """Bagpipes speed (CPU s per galaxy per core, CPU-hours for 10 million) and accuracy on mock + real galaxies."""
    import dataclasses

    from desi_assets.science.stellar_populations import bagpipes_fit as bp

    demo = bp.BagpipesSettings(timeout_s=900)
    fuller = dataclasses.replace(demo, n_live=400, n_networks=4, bin_factor=4, rest_range_a=(3600.0, 8000.0),
                                 fit_veldisp=True, timeout_s=1800)
    inputs, truths = bagpipes_mock_inputs(n_mock)
    real = bagpipes_real_input()
    if real is not None:
        inputs, truths = inputs + [real], truths + [None]
    for label, st, n in (("demo", demo, len(inputs)),) + ((("fuller", fuller, 1),) if full else ()):
        inputs_, truths_ = inputs[:n], truths[:n]  # the fuller settings on the first (brightest) galaxy only
        print(f"Bagpipes [{label}] n_live {st.n_live}, n_networks {st.n_networks}, bin x{st.bin_factor}, rest "
              f"{st.rest_range_a}, nebular {('log U free' if st.fit_logu else f'log U {st.logu}') if st.nebular else 'off'}, veldisp "
              f"{'free' if st.fit_veldisp else st.veldisp_kms}, noise scaling {st.fit_noise_scaling}; one fit at a time")
        t0 = time.perf_counter()
        res = bp.fit_bagpipes_many(inputs_, st, workers=1)
        wall = time.perf_counter() - t0
        cpu = np.array([r.extra.get("cpu_s", np.nan) for r in res])
        for r, tr in zip(res, truths_):
            name = "real iron" if tr is None else f"mock {tr['tracer']} S/N {tr['snr']:.1f}"
            print(f"  {r.targetid} ({name}): {r.fit_status}, {r.cost_s:.0f} s wall, "
                  f"{r.extra.get('cpu_s', float('nan')):.0f} s CPU, {r.n_like} calls, {r.extra.get('n_bins')} bins, "
                  f"bands {r.extra.get('bands')}")
            for p in bp.PARAMS:
                q = [r.percentiles[f"{p}_{k}"] for k in ("p16", "p50", "p84")]
                t = "" if tr is None else f"   truth {tr[p]:.3f}  {'IN' if q[0] <= tr[p] <= q[2] else 'out'}"
                print(f"    {p:8s} p16/50/84 = {q[0]:.3f} {q[1]:.3f} {q[2]:.3f}{t}")
        ok = np.isfinite(cpu)
        med = float(np.median(cpu[ok])) if ok.any() else float("nan")
        print(f"  [{label}] {len(res)} fits in {wall:.0f} s wall; median {med:.0f} s CPU per galaxy per core; "
              f"10 million galaxies: {med * 1e7 / 3600:,.0f} CPU-hours")
        if tr_ok := [(r, t) for r, t in zip(res, truths_) if t is not None and r.fit_status == "ok"]:
            cov = {p: float(np.mean([r.percentiles[f"{p}_p16"] <= t[p] <= r.percentiles[f"{p}_p84"]
                                     for r, t in tr_ok])) for p in bp.PARAMS}
            dm = [r.percentiles["logmass_p50"] - t["logmass"] for r, t in tr_ok]
            da = [np.log10(r.percentiles["age_mw_p50"] / t["age_mw"]) for r, t in tr_ok]
            print(f"  [{label}] mock: logmass p50 − truth {np.round(dm, 3).tolist()} dex, log age ratio "
                  f"{np.round(da, 3).tolist()} dex; truth inside [p16, p84]: {cov}")
    if pool:
        two = inputs[:2]
        t0 = time.perf_counter()
        res = bp.fit_bagpipes_many(two, demo, workers=2)
        print(f"Bagpipes 2-worker pool, {len(two)} galaxies: {time.perf_counter() - t0:.0f} s wall "
              f"(statuses {[r.fit_status for r in res]}, per fit {[round(r.cost_s) for r in res]} s)")


def main() -> None:
    from desi_assets.science.stellar_populations import fast

    ap = argparse.ArgumentParser()
    ap.add_argument("--heldout", type=int, default=1600)
    ap.add_argument("--calibrate", type=int, default=0, help="calibration galaxies (0: use the defaults)")
    ap.add_argument("--model", type=Path, default=None, help="a saved FastModel to reuse instead of building")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--save", type=Path, default=None, help="write the calibrated model here")
    ap.add_argument("--snr-min", type=float, default=10.0)
    ap.add_argument("--bagpipes", type=int, default=0, help="Bagpipes on this many mock galaxies (+ the real one)")
    ap.add_argument("--bagpipes-only", action="store_true", help="skip the fast path")
    ap.add_argument("--bagpipes-full", action="store_true", help="also the fuller (slower) Bagpipes settings")
    ap.add_argument("--bagpipes-pool", action="store_true", help="also time the 2-worker pool on 2 galaxies")
    args = ap.parse_args()
    if args.bagpipes_only:
        bagpipes_bench(args.bagpipes, args.bagpipes_full, args.bagpipes_pool)
        return

    t0 = time.perf_counter()
    c0 = time.process_time()
    model = fast.FastModel.load(args.model) if args.model else fast.build_fast_model(fast.FastSettings())
    print(f"model {model.version}: {model.n_models} models, K={model.coeffs.shape[1]}; "
          f"{'loaded' if args.model else 'built'} in {time.perf_counter() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU")
    held, snr, tracer = heldout_set(args.heldout, args.seed)
    print(f"held-out: {len(snr)} galaxies, S/N per pixel median {np.median(snr):.1f}, "
          f"{int((snr > args.snr_min).sum())} above {args.snr_min:g}; tracers "
          f"{ {k: int((tracer == k).sum()) for k in TRACERS} }")
    print("with the model's settings (FastSettings defaults are the calibrated values):")
    _print_accuracy(accuracy(model, held, snr, args.snr_min))
    if args.calibrate:
        cal, _, _ = heldout_set(args.calibrate, args.seed + 1000)
        t1 = time.perf_counter()
        model = fast.calibrate(model, cal)
        s = model.settings
        print(f"calibrated on {args.calibrate} galaxies in {time.perf_counter() - t1:.0f} s: spec_floor {s.spec_floor}, "
              f"temperature {s.temperature}, kernel_scale {s.kernel_scale}  (calibration-set coverage "
              f"{ {k: round(v, 3) for k, v in model.calibration.items() if 'cov' in k} })")
        if args.save:
            model.save(args.save)
        print("after calibration, held-out:")
        _print_accuracy(accuracy(model, held, snr, args.snr_min))
    sp = time_fast(model, held)
    print(f"fast path speed: {sp['cpu_s_per_galaxy']:.4f} s CPU per galaxy per core "
          f"({sp['wall_s_per_galaxy']:.4f} s wall); 10 million galaxies: {sp['cpu_hours_10M']:.0f} CPU-hours")
    print(f"tension flag (fit age vs Dn4000/HδA age): {tension_check(model)}")
    real = real_galaxy(model)
    if real is None:
        print("real iron galaxy: ../shared/data absent, skipped")
    else:
        print(f"real iron galaxy {real['targetid']} z={real['z']:.4f}: status {real['fit_status']}, "
              f"chi2/dof {real['chi2_dof']:.2f}, chi2/band {real['chi2_per_band']:.1f}, {real['cost_s']:.3f} s; "
              f"Dn4000 {real['dn4000']:.3f} HdA {real['hdelta_a']:.2f} -> index age {real['index_age_gyr']:.2f} Gyr "
              f"(± {real['index_age_scatter_dex']:.2f} dex), tension {real['tension']}; spectrum-only status "
              f"{real['spectrum_only_status']}")
        for p in fast.PARAMS:
            print(f"    {p:9s} p2.5/16/50/84/97.5 = {real[p]}   spectrum only: {real[p + '_spectrum_only']}")

    if args.bagpipes:
        bagpipes_bench(args.bagpipes, args.bagpipes_full, args.bagpipes_pool)


if __name__ == "__main__":
    main()
