"""Embedding inference throughput (native spectra -> SpectrumTransformer -> LanceDB), in process and through
Dagster, plus the real DESI spectra of ../shared/data/desi-real against the mock.

Needs a lakehouse where `make demo` (or the embedding jobs) has run:

    .venv/bin/python bench/embed.py --lakehouse lakehouse [--device cuda] [--skip-dagster]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from desi_assets.science.embeddings import evaluate as ev
from desi_assets.science.embeddings.train import embed_arms
from desi_assets.storage import vectors as vs
from desi_assets.storage.lakehouse import LakehouseResource

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "desi-real"


def in_process(lh: LakehouseResource, keys: list[str], device: str, batch: int) -> None:
    """Read -> embed -> BigAE latent -> LanceDB write per partition, into a scratch vector table."""
    model, version = vs.load_current_model(lh)
    model = model.to(device)
    uri = vs.lance_uri(tempfile.mkdtemp(prefix="embed-bench-"))
    t = {"read": 0.0, "embed": 0.0, "latent": 0.0, "write": 0.0}
    n = 0
    for key in keys:
        t0 = time.perf_counter()
        cat, arms = vs.read_native_spectra(lh, [key])
        t1 = time.perf_counter()
        vec, chi2, refused = embed_arms(model, arms, batch_size=batch)
        t2 = time.perf_counter()
        lat = vs.bigae_latents(lh, [key], cat)
        t3 = time.perf_counter()
        ok = refused == 0
        rows = vs.vector_rows(cat.filter(ok), vec[ok], None if lat is None else lat[ok], chi2[ok], version)
        vs.write_partitions(uri, "bench", rows, [key])
        t4 = time.perf_counter()
        for k, a, b in (("read", t0, t1), ("embed", t1, t2), ("latent", t2, t3), ("write", t3, t4)):
            t[k] += b - a
        n += len(refused)
    total = sum(t.values())
    print(f"in process ({device}, {torch.get_num_threads()} threads): {n} spectra in {total:.1f} s = "
          f"{n / total:.0f} spectra/s end to end; embedding alone {n / t['embed']:.0f} spectra/s")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))


def through_dagster(root: str, keys: list[str]) -> None:
    """The spectral_embeddings job over every partition (one run per 25 partitions), as the demo runs it."""
    import dagster as dg

    from desi_assets.definitions import build_defs
    from desi_assets.runner import ensure_dagster_home, run_partitioned

    ensure_dagster_home(root)
    defs = build_defs(root, str(Path(root) / "archive"))
    lh = LakehouseResource(root=root)
    n = lh.read("preprocessed_spectra", columns=["targetid"]).height
    with dg.DagsterInstance.get() as inst:
        r = run_partitioned(defs, "spectral_embeddings_job", keys, inst)
    print(f"through Dagster: {n} spectra, {r.runs} run(s), {r.seconds:.1f} s = {n / r.seconds:.0f} spectra/s"
          f"{' FAILED ' + str(r.failed) if r.failed else ''}")


def real_spectra(lh: LakehouseResource) -> None:
    """Embed every real coadd; refusals with reasons; χ² against the mock; probe class and z against redrock."""
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    from desi_assets.science.embeddings.tokens import REFUSALS
    from desi_assets.sources.reader import read_coadd

    if not REAL.exists():
        print("real spectra: ../shared/data/desi-real not present")
        return
    model, _ = vs.load_current_model(lh)
    uri, name, _ = vs.current_table(lh)
    mock = vs.read_vectors(uri, name, ["vector", "spectype", "z", "recon_chi2"])
    x = np.stack(mock["vector"].to_numpy())
    sc = StandardScaler().fit(x)
    probe = ev.linear_probe(sc.transform(x), mock["spectype"].to_numpy(), ev.ProbeSettings())
    zreg = KNeighborsRegressor(10).fit(sc.transform(x), mock["z"].to_numpy())
    print(f"mock reconstruction χ² per pixel: median {np.median(mock['recon_chi2'].to_numpy()):.2f}")
    for path in sorted(REAL.rglob("coadd-*.fits")):
        cf = read_coadd(path, require_all_arms=False)
        vec, chi2, codes = embed_arms(model, {a: (d.flux, d.ivar, d.mask) for a, d in cf.arms.items()})
        t = cf.targets
        for i in range(len(codes)):
            rr = (t["spectype"][i] if "spectype" in t.columns else None, t["z"][i] if "z" in t.columns else None)
            if codes[i]:
                print(f"  {path.name} row {i}: refused: {REFUSALS[int(codes[i])]}")
                continue
            v = sc.transform(vec[i:i + 1])
            print(f"  {path.name} row {i}: χ² {chi2[i]:.2f}; probe {probe.predict(v)[0]}, 10-NN z "
                  f"{zreg.predict(v)[0]:.3f}; redrock {rr[0]} z {rr[1]}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lakehouse", default="lakehouse")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--skip-dagster", action="store_true")
    a = p.parse_args()
    lh = LakehouseResource(root=a.lakehouse)
    keys = sorted(lh.read("preprocessed_spectra", columns=["coadd_key"])["coadd_key"].unique().to_list())
    in_process(lh, keys, a.device, a.batch)
    if not a.skip_dagster:
        through_dagster(a.lakehouse, keys)
    real_spectra(lh)


if __name__ == "__main__":
    main()
