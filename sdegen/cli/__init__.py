"""The ``sdegen`` command line.

- ``sdegen demo``: the main job on the embedded digits (train, sample, held-out bits/dim, report);
- ``sdegen train CONFIG``, ``sdegen sample RUN_DIR``, ``sdegen likelihood RUN_DIR``;
- ``sdegen ground-truth``: every solver on a 2-D mixture with its exact score, against the
  closed form.
"""

from __future__ import annotations

import argparse
import sys

from . import demo, ground_truth, run
from .config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdegen", description="Score-based generative modelling through SDEs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(sub)
    run.add_parsers(sub)
    ground_truth.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"sdegen: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
