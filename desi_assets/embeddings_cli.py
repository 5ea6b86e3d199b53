"""`desi-ard similar TARGETID -k 10`: nearest spectra in the current embedding table (logic outside defs/)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the `similar` command."""
    p.add_argument("targetid", type=int, help="TARGETID of the query spectrum")
    p.add_argument("-k", type=int, default=10, help="neighbours to return")
    p.add_argument("--where", default=None, help="SQL filter, e.g. \"spectype = 'GALAXY' AND z < 0.3\"")
    p.add_argument("--latent", action="store_true", help="search the BigAE 128-d latent instead of the transformer")
    p.add_argument("--lakehouse", default="lakehouse", help="lakehouse root")


def run(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Print the k nearest spectra (targetid, distance, catalogue columns); 1 with a reason if impossible."""
    import polars as pl

    from desi_assets.storage.lakehouse import LakehouseResource
    from desi_assets.storage.vectors import LATENT, VECTOR, find_similar_in_lakehouse

    try:
        out = find_similar_in_lakehouse(LakehouseResource(root=args.lakehouse), args.targetid, args.k, args.where,
                                        column=LATENT if args.latent else VECTOR)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        say(f"similar: {exc}")
        return 1
    with pl.Config(tbl_rows=max(args.k, 10), tbl_cols=12, tbl_width_chars=160):
        say(str(out))
    return 0
