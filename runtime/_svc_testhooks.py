"""Test-only fault points of the service (off unless the environment asks).

``LEANLOOP_TEST_HANG_AFTER_S=T`` / ``LEANLOOP_TEST_HANG_AFTER_FRAMES=N``: once the frame loop
has run T seconds or served N frames, it hangs for good (a stuck camera driver or engine call,
as far as anyone can tell). The systemd test shows that the watchdog kills it, the journal gets
the traceback (:func:`frame_loop_hung_for_test` names the spot) and systemd restarts it.
"""

from __future__ import annotations

import os
import time

__all__ = ["maybe_hang"]


def _env_float(name: str) -> float | None:
    v = os.environ.get(name)
    return float(v) if v else None


_AFTER_S = _env_float("LEANLOOP_TEST_HANG_AFTER_S")
_AFTER_FRAMES = _env_float("LEANLOOP_TEST_HANG_AFTER_FRAMES")


def maybe_hang(frames: int, running_s: float) -> None:
    if (_AFTER_FRAMES is not None and frames >= _AFTER_FRAMES) or (
        _AFTER_S is not None and running_s >= _AFTER_S
    ):
        frame_loop_hung_for_test()


def frame_loop_hung_for_test() -> None:
    while True:
        time.sleep(3600)
