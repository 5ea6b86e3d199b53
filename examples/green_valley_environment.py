"""Green valley, nature against nurture: the Dn4000 green valley split by web_class, compared in age or HδA.

Run: python -m examples.green_valley_environment [--lakehouse lakehouse] [--out examples/figures]
"""

from __future__ import annotations

import polars as pl

import desi_assets.ard as ard
from examples.common import need, out_path, parse_args

#: Dn4000 range of the green valley (between the star-forming and the quiescent peaks).
GREEN_VALLEY = (1.45, 1.65)
WEB_NAMES = {0: "void", 1: "sheet", 2: "filament", 3: "knot"}


def main(lakehouse: str | None = None, out: str = "examples/figures") -> dict:
    """Run the case; returns per-environment counts and medians."""
    db = ard.connect(lakehouse)
    if not need(db, ["dn4000", "web_class"], "green valley by web_class"):
        return {"skipped": "dn4000/web_class"}
    lo, hi = GREEN_VALLEY
    gv = db.query(f"primary and spectype == 'GALAXY' and dn4000 between {lo} and {hi} and web_class is not null")
    age = "age_p50" if gv["age_p50"].drop_nulls().len() else "hdelta_a"
    if age != "age_p50":
        print("stellar_populations not materialized: comparing HδA (Å) instead of age_p50")
    stats = (gv.group_by("web_class").agg(pl.len().alias("n"), pl.col(age).median().alias(f"median_{age}"),
                                          pl.col("dn4000").median().alias("median_dn4000")).sort("web_class"))
    for r in stats.iter_rows(named=True):
        print(f"{WEB_NAMES.get(r['web_class'], r['web_class']):>8}: n = {r['n']:4d}, median {age} = "
              f"{r[f'median_{age}']}, median Dn4000 = {r['median_dn4000']:.3f}")
    ard.quenching_diagram(gv, path=out_path(out, "green_valley_by_web_class.png"), color="web_class")
    return {"green_valley": gv.height, "by_web_class": stats.to_dicts(), "compared": age}


if __name__ == "__main__":
    a = parse_args(__doc__)
    print(main(a.lakehouse, a.out))
