"""Fast-path coverage on the demo's mock survey, without a demo: a few mock pixels simulated in memory (the demo's
survey config), turned into fit inputs the way the pipeline does (preprocess of flux/ivar/mask, redrock z and
ZWARN, FIBERMAP photometry), fitted, and compared with the truth, per parameter, with and without the galaxies
the delayed-τ prior cannot represent (frosted, quenched), and for three variants of the same galaxies:

- ``observed``: what the pipeline fits;
- ``noiseless``: the mock's noiseless model after resolution (``PixelSimulation.noiseless``: lines, no noise, no
  sky residuals, no cosmics) with the observed ivar, and the noiseless photometry with its ivar: the ceiling
  set by the model (library, lines, resolution) alone;
- ``perfect``: the same truth parameters re-made by ``simulate.simulate_galaxies`` (continuum only, no
  resolution), given the mock's noise level per bin and its photometric σ, with Gaussian noise: what a
  delayed-τ model sees when only the noise is left.

    .venv/bin/python bench/stellar_populations_mock.py [--pixels 5,6,7,1,3,11] [--model PATH] [--cache DIR]

Pixels are indices into the demo survey (MockSurveyConfig(n_pixels=12, seed=42)); 5, 6, 7 are its bright (BGS)
pixels, the rest dark (LRG + ELG). Inputs are cached under --cache (npz per pixel).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np

#: The demo's survey (desi-ard demo defaults).
DEMO_PIXELS, DEMO_SEED = 12, 42
TRUTH_KEYS = ("logmass", "sfr", "age_gyr", "av", "zmet_zsun", "tstart_gyr", "tau_gyr", "vdisp", "z", "fiberfrac",
              "dn4000", "hdelta_a", "is_starburst", "burst_age_gyr", "burst_mass_frac", "quench_age_gyr")
TRUTH_STR = ("sfh_kind", "tracer", "anomaly_class")


def pixel_inputs(index: int, cache: Path | None = None) -> dict:
    """Fit inputs of the GALAXY ZWARN = 0 rows of demo pixel `index` (observed and noiseless), plus truth."""
    f = None if cache is None else cache / f"mock-{DEMO_SEED}-{index}.npz"
    if f is not None and f.exists():
        with np.load(f, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    from desi_assets.science.preprocess import preprocess
    from desi_assets.science.stellar_populations import photometry
    from desi_assets.sources.mock.survey import MockSurveyConfig, simulate_healpix

    sim = simulate_healpix(MockSurveyConfig(n_pixels=DEMO_PIXELS, seed=DEMO_SEED), index)
    fm, rr, t = sim.fibermap, sim.redshifts, sim.truth
    tid = np.asarray(fm["TARGETID"])
    assert np.array_equal(tid, np.asarray(rr["TARGETID"])) and np.array_equal(tid, t["targetid"].to_numpy())
    spectype = np.array([str(s).strip() for s in rr["SPECTYPE"]])
    keep = (spectype == "GALAXY") & (np.asarray(rr["ZWARN"]) == 0) & (t["fiber_kind"].to_numpy() == "target")
    keep &= np.array([s == "GALAXY" for s in t["spectype"].to_list()])  # truth with SFH parameters
    arms = {a: (sim.arms[a]["flux"][keep], sim.arms[a]["ivar"][keep], sim.arms[a]["mask"][keep]) for a in "brz"}
    pre = preprocess(arms)
    noiseless = preprocess({a: (sim.noiseless[a][keep], sim.arms[a]["ivar"][keep], sim.arms[a]["mask"][keep])
                            for a in "brz"})
    out = {"flux": pre.flux * pre.norm[:, None], "ivar": pre.ivar / pre.norm[:, None] ** 2,
           "flux0": noiseless.flux * noiseless.norm[:, None], "ivar0": noiseless.ivar / noiseless.norm[:, None] ** 2,
           "z": np.asarray(rr["Z"], np.float64)[keep], "targetid": tid[keep],
           "phot": np.stack([np.asarray(fm[f"FLUX_{b}"], np.float64)[keep] for b in photometry.BAND_NAMES], 1),
           "phot_ivar": np.stack([np.asarray(fm[f"FLUX_IVAR_{b}"], np.float64)[keep]
                                  for b in photometry.BAND_NAMES], 1),
           "phot0": np.stack([t[f"phot_{b.lower()}"].to_numpy().astype(np.float64)[keep]
                              for b in photometry.BAND_NAMES], 1),
           "program": np.array(sim.program)}
    for k in TRUTH_KEYS:
        out[f"t_{k}"] = t[k].cast(float).to_numpy()[keep] if k in t.columns else np.full(keep.sum(), np.nan)
    for k in TRUTH_STR:
        out[f"t_{k}"] = np.array([str(x) if x is not None else "" for x in t[k].to_list()], dtype=object)[keep]
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, **out)
    return out


def load(pixels: list[int], cache: Path | None) -> dict:
    """pixel_inputs of several pixels, concatenated."""
    parts = [pixel_inputs(i, cache) for i in pixels]
    keys = [k for k in parts[0] if k != "program"]
    d = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    d["program"] = np.concatenate([np.full(len(p["z"]), str(p["program"])) for p in parts])
    return d


def truth_of(d: dict) -> dict[str, np.ndarray]:
    """fit_fast's PARAMS from the mock truth columns."""
    return {"logmass": d["t_logmass"], "sfr": d["t_sfr"], "age_mw": d["t_age_gyr"], "dust_av": d["t_av"],
            "zmet": d["t_zmet_zsun"]}


