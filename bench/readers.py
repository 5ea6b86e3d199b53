"""Reader throughput, spectra/s: our `read_coadd` vs. DESI's `desispec.io.read_spectra`, on the same files.

    .venv/bin/python bench/readers.py                  # real files + a 2-pixel mock (DESI density), 5 repeats
    .venv/bin/python bench/readers.py --pixels 4 --repeat 3 --no-real

Files: every spectra-bearing file in ../shared/data/desi-real that desispec reads (skipped when absent),
and a mock survey written into a temp dir (`write_mock_survey`, seed 1). Readers, each timed on a
warm page cache (one untimed pass first), the median of --repeat passes:
  ours              read_coadd(path) as ingest calls it (redrock joined, per-target LSF)
  ours file-LSF     read_coadd(path, lsf_per_target=False): one LSF per file from 16 sampled RESOLUTION rows
  desispec          read_spectra(path) (every HDU, RESOLUTION matrices built in full)
  desispec -res     read_spectra(path, skip_hdus={"RESOLUTION"}): the closest like-for-like
Needs the `reference` extra (pip install -e '.[reference]'). Figures only; no asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DESI_LOGLEVEL", "WARNING")
REAL = REPO.parent / "shared" / "data" / "desi-real"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def real_files() -> list[Path]:
    """Spectra-bearing real files desispec reads (≥1 spectrum); redrock files excluded."""
    from desispec.io import read_spectra

    out = []
    for p in sorted(REAL.rglob("*.fits")) if REAL.is_dir() else []:
        if p.name.startswith("redrock"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if read_spectra(str(p)).num_spectra() > 0:
                out.append(p)
    return out


def readers() -> dict:
    """Reader name → callable(path) returning the number of spectra read."""
    from desispec.io import read_spectra

    from desi_assets.sources.reader import read_coadd

    return {
        "ours": lambda p: read_coadd(p).nspec,
        "ours file-LSF": lambda p: read_coadd(p, lsf_per_target=False).nspec,
        "desispec": lambda p: read_spectra(str(p)).num_spectra(),
        "desispec -res": lambda p: read_spectra(str(p), skip_hdus={"RESOLUTION"}).num_spectra(),
    }


def time_reader(read, files: list[Path], repeat: int) -> tuple[int, float]:
    """(spectra per pass, median seconds per pass) over `files`, after one untimed warm-up pass."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(read(p) for p in files)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            sum(read(p) for p in files)
            times.append(time.perf_counter() - t0)
    return n, statistics.median(times)


def bench(label: str, files: list[Path], repeat: int) -> None:
    say(f"\n{label}: {len(files)} files")
    say(f"  {'reader':<14} {'spectra':>8} {'s/pass':>8} {'spectra/s':>10}")
    rates = {}
    for name, read in readers().items():
        n, dt = time_reader(read, files, repeat)
        rates[name] = n / dt
        say(f"  {name:<14} {n:>8} {dt:>8.3f} {n / dt:>10,.0f}")
    say(f"  ours / desispec: {rates['ours'] / rates['desispec']:.1f}x;"
        f" ours / desispec -res: {rates['ours'] / rates['desispec -res']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=2, help="mock pixels at DESI density (0: no mock)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-real", action="store_true", help="skip the real files")
    args = ap.parse_args(argv)
    try:
        import desispec  # noqa: F401
    except ImportError:
        say("desispec is not installed: pip install -e '.[reference]'")
        return 1

    if not args.no_real:
        files = real_files()
        if files:
            bench(f"real DESI files ({REAL})", files, args.repeat)
        else:
            say(f"no real files under {REAL}")
    if args.pixels > 0:
        from desi_assets.sources.mock import MockSurveyConfig, write_mock_survey

        with tempfile.TemporaryDirectory(prefix="bench-readers-") as tmp:
            t0 = time.perf_counter()
            paths = write_mock_survey(Path(tmp), MockSurveyConfig(n_pixels=args.pixels, seed=1))
            mb = sum(p.stat().st_size for p in paths) / 1e6
            say(f"\nmock: {args.pixels} pixels written in {time.perf_counter() - t0:.0f} s ({mb:,.0f} MB)")
            bench("mock coadds", paths, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
