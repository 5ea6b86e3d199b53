"""Vector search in LanceDB at survey scale: build time, p50/p95 latency at k=10 and recall@10 per index type.

Random-but-clustered vectors (Gaussian blobs around 2,000 centres), cosine distance, one `spectype`
column (70% GALAXY) for the filtered queries. Ground truth: numpy brute force over all vectors.

    .venv/bin/python bench/vector_search.py                      # 1,000,000 × 128 and 1,000,000 × 512
    .venv/bin/python bench/vector_search.py --n 200000 --dims 512 --queries 100
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import polars as pl

from desi_assets.storage import vectors as vs


def clustered(n: int, dim: int, seed: int = 0, centres: int = 2000) -> np.ndarray:
    """n unit vectors around random centres (float32)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def truth(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k row indices by cosine similarity (rows of x and q unit-norm)."""
    out = []
    for i in range(0, len(q), 16):
        s = q[i:i + 16] @ x.T
        if allowed is not None:
            s[:, ~allowed] = -np.inf
        out.append(np.argsort(-s, axis=1)[:, :k])
    return np.concatenate(out)


def run(n: int, dim: int, n_queries: int, candidates: list[vs.IndexChoice], k: int = 10) -> None:
    x = clustered(n, dim)
    rng = np.random.default_rng(1)
    spectype = np.where(rng.random(n) < 0.7, "GALAXY", np.where(rng.random(n) < 0.5, "QSO", "STAR"))
    q = x[rng.choice(n, n_queries, replace=False)] + 0.05 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t0 = time.perf_counter()
    gt = truth(x, q, k)
    gt_f = truth(x, q, k, spectype == "GALAXY")
    print(f"\n== {n:,} × {dim}-d: brute force (numpy) {1e3 * (time.perf_counter() - t0) / n_queries:.1f} ms/query")
    uri = vs.lance_uri(tempfile.mkdtemp(prefix="vbench-"))
    t0 = time.perf_counter()
    chunk = 200_000
    for i in range(0, n, chunk):
        m = min(n, i + chunk) - i
        cat = pl.DataFrame({"targetid": np.arange(i, i + m), "coadd_key": [f"c{i // chunk}"] * m, "healpix": [0] * m,
                            "survey": ["main"] * m, "program": ["dark"] * m, "spectype": spectype[i:i + m],
                            "z": np.zeros(m)})
        rows = vs.vector_rows(cat, x[i:i + m], np.zeros((m, vs.LATENT_DIM), np.float32), np.zeros(m), "bench")
        vs.write_partitions(uri, "t", rows, [f"c{i // chunk}"])
    tbl = vs.open_table(uri, "t")
    print(f"write {n:,} rows: {time.perf_counter() - t0:.1f} s")

    def measure(choice, where, ref, over=0):
        lat, rec = [], []
        for j, v in enumerate(q):
            t1 = time.perf_counter()
            ids = vs.search_ids(tbl, v, k, where=where, choice=choice, exact=choice is None, postfilter_oversample=over)
            lat.append(1e3 * (time.perf_counter() - t1))
            rec.append(len(set(ids.tolist()) & set(ref[j].tolist())) / k)
        return np.percentile(lat, 50), np.percentile(lat, 95), float(np.mean(rec))

    flat = measure(None, None, gt) if n <= 200_000 else None
    if flat:
        print(f"{'flat scan':<58} build      -  p50 {flat[0]:7.1f} ms  p95 {flat[1]:7.1f} ms  recall {flat[2]:.3f}")
    for c in candidates:
        try:
            b = vs.build_index(tbl, c)
        except Exception as exc:  # an index type that fails here is reported, not fatal
            print(f"{c.label():<58} FAILED: {exc}")
            continue
        for where, ref, tag, over in ((None, gt, "", 0), ("spectype = 'GALAXY'", gt_f, " +prefilter", 0),
                                      ("spectype = 'GALAXY'", gt_f, " +postfilter x3", 3)):
            p50, p95, r = measure(c, where, ref, over)
            print(f"{c.label() + tag:<58} build {b:6.1f} s  p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  recall@{k} {r:.3f}",
                  flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--nprobes", type=int, default=40, help="IVF partitions probed per query")
    p.add_argument("--types", nargs="+", default=["IVF_PQ", "IVF_HNSW_SQ", "IVF_FLAT"])
    a = p.parse_args()
    for dim in a.dims:
        parts = int(np.clip(np.sqrt(a.n), 16, 1024))
        cands = {"IVF_PQ": vs.IndexChoice("IVF_PQ", parts, dim // 8, nprobes=a.nprobes, refine_factor=10),
                 "IVF_HNSW_SQ": vs.IndexChoice("IVF_HNSW_SQ", max(parts // 64, 1), nprobes=max(parts // 128, 1),
                                               refine_factor=None, m=16, ef_construction=100),
                 "IVF_FLAT": vs.IndexChoice("IVF_FLAT", parts, nprobes=a.nprobes, refine_factor=None)}
        run(a.n, dim, a.queries, [cands[t] for t in a.types])


if __name__ == "__main__":
    main()
