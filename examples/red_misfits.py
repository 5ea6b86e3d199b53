"""Red mis-fits: objects whose stellar-population model disagrees with their indices (`stellar_pop_tension`).

On the mock, scored against the truth's frosted and quenched histories (`sfh_kind`). Without stellar_populations, the index-against-lines tension is used instead: red by Dn4000 yet with strong Hα or
[OIII] emission. Run: python -m examples.red_misfits [--lakehouse lakehouse] [--out examples/figures]
"""

from __future__ import annotations

import polars as pl

import desi_assets.ard as ard
from examples.common import mock_truth, need, out_path, parse_args

#: Dn4000 above which a spectrum is "red" (quiescent).
RED_DN4000 = 1.6
STRONG_EW_A = 10.0


def main(lakehouse: str | None = None, out: str = "examples/figures") -> dict:
    """Run the case; returns the number of tension objects and, with mock truth, what they recover."""
    db = ard.connect(lakehouse)
    if not need(db, ["dn4000"], "red mis-fits (Dn4000 from spectral_indices)"):
        return {"skipped": "dn4000"}
    if db.query("stellar_pop_tension is not null", columns=["stellar_pop_tension"], limit=1).height:
        expr, kind = "primary and stellar_pop_tension", "model-against-index"
    elif need(db, ["ew_halpha"], "the index-against-lines fallback"):
        print("stellar_populations not materialized: using the index-against-lines tension instead")
        expr = f"primary and dn4000 > {RED_DN4000} and (ew_halpha > {STRONG_EW_A} or ew_oiii_5007 > {STRONG_EW_A})"
        kind = "index-against-lines"
    else:
        return {"skipped": "age_p50 and ew_halpha"}
    misfits = db.query(expr)
    red = db.query(f"primary and dn4000 > {RED_DN4000}", columns=["targetid"]).height
    print(f"{kind} tension: {misfits.height} galaxies flagged ({red} red by Dn4000 > {RED_DN4000})")
    result = {"kind": kind, "misfits": misfits.height, "red": red}
    truth = mock_truth(db.lakehouse.root)
    if truth is None or "sfh_kind" not in truth.columns:
        print("no mock truth with sfh_kind here: recovery of frosted/quenched galaxies not scored")
    else:
        odd = set(truth.filter(pl.col("sfh_kind").is_in(["frosted", "quenched"]))["targetid"].to_list())
        fitted = set(db.query("primary and dn4000 > 0", columns=["targetid"])["targetid"].to_list()) & odd
        found = set(misfits["targetid"].to_list()) & fitted
        result |= {"frosted_or_quenched": len(fitted), "recovered": len(found),
                   "purity": round(len(found) / misfits.height, 3) if misfits.height else None}
        print(f"recovered {len(found)} of {len(fitted)} frosted or quenched mock galaxies with indices; "
              f"purity {result['purity']}")
    ard.quenching_diagram(db.query("primary and dn4000 > 0"), path=out_path(out, "red_misfits_plane.png"))
    if misfits.height:
        ard.plot_spectrum(int(misfits["targetid"][0]), path=out_path(out, "red_misfit_example.png"), db=db)
    return result


if __name__ == "__main__":
    a = parse_args(__doc__)
    print(main(a.lakehouse, a.out))
