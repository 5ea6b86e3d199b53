"""Green Pea hunters: one compact strong-[OIII] emitter, its 50 nearest spectra, their [OIII] EW and HδA.

Reports how many of the mock's extreme line emitters (truth anomaly_class = extreme_emitter) come back in the top 50.
Run: python -m examples.green_pea_neighbours [--lakehouse lakehouse] [--out examples/figures]
"""

from __future__ import annotations

import polars as pl

import desi_assets.ard as ard
from examples.common import mock_truth, need, out_path, parse_args


def main(lakehouse: str | None = None, out: str = "examples/figures", k: int = 50) -> dict:
    """Run the case; returns its key figures."""
    db = ard.connect(lakehouse)
    if not need(db, ["ew_oiii_5007"], "Green Pea hunters ([OIII] EW from kinematics_and_lines)"):
        return {"skipped": "ew_oiii_5007"}
    seed = db.query("spectype == 'GALAXY' and z < 0.5 and ew_oiii_5007 is not null",
                    columns=["targetid", "z", "ew_oiii_5007"]).sort("ew_oiii_5007", descending=True)
    if seed.height == 0:
        print("skipping Green Pea hunters: no galaxy with an [OIII] EW")
        return {"skipped": "no emitter"}
    tid = int(seed["targetid"][0])
    print(f"seed: TARGETID {tid}, z = {seed['z'][0]:.3f}, EW[OIII]5007 = {seed['ew_oiii_5007'][0]:.0f} Å")
    ard.plot_spectrum(tid, show_model=True, path=out_path(out, "green_pea_seed.png"), db=db)
    try:
        nb = db.find_similar(targetid=tid, k=k)
    except ard.ArdError as exc:
        print(f"skipping the neighbour search: {exc}")
        return {"seed": tid, "skipped": "embeddings"}
    props = db.query(pl.col("targetid").is_in(nb["targetid"].to_list()) & pl.col("primary"),
                     columns=["targetid", "ew_oiii_5007", "hdelta_a", "dn4000"])
    nb = nb.select("targetid", "distance").join(props, on="targetid", how="left")
    everyone = db.query("spectype == 'GALAXY'", columns=["ew_oiii_5007"])["ew_oiii_5007"].median()
    print(f"top {k}: median EW[OIII] {nb['ew_oiii_5007'].median()} Å, median HδA {nb['hdelta_a'].median()} Å "
          f"(all galaxies: {everyone} Å)")
    result = {"seed": tid, "neighbours": nb.height, "median_ew_oiii": nb["ew_oiii_5007"].median()}
    truth = mock_truth(db.lakehouse.root)
    if truth is not None and "anomaly_class" in truth.columns:
        extreme = set(truth.filter(pl.col("anomaly_class") == "extreme_emitter")["targetid"].to_list())
        hits = len(extreme & set(nb["targetid"].to_list()))
        print(f"mock extreme emitters in the top {k}: {hits} of {len(extreme)}")
        result |= {"extreme_in_top": hits, "extreme_total": len(extreme)}
    else:
        print("no mock truth next to this lakehouse: recovery of extreme emitters not scored")
    if nb.drop_nulls(["dn4000", "hdelta_a"]).height:
        ard.quenching_diagram(nb, path=out_path(out, "green_pea_neighbours.png"), color="ew_oiii_5007")
    return result


if __name__ == "__main__":
    a = parse_args(__doc__)
    print(main(a.lakehouse, a.out))
