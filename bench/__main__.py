"""``python -m bench [--out DIR] [--quick] [--only SECTION]``: run the benchmarks.

Each benchmark prints its table and writes JSON under ``--out``: ``inference.json`` (pipeline
vs raw engine calls, engines side by side, peak RSS), ``delta.json`` (patch size and time,
ours vs bsdiff4 / hdiffpatch / zstd --patch-from / xdelta3 / zstd -19), ``store.json`` (sample
store inserts vs raw LMDB, top-K, frame path with the store on vs off) and ``active.json``
(labels active learning needs vs random sampling, on real digits). Ratios are against
anchors measured in the same run; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument(
        "--only", choices=("inference", "delta", "store", "active"), help="run one benchmark"
    )
    args = parser.parse_args(argv)
    rc = 0
    if args.only in (None, "inference"):
        from bench.inference import run_all

        run_all(args.out, quick=args.quick)
    if args.only in (None, "delta"):
        from bench.delta import main as delta_main

        rc = delta_main(["--out", str(args.out)]) or rc
    if args.only in (None, "store"):
        from bench.store import run_all as store_run_all

        store_run_all(args.out, quick=args.quick)
    if args.only in (None, "active"):
        from bench.active_learning import run_all as active_run_all

        active_run_all(args.out, quick=args.quick)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
