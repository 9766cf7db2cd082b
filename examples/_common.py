"""What the example scripts share: their command line and where their pictures go."""

import argparse
import pathlib
import time


def parse(description, argv=None):
    """``--quick`` (tiny sizes, for the smoke test) and ``--out`` (the PNGs' folder)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--out", default="docs", help="folder for the PNG files")
    args = parser.parse_args(argv)
    args.out = pathlib.Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    args.start = time.perf_counter()
    return args


def save(display, path, args):
    """Write a Display's figure as a small PNG and say where."""
    display.figure_.tight_layout()
    display.figure_.savefig(path, dpi=80)
    print(f"wrote {path} ({time.perf_counter() - args.start:.0f} s since start)")
