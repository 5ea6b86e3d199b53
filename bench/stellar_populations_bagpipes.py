"""Bagpipes against the mock truth and against the fast path on the same demo galaxies (issue 14's validation).

Over the demo's mock pixels (MockSurveyConfig(n_pixels=12, seed=42), inputs as `stellar_populations_mock.py`
makes them: preprocess, redrock z, ZWARN = 0, FIBERMAP photometry, truth), the fast path fits every galaxy; of
those with continuum S/N > --snr-min per pixel (`fast.spectrum_snr`), ALL frosted and quenched ones are taken,
plus delayed-τ ones (no anomaly) evenly spaced in S/N rank up to --n in all; Bagpipes fits them at the demo
settings (`BagpipesSettings()`, nebular off) in 2 worker processes, on the native brz spectrum + photometry
(`stellar_populations.bagpipes_mock_inputs`) at the redrock z the fast path used. Printed per method (bagpipes,
fast on the same galaxies), per parameter, for all, delayed-τ and frosted/quenched: n, bias and robust scatter
of p50 − truth (dex for logmass/sfr/age_mw/zmet, SFR floored at 1e-3 M☉/yr as the validation does; mag for
dust_av) and coverage of [p16, p84] and [p2.5, p97.5]; the fast − Bagpipes p50 offset and scatter on the shared
subset; CPU s per galaxy per core. `--nebular N` refits the N highest-S/N selected galaxies with truth SFR ≥
--nebular-sfr-min (emission lines in the mock spectrum) with `nebular=True`, and prints the same rows and the
nebular − no-nebular p50 shift. The real iron galaxy (../shared/data/desi-real) is fitted once by both paths
(and with nebular=True when --nebular > 0).

    .venv/bin/python bench/stellar_populations_bagpipes.py [--pixels 0,...,11] [--n 30] [--nebular 0]
        [--workers 2] [--model PATH] [--cache DIR] [--save FILE.npz]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stellar_populations as spb  # noqa: E402
import stellar_populations_mock as spm  # noqa: E402

MISFIT = ("frosted", "quenched")


def select(snr: np.ndarray, kind: np.ndarray, anomaly: np.ndarray, snr_min: float, n: int) -> np.ndarray:
    """Row indices: every frosted/quenched row with S/N > snr_min, then delayed-τ (no anomaly) rows evenly spaced in
    S/N rank up to n in all (n below the misfit count: the n highest-S/N misfits); ordered by S/N, highest first."""
    hi = np.isfinite(snr) & (snr > snr_min)
    odd = np.flatnonzero(hi & np.isin(kind, MISFIT))
    odd = odd[np.argsort(-snr[odd], kind="stable")][: max(n, 0)]
    dt = np.flatnonzero(hi & (kind == "delayed_tau") & (anomaly == ""))
    dt = dt[np.argsort(-snr[dt], kind="stable")]
    k = max(0, min(n - len(odd), len(dt)))
    pick = dt[np.unique(np.round(np.linspace(0, len(dt) - 1, k)).astype(int))] if k else dt[:0]
    rows = np.concatenate([odd, pick])
    return rows[np.argsort(-snr[rows], kind="stable")]


def bagpipes_summaries(results) -> dict[str, np.ndarray]:
    """fit_fast-like dict (f"{p}_{q}" arrays, fit_status, cpu_s) from BagpipesResults."""
    from desi_assets.science.stellar_populations import fast

    out = {f"{p}_{q}": np.array([r.percentiles[f"{p}_{q}"] for r in results], np.float64)
           for p in fast.PARAMS for q in fast.QUANTILE_KEYS}
    out["fit_status"] = np.array([r.fit_status for r in results], dtype=object)
    out["cpu_s"] = np.array([r.extra.get("cpu_s", np.nan) for r in results], np.float64)
    out["cost_s"] = np.array([r.cost_s for r in results], np.float64)
    return out


def load_saved(path: Path, targetids: np.ndarray) -> tuple[dict, dict | None, list[int]]:
    """(bagpipes, nebular or None, nebular row positions) summaries from a --save file, for the same selection."""
    with np.load(path, allow_pickle=True) as z:
        if not np.array_equal(z["targetid"], targetids):
            raise SystemExit(f"{path} holds another selection; rerun with the same --pixels/--n/--snr-min")

        def part(prefix):
            out = {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix) and k != "bp_samples"}
            if "fit_status" in out:
                out["fit_status"] = out["fit_status"].astype(object)
            return out

        neb = part("neb_")
        return part("bp_"), (neb or None), [int(x) for x in z["neb_rows"]] if neb else []


def take(res: dict, rows: np.ndarray) -> dict:
    """Rows of a fit_fast result dict."""
    return {k: np.asarray(v)[rows] for k, v in res.items()}


def print_method_tables(method: str, res: dict, truth: dict, kind: np.ndarray) -> None:
    """stellar_populations_mock.coverage_rows tables: all, delayed-τ, frosted/quenched."""
    n = len(kind)
    print(f"[{method}]  (bias/scatter: dex for logmass, sfr, age_mw, zmet; mag for dust_av)")
    for label, m in (("all selected", np.ones(n, bool)), ("delayed-tau", kind == "delayed_tau"),
                     ("frosted/quenched", np.isin(kind, MISFIT))):
        spm.print_table(label, spm.coverage_rows(res, truth, m))


def agreement(a: dict, b: dict, label: str, ok: np.ndarray) -> None:
    """a − b p50 offset and robust scatter per parameter (compared space) on rows ok."""
    from desi_assets.science.stellar_populations import coverage as cov
    from desi_assets.science.stellar_populations import fast
    from desi_assets.science.stellar_populations import validation_frames as vf

    print(f"  {label}: n={int(ok.sum())}")
    for p in fast.PARAMS:
        r = cov.dex_scatter(vf.compared(p, a[f"{p}_p50"][ok]), vf.compared(p, b[f"{p}_p50"][ok]))
        unit = "mag" if p == "dust_av" else "dex"
        print(f"    {p:8s} n {r['n']:3d} offset {r['offset']:+.3f} scatter {r['scatter']:.3f} {unit}")


def is_ok(status) -> np.ndarray:
    return np.array([str(s).startswith("ok") for s in status])


def statuses(status) -> dict[str, int]:
    k = [str(s).split(":")[0] for s in status]
    return {s: k.count(s) for s in sorted(set(k))}


def print_galaxies(rows, d, snr, truth, bp: dict, fa: dict, neb: dict | None, neb_pos: dict) -> None:
    """One line per selected galaxy: p50 − truth of logmass (dex) and age (dex) for each method, statuses."""
    from desi_assets.science.stellar_populations import validation_frames as vf

    print("per galaxy: p50 − truth, logmass | log age  (bp = Bagpipes, fast, neb = Bagpipes nebular); status, CPU s")
    for j, i in enumerate(rows):
        def dd(res, k, p):
            return float(vf.compared(p, res[f"{p}_p50"][k:k + 1])[0] - vf.compared(p, truth[p][i:i + 1])[0])

        s = (f"  {d['targetid'][i]} {d['t_sfh_kind'][i]:11s} S/N {snr[i]:5.1f} log SFR "
             f"{float(vf.compared('sfr', truth['sfr'][i:i + 1])[0]):+5.2f}  bp {dd(bp, j, 'logmass'):+.3f} "
             f"{dd(bp, j, 'age_mw'):+.3f}  fast {dd(fa, j, 'logmass'):+.3f} {dd(fa, j, 'age_mw'):+.3f}")
        if neb is not None and j in neb_pos:
            k = neb_pos[j]
            s += f"  neb {dd(neb, k, 'logmass'):+.3f} {dd(neb, k, 'age_mw'):+.3f} [{neb['fit_status'][k]}]"
        print(s + f"  [{bp['fit_status'][j]}, {bp['cpu_s'][j]:.0f} s; fast {fa['fit_status'][j]}]")


def print_real(label: str, r) -> None:
    from desi_assets.science.stellar_populations import fast

    print(f"  Bagpipes {label}: {r.fit_status}, {r.cost_s:.0f} s wall, {r.extra.get('cpu_s', float('nan')):.0f} s CPU,"
          f" {r.n_like} calls, {r.extra.get('n_bins')} bins, bands {r.extra.get('bands')}")
    for p in fast.PARAMS:
        print(f"    {p:9s} p2.5/16/50/84/97.5 = {[round(r.percentiles[f'{p}_{q}'], 4) for q in fast.QUANTILE_KEYS]}")


def main() -> None:
    from desi_assets.science.stellar_populations import bagpipes_fit as bpf
    from desi_assets.science.stellar_populations import fast
    from desi_assets.sources.mock.survey import MockSurveyConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", default=",".join(str(i) for i in range(spm.DEMO_PIXELS)))
    ap.add_argument("--n", type=int, default=30, help="galaxies fitted by Bagpipes (all frosted/quenched + delayed-τ)")
    ap.add_argument("--nebular", type=int, default=0, help="also refit this many with nebular=True")
    ap.add_argument("--nebular-sfr-min", type=float, default=1.0, help="truth SFR (M☉/yr) of the nebular refits")
    ap.add_argument("--snr-min", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spec-floor", type=float, default=None, help="BagpipesSettings.spec_error_floor (default: its default)")
    ap.add_argument("--model", type=Path, default=None, help="a saved FastModel (default: build FastSettings())")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sp_mock_cache"))
    ap.add_argument("--no-real", action="store_true", help="skip the real iron galaxy")
    ap.add_argument("--save", type=Path, default=None, help="write the selected rows' results here (npz)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="Bagpipes results from a --save file instead of fitting (re-checks a new fast model)")
    a = ap.parse_args()
    pixels = [int(x) for x in a.pixels.split(",")]
    t0 = time.perf_counter()
    parts = [spm.pixel_inputs(i, a.cache) for i in pixels]
    d = spm.load(pixels, a.cache)
    pix_of = np.concatenate([np.full(len(p["z"]), i) for i, p in zip(pixels, parts)])
    print(f"mock inputs: {len(d['z'])} GALAXY ZWARN=0 rows from pixels {a.pixels} in {time.perf_counter() - t0:.0f} s")
    model = fast.FastModel.load(a.model) if a.model else fast.build_fast_model(fast.FastSettings())
    print(f"fast model {model.version}: {model.summary()}")
    truth_all = spm.truth_of(d)
    kind_all = d["t_sfh_kind"].astype(str)
    snr = fast.spectrum_snr(d["flux"], d["ivar"])
    c0, w0 = time.process_time(), time.perf_counter()
    fres = fast.fit_fast(model, d["flux"], d["ivar"], d["z"], d["phot"], d["phot_ivar"])
    fcpu = (time.process_time() - c0) / len(d["z"])
    print(f"fast path: {len(d['z'])} fitted in {time.perf_counter() - w0:.0f} s wall, {fcpu:.4f} s CPU per galaxy per "
          f"core; statuses {statuses(fres['fit_status'])}")
    hi = snr > a.snr_min
    kinds_hi = {str(k): int((hi & (kind_all == k)).sum()) for k in sorted(set(kind_all))}
    print(f"S/N > {a.snr_min:g}: {int(hi.sum())} rows; kinds {kinds_hi}"
          f"; anomaly hosts {int((hi & (d['t_anomaly_class'].astype(str) != '')).sum())}")

    rows = select(snr, kind_all, d["t_anomaly_class"].astype(str), a.snr_min, a.n)
    kind = kind_all[rows]
    print(f"selected {len(rows)}: { {str(k): int((kind == k).sum()) for k in sorted(set(kind))} }, S/N "
          f"{snr[rows].min():.1f}–{snr[rows].max():.1f}")
    neb_rows = [j for j in range(len(rows)) if truth_all["sfr"][rows[j]] >= a.nebular_sfr_min][: a.nebular]
    bres, nres, real, real_res, bwall, nwall, neb, neb_pos = [], [], None, None, 0.0, 0.0, None, {}
    if a.reuse is not None:
        bp, neb, neb_rows = load_saved(a.reuse, d["targetid"][rows])
        neb_pos = {j: k for k, j in enumerate(neb_rows)}
        print(f"Bagpipes results reused from {a.reuse} (no Bagpipes fits; the real galaxy's Bagpipes fit skipped)")
    else:
        t1 = time.perf_counter()
        inputs, _ = spb.bagpipes_mock_inputs(0, config=MockSurveyConfig(n_pixels=spm.DEMO_PIXELS, seed=spm.DEMO_SEED),
                                             indices=sorted(set(pix_of[rows].tolist())), targetids=d["targetid"][rows])
        assert [x.targetid for x in inputs] == [int(t) for t in d["targetid"][rows]], "native inputs do not match rows"
        inputs = [dataclasses.replace(x, z=float(d["z"][i])) for x, i in zip(inputs, rows)]  # the redrock z, as fast
        print(f"native Bagpipes inputs re-simulated in {time.perf_counter() - t1:.0f} s")

        real = None if a.no_real else spb.bagpipes_real_input()
        demo = bpf.BagpipesSettings(**({} if a.spec_floor is None else {"spec_error_floor": a.spec_floor}))
        print(f"Bagpipes: BagpipesSettings() n_live {demo.n_live}, n_networks {demo.n_networks}, "
              f"bin x{demo.bin_factor}, "
              f"rest {demo.rest_range_a}, spectral floor {demo.spec_error_floor}, nebular {demo.nebular}, timeout {demo.timeout_s} s; {a.workers} workers")
        t2 = time.perf_counter()
        bres = bpf.fit_bagpipes_many(inputs + ([real] if real is not None else []), demo, workers=a.workers)
        bwall = time.perf_counter() - t2
        real_res = bres[-1] if real is not None else None
        bp = bagpipes_summaries(bres[:len(rows)])
        print(f"Bagpipes: {len(bres)} fits in {bwall:.0f} s wall; statuses {statuses([r.fit_status for r in bres])}")
        for r in bres:
            if not str(r.fit_status).startswith("ok"):
                print(f"  not ok: {r.targetid}: {r.fit_status}")

        if a.nebular > 0:
            st = dataclasses.replace(demo, nebular=True)
            print(f"Bagpipes nebular=True (log U {st.logu}) on {len(neb_rows)} selected galaxies with truth SFR ≥ "
                  f"{a.nebular_sfr_min:g} M☉/yr (highest S/N first){' + the real one' if real is not None else ''}")
            t3 = time.perf_counter()
            nres = bpf.fit_bagpipes_many([inputs[j] for j in neb_rows] + ([real] if real is not None else []), st,
                                         workers=a.workers)
            nwall = time.perf_counter() - t3
            neb = bagpipes_summaries(nres[:len(neb_rows)])
            neb_pos = {j: k for k, j in enumerate(neb_rows)}
            print(f"Bagpipes nebular: {len(nres)} fits in {nwall:.0f} s wall; statuses "
                  f"{statuses([r.fit_status for r in nres])}")
            for r in nres:
                if not str(r.fit_status).startswith("ok"):
                    print(f"  not ok: {r.targetid}: {r.fit_status}")

    fa = take(fres, rows)
    truth = {p: v[rows] for p, v in truth_all.items()}
    print()
    print_galaxies(rows, d, snr, truth_all, bp, fa, neb, neb_pos)
    print()
    print_method_tables("bagpipes", bp, truth, kind)
    print_method_tables("fast (same galaxies)", fa, truth, kind)
    both = is_ok(bp["fit_status"]) & is_ok(fa["fit_status"])
    print("[fast − bagpipes] p50 on the shared subset (both ok)")
    for label, m in (("all selected", both), ("delayed-tau", both & (kind == "delayed_tau")),
                     ("frosted/quenched", both & np.isin(kind, MISFIT))):
        agreement(fa, bp, label, m)
    if neb is not None and len(neb_rows):
        nr = np.array(neb_rows)
        tn = {p: v[nr] for p, v in truth.items()}
        print_method_tables("bagpipes nebular=True", neb, tn, kind[nr])
        print_method_tables("bagpipes nebular=False (same galaxies)", take(bp, nr), tn, kind[nr])
        print_method_tables("fast (same galaxies)", take(fa, nr), tn, kind[nr])
        print("[nebular − no nebular] Bagpipes p50 shift (both ok)")
        agreement(neb, take(bp, nr), "same galaxies", is_ok(neb["fit_status"]) & is_ok(bp["fit_status"][nr]))

    cpu = np.array([r.extra.get("cpu_s", np.nan) for r in bres])
    okc = np.isfinite(cpu)
    print()
    if okc.any():
        print(f"CPU per galaxy per core, Bagpipes demo settings: median {np.median(cpu[okc]):.1f} s, mean "
              f"{np.mean(cpu[okc]):.1f} s (n={int(okc.sum())}, worker process time per fit); wall × workers / fits = "
              f"{bwall * a.workers / len(bres):.1f} s (includes worker start-up); 10 million galaxies: "
              f"{np.median(cpu[okc]) * 1e7 / 3600:,.0f} CPU-hours")
    if nres:
        nc = np.array([r.extra.get("cpu_s", np.nan) for r in nres])
        nc = nc[np.isfinite(nc)]
        if nc.size:
            print(f"CPU per galaxy per core, Bagpipes nebular=True: median {np.median(nc):.1f} s, "
                  f"mean {np.mean(nc):.1f} s (n={nc.size}); wall × workers / fits = "
                  f"{nwall * a.workers / len(nres):.1f} s")
    print(f"CPU per galaxy per core, fast path: {fcpu:.4f} s ({fcpu * 1e7 / 3600:,.0f} CPU-hours for 10 million)")

    rf = None if a.no_real else spb.real_galaxy(model)
    if rf is not None:
        print()
        print(f"real iron galaxy {rf['targetid']} z={rf['z']:.4f}")
        print(f"  fast: {rf['fit_status']}, chi2/dof {rf['chi2_dof']:.2f}, chi2/band {rf['chi2_per_band']:.1f}, "
              f"{rf['cost_s']:.3f} s; Dn4000 {rf['dn4000']:.3f} HdA {rf['hdelta_a']:.2f} -> index age "
              f"{rf['index_age_gyr']:.2f} Gyr, tension {rf['tension']}")
        for p in fast.PARAMS:
            print(f"    {p:9s} p2.5/16/50/84/97.5 = {rf[p]}")
        if real_res is not None:
            print_real("nebular off", real_res)
        if nres:
            print_real("nebular=True", nres[-1])
    else:
        print("real iron galaxy: skipped (../shared/data absent or --no-real)")

    if a.save and a.reuse is None:
        a.save.parent.mkdir(parents=True, exist_ok=True)
        samples = np.empty(len(rows), dtype=object)
        samples[:] = [r.samples for r in bres[:len(rows)]]
        extra = {f"neb_{k}": np.asarray(v, dtype=str if k == "fit_status" else float) for k, v in (neb or {}).items()}
        np.savez(a.save, targetid=d["targetid"][rows], kind=kind, snr=snr[rows], neb_rows=np.array(neb_rows, int),
                 **{f"bp_{k}": np.asarray(v, dtype=str if k == "fit_status" else float) for k, v in bp.items()},
                 **{f"fast_{k}": np.asarray(v, dtype=str if k == "fit_status" else float) for k, v in fa.items()},
                 **{f"truth_{k}": v for k, v in truth.items()}, **extra,
                 bp_samples=samples)
        print(f"saved {a.save}")


if __name__ == "__main__":
    main()
