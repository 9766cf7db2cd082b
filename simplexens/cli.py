"""The ``simplexens`` command: a thin layer of argparse over :func:`simplexens.compare.compare`.

    simplexens compare [--data digits|spirals|shapes|FILE.csv|FILE.npz] [--target COLUMN]
                       [--methods single,deep_ensemble,...] [--seeds N] [--out DIR] [--quick]
                       [--set METHOD.PARAMETER=VALUE ...] [--verbose N]

Exit codes: 0 on success, 2 on bad input (an unknown method or data set, a missing or
malformed file, a target with one class, an invalid option), with one line on stderr that
names the problem.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import __version__

__all__ = ["main"]


class _UsageError(Exception):
    """A command-line error, reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit; we report one line
        raise _UsageError(f"{self.prog}: error: {message}")


def _parser():
    from .compare import DATASETS, DEFAULT_METHODS, METHODS, OOD_SETS

    parser = _Parser(
        prog="simplexens",
        description="Loss-surface ensembles for PyTorch: compare the methods and report.",
    )
    parser.add_argument("--version", action="version", version=f"simplexens {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    cmp = commands.add_parser(
        "compare",
        help="train the methods at matched budgets; write report.md, figures, results.json",
        description="Train the methods under one protocol (cosine-scheduled modes, matched "
        "epochs_spent_, a same-budget deep-ensemble control) and evaluate them on clean data, "
        "under dataset shift (severities 1-5) and on out-of-distribution inputs.",
    )
    cmp.add_argument(
        "--data",
        default="digits",
        help=f"{', '.join(DATASETS)}, or a .csv or .npz file (default: digits)",
    )
    cmp.add_argument("--target", help="the target column of a CSV file")
    cmp.add_argument(
        "--ood",
        choices=OOD_SETS,
        default="noise",
        help="the out-of-distribution set: noise inputs, or held-out classes (the top fifth "
        "of the sorted classes, never trained on; for digits 8 and 9) (default: noise)",
    )
    cmp.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default: all); single, "
        "deep_ensemble and its same-budget control are always included",
    )
    cmp.add_argument("--seeds", type=int, default=1, help="repeats, seeds 0..N-1 (default: 1)")
    cmp.add_argument(
        "--out", default="simplexens-report", help="report folder (default: simplexens-report)"
    )
    cmp.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds (for tests and CI)"
    )
    cmp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.PARAM=VALUE",
        dest="params",
        help="an estimator parameter for one method, applied with "
        "set_params (repeatable), e.g. --set espro.volume_lambda=0.1",
    )
    cmp.add_argument("--verbose", type=int, default=1, help="0: silent; 1: progress bar (default)")
    return parser


def _run_compare(args):
    from .compare import compare, parse_param

    params = {}
    for text in args.params:
        method, name, value = parse_param(text)
        params.setdefault(method, {})[name] = value
    # The command owns its process: one torch thread per process trains these small
    # networks faster on a shared CPU (the library itself never sets the thread count).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = _compare_with(compare, args, params)
    finally:
        torch.set_num_threads(before)
    if args.verbose >= 1:
        print(f"report written to {args.out}/report.md ({results['total_seconds']:.0f} s)")


def _compare_with(compare, args, params):
    return compare(
        args.data,
        methods=args.methods,
        seeds=args.seeds,
        out=args.out,
        quick=args.quick,
        target=args.target,
        ood=args.ood,
        verbose=args.verbose,
        params=params,
    )


def main(argv=None):
    """Run the command with ``argv`` (``sys.argv[1:]`` if None); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        _run_compare(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (_UsageError, ValueError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split())
        if not isinstance(exc, _UsageError):
            message = f"simplexens: error: {message}"
        print(message, file=sys.stderr)
        return 2
    return 0
