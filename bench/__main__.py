"""``python -m bench [--out DIR] [--quick]``: run the inference benchmark and print its table."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.inference import run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args(argv)
    run_all(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
