"""`desi-ard query | spectrum | release | export`: the ard API on the command line (logic outside defs/).

Errors a user can cause print one line `<command>: <reason>` and exit 1 (no traceback).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _common(p: argparse.ArgumentParser, release: bool = True) -> None:
    p.add_argument("--lakehouse", default=None, help="lakehouse root or URI (default $DESI_ARD_LAKEHOUSE or ./lakehouse)")
    if release:
        p.add_argument("--release", default=None, help="read this named release instead of the latest state")


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def add_query(p: argparse.ArgumentParser) -> None:
    """Arguments of `query`."""
    p.add_argument("expr", nargs="?", default=None, help="filter, e.g. \"z > 0.1 and spectype == 'GALAXY'\", or "
                                                         "a SQL SELECT over catalog")
    p.add_argument("--columns", default=None, help="comma-separated columns to return")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.add_argument("--format", choices=["table", "csv", "parquet"], default="table")
    p.add_argument("--out", default=None, help="output file (csv/parquet; default stdout for csv)")
    _common(p)


def add_spectrum(p: argparse.ArgumentParser) -> None:
    """Arguments of `spectrum`."""
    p.add_argument("targetid", type=int)
    p.add_argument("--png", default=None, help="save the plot (arms, models, lines) to this PNG")
    p.add_argument("--coadd-key", default=None, help="this coadd instead of the primary one")
    _common(p)


def add_release(p: argparse.ArgumentParser) -> None:
    """Arguments of `release`."""
    p.add_argument("name", help="release name, e.g. dr1-v1")
    p.add_argument("--replace", action="store_true", help="move an existing release of that name")
    p.add_argument("--no-checks", action="store_true", help="skip the catalog gates (manifest records 'not run')")
    _common(p, release=False)


def add_export(p: argparse.ArgumentParser) -> None:
    """Arguments of `export`."""
    p.add_argument("--format", choices=["fits", "parquet"], default="fits")
    p.add_argument("--columns", default=None, help="comma-separated columns (default all)")
    p.add_argument("--where", default=None, help="filter expression (as for query)")
    p.add_argument("--out", required=True, help="output file")
    _common(p)


def _connect(args):
    from desi_assets import ard

    return ard.connect(args.lakehouse, getattr(args, "release", None))


def run_query(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Print (or write) the rows matching the expression."""
    import polars as pl

    from desi_assets.ard import ArdError

    try:
        df = _connect(args).query(args.expr, columns=_columns(args.columns), limit=args.limit)
    except ArdError as exc:
        say(f"query: {exc}")
        return 1
    if args.format == "parquet":
        if not args.out:
            say("query: --format parquet needs --out FILE")
            return 1
        df.write_parquet(args.out)
        say(f"wrote {df.height} rows to {args.out}")
    elif args.format == "csv":
        text = df.select([c for c in df.columns if not isinstance(df.schema[c], pl.List)]).write_csv(args.out)
        if text is not None:
            say(text.rstrip("\n"))
        else:
            say(f"wrote {df.height} rows to {args.out}")
    else:
        with pl.Config(tbl_rows=min(max(df.height, 1), 50), tbl_cols=12, tbl_width_chars=160):
            say(str(df))
    return 0


def run_spectrum(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Summarise a spectrum (per arm: pixels, λ range, median flux and S/N); optionally save its plot."""
    import numpy as np

    from desi_assets.ard import ArdError

    try:
        db = _connect(args)
        s = db.get_spectrum(args.targetid, coadd_key=args.coadd_key, models=bool(args.png))
    except ArdError as exc:
        say(f"spectrum: {exc}")
        return 1
    say(f"TARGETID {s['targetid']}  coadd {s['coadd_key']}  {s['spectype']}  z = {s['z']}")
    for arm, a in s["arms"].items():
        good = a["ivar"] > 0
        snr = np.median(a["flux"][good] * np.sqrt(a["ivar"][good])) if good.any() else float("nan")
        say(f"  {arm}: {a['wave'].size} px  {a['wave'][0]:.1f}-{a['wave'][-1]:.1f} Å  median flux "
            f"{np.median(a['flux']):.3g}  median S/N {snr:.2f}  masked {(a['mask'] != 0).mean():.1%}")
    if s["models"]:
        say("  models: " + ", ".join(s["models"]))
    if args.png:
        from desi_assets.plots_catalog import plot_spectrum

        plot_spectrum(s, True, args.png)
        say(f"wrote {args.png}")
    return 0


def run_release(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Pin the current table versions as a named release and print its manifest summary."""
    from desi_assets.storage.lakehouse import LakehouseResource, default_root
    from desi_assets.storage.release import ReleaseError, make_release

    try:
        m, made = make_release(LakehouseResource(root=args.lakehouse or default_root()), args.name,
                               replace=args.replace, run_checks=not args.no_checks)
    except (ReleaseError, ValueError) as exc:
        say(f"release: {exc}")
        return 1
    say(f"release {args.name}: {'made' if made else 'exists (kept; --replace moves it)'}  {m['path']}")
    for t, e in m["tables"].items():
        say(f"  {t:<24} version {e['version']:>5}  rows {e['rows']}")
    say(f"  models: {m['models']}  code: {m['code_version']}  catalog gates passed: {m['checks']['passed']}")
    return 0


def run_export(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Write the catalog (of a release) as FITS with TUNITn, or Parquet."""
    from desi_assets.ard import ArdError, export

    try:
        n = export(_connect(args), args.out, args.format, _columns(args.columns), args.where)
    except ArdError as exc:
        say(f"export: {exc}")
        return 1
    say(f"wrote {n} rows to {args.out} ({args.format})")
    return 0


#: Subcommand -> (help, add_arguments, run).
COMMANDS = {
    "query": ("catalog rows matching an expression (seed syntax, SQL WHERE or SELECT)", add_query, run_query),
    "spectrum": ("one TARGETID's native spectrum (and its plot with --png)", add_spectrum, run_spectrum),
    "release": ("pin the current table versions as a named release", add_release, run_release),
    "export": ("catalog (of a release) as FITS with units, or Parquet", add_export, run_export),
}


def register(sub, say: Callable[[str], None]) -> None:
    """Add the ard subcommands to a `desi-ard` sub-parser set."""
    for name, (help_text, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add(p)
        p.set_defaults(fn=lambda a, run=run: run(a, say=say))
