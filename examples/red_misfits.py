"""Red mis-fits: objects whose stellar-population model disagrees with their indices (old by Dn4000, young by model).

Without stellar_populations, the index-against-lines tension is used instead: red by Dn4000 yet with strong Hα or
[OIII] emission. Run: python -m examples.red_misfits [--lakehouse lakehouse] [--out examples/figures]
"""

from __future__ import annotations

import desi_assets.ard as ard
from examples.common import mock_truth, need, out_path, parse_args

#: Dn4000 above which a spectrum is "red" (quiescent), and the model age (Gyr) below which it is "young".
RED_DN4000 = 1.6
YOUNG_AGE_GYR = 2.0
STRONG_EW_A = 10.0


def main(lakehouse: str | None = None, out: str = "examples/figures") -> dict:
    """Run the case; returns the number of tension objects and, with mock truth, what they recover."""
    db = ard.connect(lakehouse)
    if not need(db, ["dn4000"], "red mis-fits (Dn4000 from spectral_indices)"):
        return {"skipped": "dn4000"}
    if db.query("age_p50 is not null", columns=["age_p50"], limit=1).height:
        expr, kind = f"primary and dn4000 > {RED_DN4000} and age_p50 < {YOUNG_AGE_GYR}", "model-against-index"
    elif need(db, ["ew_halpha"], "the index-against-lines fallback"):
        print("stellar_populations not materialized: using the index-against-lines tension instead")
        expr = f"primary and dn4000 > {RED_DN4000} and (ew_halpha > {STRONG_EW_A} or ew_oiii_5007 > {STRONG_EW_A})"
        kind = "index-against-lines"
    else:
        return {"skipped": "age_p50 and ew_halpha"}
    misfits = db.query(expr)
    red = db.query(f"primary and dn4000 > {RED_DN4000}", columns=["targetid"]).height
    print(f"{kind} tension: {misfits.height} of {red} red (Dn4000 > {RED_DN4000}) galaxies")
    result = {"kind": kind, "misfits": misfits.height, "red": red}
    truth = mock_truth(db.lakehouse.root)
    label = next((c for c in ("population", "galaxy_class", "quenched") if truth is not None and c in truth.columns),
                 None)
    if label is None:
        print("the mock's truth has no frosted/quenched label: recovery not scored")
    ard.quenching_diagram(db.query("primary and dn4000 > 0"), path=out_path(out, "red_misfits_plane.png"))
    if misfits.height:
        ard.plot_spectrum(int(misfits["targetid"][0]), path=out_path(out, "red_misfit_example.png"), db=db)
    return result


if __name__ == "__main__":
    a = parse_args(__doc__)
    print(main(a.lakehouse, a.out))
