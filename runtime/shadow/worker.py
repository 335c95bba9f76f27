"""The shadow worker process: runs the candidate bundle on frames the service sends it.

Started by :class:`runtime.shadow.runner.ShadowRunner` as
``python -m runtime.shadow.worker --bundle DIR ...``. It lowers its own OS priority first
(``os.nice``), so production keeps the CPU when both want it; then it loads and verifies the
candidate, runs its golden health check, says ``ready`` (or ``load_error``) and answers one
frame at a time with the candidate's prediction. Its stdout is the protocol pipe (see
:mod:`runtime.shadow._wire`); anything a library prints goes to stderr (the device log).

A crash, a hang or an exception here only ever costs the candidate: the service watches this
process, never waits on it from the frame path, and disables the candidate when it misbehaves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.shadow.worker")
    p.add_argument("--bundle", required=True)
    p.add_argument("--backend", default="onnxruntime", help="engine preference, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nice", type=int, default=10)
    a = p.parse_args(argv)
    # The protocol owns the original stdout; fd 1 now goes to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.nice > 0:
        os.nice(a.nice)

    from runtime.backends.base import BackendOptions
    from runtime.bundle.health import run_health_check
    from runtime.bundle.loader import load_bundle
    from runtime.errors import LeanloopError
    from runtime.shadow._wire import WireClosed, read_job, write_message

    try:
        loaded = load_bundle(a.bundle, a.backend, BackendOptions(threads=a.threads), verify=True)
        run_health_check(loaded)
    except LeanloopError as e:
        write_message(out, {"type": "load_error", "error": str(e)})
        return 3
    write_message(out, {"type": "ready", "pid": os.getpid()})
    pipeline = loaded.pipeline
    while True:
        try:
            header, data = read_job(0)
        except WireClosed:
            return 0
        if header.get("stop"):
            return 0
        pred = pipeline.run_bytes(data, str(header.get("frame_id", "")))
        write_message(out, {"type": "result", "seq": header["seq"], "prediction": pred.to_dict()})


if __name__ == "__main__":
    raise SystemExit(main())
