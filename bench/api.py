"""The `ard` API on a generated lakehouse of >= 100 partitions: get_spectrum p50/p95, queries, cone search.

    .venv/bin/python bench/api.py                    # 120 pixels x 200 targets, reused from bench/out/api{N}x{M}
    .venv/bin/python bench/api.py --pixels 200 --per-pixel 500 --rebuild

The lakehouse is built cheaply: synthetic `targets`, `spectra` (native-resolution arrays, realistic sizes), layer
rows and the catalog are written straight through the storage layer (storage.synthetic_catalog + the catalog
join), not by ingesting FITS. Timings exclude the cold process (imports, first Delta open); figures only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"


def build(root: Path, pixels: int, per_pixel: int, seed: int = 0) -> list[str]:
    """Write the synthetic lakehouse (pixels spread over the sky, one partition each) and its catalog."""
    from desi_assets.storage import catalog as cat
    from desi_assets.storage import synthetic_catalog as sc
    from desi_assets.storage.lakehouse import LakehouseResource

    lake = LakehouseResource(root=str(root))
    rng = np.random.default_rng(seed)
    pix = np.sort(rng.choice(12 * 64**2, pixels, replace=False))
    keys = sc.write_synthetic(lake, pix.tolist(), per_pixel=per_pixel, seed=seed)
    for k in keys:
        lake.write_partitions("catalog", cat.to_catalog_rows(cat.join_partitions(lake, [k])), [k])
    return keys


def timed(fn, n: int) -> list[float]:
    """Wall times (ms) of n calls."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pixels", type=int, default=120)
    p.add_argument("--per-pixel", type=int, default=200)
    p.add_argument("--spectra", type=int, default=200, help="get_spectrum calls (random TARGETIDs)")
    p.add_argument("--repeat", type=int, default=5, help="calls per query / cone figure")
    p.add_argument("--rebuild", action="store_true")
    a = p.parse_args()
    root = OUT / f"api{a.pixels}x{a.per_pixel}"
    if a.rebuild and root.exists():
        shutil.rmtree(root)
    if not (root / "delta" / "catalog").exists():
        t0 = time.perf_counter()
        build(root, a.pixels, a.per_pixel)
        print(f"built {root} ({a.pixels} partitions x {a.per_pixel} targets) in {time.perf_counter() - t0:.0f} s")

    import desi_assets.ard as ard

    db = ard.connect(str(root))
    ids = db.query(columns=["targetid"])["targetid"].to_numpy()
    from deltalake import DeltaTable

    n_files = len(DeltaTable(db.lakehouse.table_uri("spectra")).file_uris())
    rng = np.random.default_rng(1)
    db.get_spectrum(int(ids[0]))  # warm: first Delta open + the targetid index
    picks = rng.choice(ids, a.spectra)
    it = iter(picks)
    ts = timed(lambda: db.get_spectrum(int(next(it)), models=False), a.spectra)
    print(f"lakehouse: {root}  rows {ids.size}  spectra files {n_files}")
    print(f"get_spectrum: p50 {np.percentile(ts, 50):.1f} ms  p95 {np.percentile(ts, 95):.1f} ms  (n={a.spectra}; "
          f"target p50 <= 50 ms)")
    sel = "dn4000 > 2.0 and web_class == 3 and snr_median > 10"
    tq = timed(lambda: db.query(sel, columns=["targetid", "ra", "dec", "z"]), a.repeat)
    rows = db.query(sel).height
    print(f"query selective ({sel!r}, {rows} rows): median {statistics.median(tq):.1f} ms")
    ta = timed(lambda: db.query("SELECT web_class, count(*) AS n, avg(dn4000) AS dn, avg(vdisp) AS v FROM catalog "
                                "GROUP BY web_class"), a.repeat)
    print(f"query full-column aggregate (group by web_class over {ids.size} rows): median {statistics.median(ta):.1f} ms")
    full = timed(lambda: db.query(columns=["ra", "dec"]), a.repeat)
    print(f"full scan of ra/dec for reference: median {statistics.median(full):.1f} ms")
    cat = db.query(limit=1)
    ra, dec = float(cat["ra"][0]), float(cat["dec"][0])
    tc = timed(lambda: db.cone(ra, dec, 1.0), a.repeat)
    print(f"cone(r=1 deg, {db.cone(ra, dec, 1.0).height} rows): median {statistics.median(tc):.1f} ms")
    pinned = f"healpix == {int(cat['healpix'][0])}"
    th = timed(lambda: db.query(pinned), a.repeat)
    print(f"healpix-pinned query ({pinned!r}): median {statistics.median(th):.1f} ms")


if __name__ == "__main__":
    main()
