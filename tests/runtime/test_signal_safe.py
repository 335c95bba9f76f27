"""A stop event a SIGTERM handler sets must not hang the device (runtime.signal_safe).

Python runs a handler in the main thread between bytecodes, possibly while that thread holds
the event's lock inside ``wait()``. Each case runs in its own process, with a timeout: with
``threading.Event`` the handler waits for the lock forever; with ``SignalSafeEvent`` the process
stops at once.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading
    from runtime.signal_safe import SignalSafeEvent

    stop = threading.Event() if sys.argv[1] == "threading" else SignalSafeEvent()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with stop._cond:  # where the main thread is, between bytecodes, inside wait() or set()
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, the lock held
        print("handler returned", flush=True)
    assert stop.wait(5), "not set"
    print("stopped", flush=True)
    """
)


def _run(kind: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            [sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def test_threading_event_set_from_a_handler_deadlocks_which_is_why_the_device_avoids_it() -> None:
    assert _run("threading", timeout=3) is None  # the hang the device had


def test_signal_safe_event_set_from_a_handler_stops_at_once() -> None:
    got = _run("signal_safe", timeout=30)
    assert got is not None, "hung"
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[:2] == ["handler returned", "stopped"]


def test_wait_clear_and_timeout_behave_like_threading_event() -> None:
    import threading
    import time

    from runtime.signal_safe import SignalSafeEvent

    ev = SignalSafeEvent()
    t0 = time.monotonic()
    assert ev.wait(0.05) is False and time.monotonic() - t0 >= 0.04
    threading.Timer(0.05, ev.set).start()
    assert ev.wait(5) is True and ev.is_set()
    ev.clear()
    assert not ev.is_set() and ev.wait(0) is False