def perfect_variant(d: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same truth re-made with simulate.simulate_galaxies (continuum only), the mock's binned σ and
    photometric σ, Gaussian noise: (flux, ivar, phot, phot_ivar)."""
    from desi_assets.science.stellar_populations import simulate

    p = {"tstart_gyr": d["t_tstart_gyr"], "tau_gyr": d["t_tau_gyr"], "zmet": d["t_zmet_zsun"],
         "dust_av": d["t_av"], "vdisp": d["t_vdisp"]}
    from desi_assets.sources.mock import galaxies as G

    wa = G.age_weights_for(d["t_sfh_kind"], d["t_tstart_gyr"], d["t_tau_gyr"], d["t_burst_age_gyr"],
                           d["t_burst_mass_frac"], d["t_quench_age_gyr"])
    sim = simulate.simulate_galaxies(p, d["t_z"], d["t_logmass"], fiberfrac=d["t_fiberfrac"], age_weights=wa)
    flux0, _ = simulate.bin_arms(sim["arms"])
    iv = d["ivar"]
    sig = np.where(iv > 0, 1 / np.sqrt(np.where(iv > 0, iv, 1)), 0)
    flux = flux0 + rng.standard_normal(flux0.shape) * sig
    psig = 1 / np.sqrt(d["phot_ivar"])
    phot = sim["phot"] + rng.standard_normal(sim["phot"].shape) * psig
    return flux, iv, phot, d["phot_ivar"]


def coverage_rows(res: dict, truth: dict, mask: np.ndarray) -> dict:
    """Per parameter n, bias, scatter (compared space), cov68, cov95 over mask & ok."""
    from desi_assets.science.stellar_populations import coverage as cov
    from desi_assets.science.stellar_populations import fast
    from desi_assets.science.stellar_populations import validation_frames as vf

    ok = mask & np.array([str(s).startswith("ok") for s in res["fit_status"]])
    out = {"n": int(ok.sum())}
    for p in fast.PARAMS:
        t = vf.compared(p, truth[p][ok])
        q = {k: vf.compared(p, res[f"{p}_{k}"][ok]) for k in fast.QUANTILE_KEYS}
        bs = cov.bias_scatter(t, q["p50"])
        out[p] = (float(bs["bias"][0]), float(bs["scatter"][0]), cov.coverage(t, q["p16"], q["p84"]),
                  cov.coverage(t, q["p2_5"], q["p97_5"]))
    return out


def print_table(label: str, rows: dict) -> None:
    """One line per parameter."""
    print(f"  {label}: n={rows['n']}")
    for p, v in rows.items():
        if p != "n":
            print(f"    {p:8s} bias {v[0]:+.3f} scatter {v[1]:.3f} cov68 {v[2]:.3f} cov95 {v[3]:.3f}")


def print_bins(res: dict, truth: dict, snr: np.ndarray, normal: np.ndarray,
               edges=(0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 1e9)) -> None:
    """cov68 and bias per S/N bin (all kinds) per parameter."""
    from desi_assets.science.stellar_populations import fast

    print("    S/N bin        n    " + "  ".join(f"{p:>17s}" for p in fast.PARAMS) + "   (cov68 / bias)")
    for lo, hi in zip(edges[:-1], edges[1:]):
        r = coverage_rows(res, truth, (snr > lo) & (snr <= hi))
        print(f"    {lo:4.0f}-{hi:<6.0f} {r['n']:6d}    " + "  ".join(f"{r[p][2]:8.3f} {r[p][0]:+.3f}" for p in fast.PARAMS))


def main() -> None:
    from desi_assets.science.stellar_populations import fast

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", default="5,6,7,1,3,11")
    ap.add_argument("--model", type=Path, default=None, help="a saved FastModel (default: build FastSettings())")
    ap.add_argument("--prior", default=None, help="build with this FastSettings.prior instead ('broad': the earlier)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sp_mock_cache"))
    ap.add_argument("--snr-min", type=float, default=10.0)
    ap.add_argument("--variants", default="observed,noiseless,perfect")
    ap.add_argument("--save", type=Path, default=None, help="write each variant's results here (npz per variant)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    d = load([int(x) for x in a.pixels.split(",")], a.cache)
    print(f"mock inputs: {len(d['z'])} GALAXY ZWARN=0 rows from pixels {a.pixels} in {time.perf_counter() - t0:.0f} s")
    settings = fast.FastSettings() if a.prior is None else dataclasses.replace(fast.FastSettings(), prior=a.prior)
    model = fast.FastModel.load(a.model) if a.model else fast.build_fast_model(settings)
    print(f"model {model.version}: {model.summary()}")
    truth = truth_of(d)
    kind = d["t_sfh_kind"].astype(str)
    snr = fast.spectrum_snr(d["flux"], d["ivar"])
    normal = ~np.isin(kind, ("frosted", "quenched")) & (d["t_anomaly_class"].astype(str) == "")
    print(f"S/N > {a.snr_min:g}: {int((snr > a.snr_min).sum())} rows; kinds "
          f"{ {k: int(((kind == k) & (snr > a.snr_min)).sum()) for k in sorted(set(kind))} }")
    variants = {"observed": lambda: (d["flux"], d["ivar"], d["phot"], d["phot_ivar"]),
                "noiseless": lambda: (d["flux0"], d["ivar0"], d["phot0"], d["phot_ivar"]),
                "perfect": lambda: perfect_variant(d, np.random.default_rng(5))}
    for v in a.variants.split(","):
        flux, ivar, phot, phot_ivar = variants[v]()
        t1 = time.perf_counter()
        res = fast.fit_fast(model, flux, ivar, d["z"], phot, phot_ivar)
        print(f"[{v}] fitted {len(flux)} in {time.perf_counter() - t1:.0f} s; statuses "
              f"{ {s: int(n) for s, n in zip(*np.unique([str(x).split(':')[0] for x in res['fit_status']], return_counts=True))} }")
        if a.save:
            a.save.mkdir(parents=True, exist_ok=True)
            np.savez(a.save / f"{v}.npz", snr=snr, kind=kind, normal=normal, tracer=d["t_tracer"].astype(str),
                     **{k: np.asarray(x, dtype=str if k == "fit_status" else float) for k, x in res.items()},
                     **{f"truth_{k}": x for k, x in truth.items()})
        hi = snr > a.snr_min
        print_bins(res, truth, snr, normal)
        print_table(f"S/N>{a.snr_min:g} all kinds", coverage_rows(res, truth, hi))
        print_table(f"S/N>{a.snr_min:g} without frosted/quenched/anomalies", coverage_rows(res, truth, hi & normal))
        print_table("all S/N all kinds", coverage_rows(res, truth, np.ones(len(snr), bool)))


if __name__ == "__main__":
    main()
