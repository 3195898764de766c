"""Command-line entry point: ``bayesneuro demo``."""

from __future__ import annotations

import argparse
import sys

from .infer import METHODS


def main(argv: list[str] | None = None) -> int:
    """Run the ``bayesneuro`` command line."""
    parser = argparse.ArgumentParser(prog="bayesneuro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a small population, fit it and print a summary")
    demo.add_argument("--method", choices=METHODS, default="nuts")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--fast", action="store_true", help="smaller sampler settings")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(method=args.method, seed=args.seed, progress=not args.quiet, fast=args.fast)
    return 0


if __name__ == "__main__":
    sys.exit(main())
