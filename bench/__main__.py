"""``python -m bench [--out DIR] [--quick] [--only SECTION]``: run the benchmarks.

Each benchmark prints its table and writes JSON under ``--out``:

- ``inference.json``: pipeline vs raw engine calls, engines side by side, peak RSS (#3);
- ``delta.json``: patch size and time, ours vs bsdiff4 / hdiffpatch / zstd --patch-from /
  xdelta3 / zstd -19 (#4);
- ``download.json``: bytes on the wire and time of a download cut every 256 KiB (#4);
- ``swap.json``: frames offered vs served and the worst inter-frame gap while updates are
  staged and swapped at 30 fps (#4);
- ``shadow.json``: production latency/throughput with a shadow candidate on vs off (#6);
- ``store.json``: sample-store inserts vs a raw LMDB put, top-1,000 of 100,000, frame path with
  the store on vs off (#5);
- ``replay.json``: replay throughput (1 and 2 worker processes) vs the device pipeline's own
  frames/s on one core (#14);
- ``soak.json``: a simulated fleet (10,000 devices polling every 60 s + 5 uploads/s) against the
  hub on SQLite, on PostgreSQL + S3, and two replicas with one killed, beside a bare aiohttp
  endpoint (#15);
- ``training.json``: training throughput of our loop vs a plain torch loop on the same model
  (classification, detection), and the Optuna search's overhead (#13);
- ``demo.json``: ``leanloop demo`` wall time per phase against its ≤ 5-minute goal (#18);
- ``hil.json``: the whole loop (enrol, install, uploads, feedback, a delta update) with real
  device processes in network namespaces behind 256 kbit/s / 500 ms / lossy links vs unshaped:
  time to converge, bytes on the wire, samples lost (#17);
- ``active.json``: labels margin, k-centre core-set, cluster-margin and class-balanced margin
  (``trainer.selection``) need to reach random's accuracy at the budget (400 labels; the
  textures also 800), as a ratio of random's labels, on the real MNIST digits and on texture
  patches of scikit-image's photographs, a convnet / texture-descriptor learner refitted each
  round, 3 seeds (#5, #13; docs/active-learning.md).

Ratios are against anchors measured in the same run; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def _inference(out: Path, quick: bool) -> int:
    from bench.inference import run_all

    run_all(out, quick=quick)
    return 0


def _delta(out: Path, quick: bool) -> int:
    from bench.delta import main as delta_main

    return delta_main(["--out", str(out)]) or 0


def _download(out: Path, quick: bool) -> int:
    from bench.download import main as download_main

    return download_main(["--out", str(out)]) or 0


def _store(out: Path, quick: bool) -> int:
    from bench.store import run_all as store_run_all

    store_run_all(out, quick=quick)
    return 0


def _active(out: Path, quick: bool) -> int:
    from bench.active_learning import run_all as active_run_all

    active_run_all(out, quick=quick)
    return 0


def _replay(out: Path, quick: bool) -> int:
    from bench.replay import run as replay_run

    replay_run(out, quick=quick)
    return 0


def _swap(out: Path, quick: bool) -> int:
    from bench.swap import run as swap_run

    swap_run(out, quick=quick)
    return 0


def _shadow(out: Path, quick: bool) -> int:
    from bench.shadow import run_shadow

    run_shadow(out, quick=quick)
    return 0


SOAK_MINUTES = 3.0  # --soak-minutes
SOAK_DEVICES = 10_000  # --soak-devices


def _soak(out: Path, quick: bool) -> int:
    from bench.soak import run as soak_run

    soak_run(out, quick=quick, minutes=SOAK_MINUTES, devices=SOAK_DEVICES)
    return 0


def _training(out: Path, quick: bool) -> int:
    from bench.training import run_all as training_run_all

    training_run_all(out, quick=quick)
    return 0


def _demo(out: Path, quick: bool) -> int:
    from bench.demo import run as demo_run

    demo_run(out, quick=quick)
    return 0


def _hil(out: Path, quick: bool) -> int:
    from bench.hil import run as hil_run

    hil_run(out, quick=quick)
    return 0


SECTIONS: dict[str, Callable[[Path, bool], int]] = {
    "inference": _inference,
    "delta": _delta,
    "download": _download,
    "swap": _swap,
    "shadow": _shadow,
    "store": _store,
    "active": _active,
    "replay": _replay,
    "soak": _soak,
    "training": _training,
    "demo": _demo,
    "hil": _hil,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--only", choices=tuple(SECTIONS), help="run one benchmark")
    parser.add_argument(
        "--soak-minutes", type=float, default=3.0, help="soak: minutes per hub phase (30: long)"
    )
    parser.add_argument("--soak-devices", type=int, default=10_000, help="soak: simulated devices")
    args = parser.parse_args(argv)
    global SOAK_MINUTES, SOAK_DEVICES
    SOAK_MINUTES, SOAK_DEVICES = args.soak_minutes, args.soak_devices
    rc = 0
    for name, run in SECTIONS.items():
        if args.only in (None, name):
            rc = run(args.out, args.quick) or rc
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
