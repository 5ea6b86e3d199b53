"""All three science cases in one process (what `make demo` runs): python -m examples --lakehouse L --out DIR."""

from examples import green_pea_neighbours, green_valley_environment, red_misfits
from examples.common import parse_args

if __name__ == "__main__":
    a = parse_args(__doc__)
    for case in (green_pea_neighbours, green_valley_environment, red_misfits):
        print(f"--- examples.{case.__name__.rsplit('.', 1)[-1]}", flush=True)
        print(case.main(a.lakehouse, a.out), flush=True)
