"""Tension flag against the mock truth on a demo lakehouse: completeness and purity for frosted/quenched galaxies.

Recomputes fast.tension_flag from the stored posteriors and indices for several nσ, with and without the index
errors. Run after `make demo`: python bench/stellar_populations_tension.py --lakehouse lakehouse
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from desi_assets.science.stellar_populations import fast
from desi_assets.science.truth import read_truth_columns
from desi_assets.storage import stellar_populations as store
from desi_assets.storage.lakehouse import LakehouseResource


def main() -> None:
    """Print flagged counts, completeness and purity per setting."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lakehouse", default="lakehouse")
    ap.add_argument("--nsigma", default="2,3", help="comma-separated nσ values")
    a = ap.parse_args()
    lake = LakehouseResource(root=a.lakehouse)
    model = store.load_model(lake)
    keys = lake.read("stellar_populations", columns=["coadd_key"])["coadd_key"].unique().to_list()
    errs = store.fit_inputs(lake, keys).rows.select("coadd_key", "targetid", "dn4000_used_err", "hdelta_a_used_err")
    sp = lake.read("stellar_populations").filter(pl.col("fit_status").str.starts_with("ok"))
    truth = read_truth_columns(f"{a.lakehouse}/archive", ["targetid", "sfh_kind"])
    d = (sp.drop("dn4000_used_err", "hdelta_a_used_err", strict=False).join(errs, on=["coadd_key", "targetid"], how="left")
         .join(truth, on="targetid", how="left").filter(pl.col("dn4000_used").is_not_null()
                                                         & pl.col("hdelta_a_used").is_not_null()))
    odd = d["sfh_kind"].is_in(list(("frosted", "quenched"))).fill_null(False).to_numpy().astype(bool)
    col = lambda c: d[c].fill_null(np.nan).to_numpy()  # noqa: E731
    for label, kw in (("no index errors", {}),
                      ("index errors", {"dn4000_err": col("dn4000_used_err"), "hdelta_a_err": col("hdelta_a_used_err")})):
        for ns in (float(x) for x in a.nsigma.split(",")):
            f = fast.tension_flag(col("age_mw_p50"), col("age_mw_p16"), col("age_mw_p84"), col("dn4000_used"),
                                  col("hdelta_a_used"), model=model, nsigma=ns, **kw)
            tp = int((f & odd).sum())
            print(f"{label:>16}, nsigma {ns:g}: galaxies {len(f)}, flagged {int(f.sum())}, frosted/quenched "
                  f"{int(odd.sum())}, found {tp}, completeness {tp / max(odd.sum(), 1):.3f}, purity "
                  f"{tp / max(f.sum(), 1):.3f}, base rate {odd.mean():.3f}")


if __name__ == "__main__":
    main()
