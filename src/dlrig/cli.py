"""Command-line doors: the ``dlrig`` console script and the error handling every stage shares.

A :class:`~dlrig.errors.UserError` is printed as one line (``error: ...``) with exit status 2 and no
traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from dlrig.errors import UserError


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Call a stage's ``main`` and turn user errors into one clean line and exit status 2."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _check_params(args: argparse.Namespace) -> None:
    from dlrig.params import load_params

    load_params(args.params)
    print(f"{args.params}: ok")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlrig", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-params", help="validate params.yaml and exit")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=_check_params)
    args = parser.parse_args(argv)
    run_stage(lambda _argv: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
