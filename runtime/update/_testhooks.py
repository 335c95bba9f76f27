"""Test-only crash points for the kill matrix (``tests/integration/test_update_kill_matrix.py``).

Off unless the environment asks, and then the kill is real: the process sends itself SIGKILL,
so nothing (no ``finally``, no atexit, no flush) runs after it — exactly a power cut as far as
the process's own files are concerned.

``LEANLOOP_TEST_KILL_AT``:

- ``state:<name>`` — right after the install state ``<name>`` is stored (``machine.fire``);
- ``<phase>:<n>`` — once ``n`` bytes in total have been written to slot files in ``<phase>``:
  ``download`` (bytes received for the inactive slot) or ``staging`` (bytes copied or rebuilt
  locally into it). The code that writes slot files calls :func:`on_bytes` per chunk, *before*
  the chunk is written, so the kill lands in the middle of a file.

Callers (keep them when the downloader changes): ``runtime/trust.py`` installs
:func:`on_bytes` as ``runtime.download._on_bytes``, which the resumable downloader calls with
``("download", n)`` for each chunk of a target file it writes (to its partial, which is moved
into the slot once complete and verified); ``AuthFetcher._chunks`` calls
``on_bytes("download", len(chunk))`` for each metadata chunk;
``_copy_counted`` calls ``on_bytes("staging", n)`` per 16 KiB of a file reused from the active
slot, and ``_apply_delta`` calls ``on_bytes("staging", size)`` before it rebuilds a file. A new
writer must call it the same way: once per chunk, before the chunk is written.

``LEANLOOP_TEST_BYTES_LOG=<path>``: append ``<phase> <total>`` lines as bytes are counted (the
matrix measures an uninterrupted update with it to choose its random offsets).

``LEANLOOP_TEST_SKIP_SPACE_CHECK=1``: skip the free-space pre-check so a disk-full test reaches
the real ENOSPC in the middle of a write.
"""

from __future__ import annotations

import os
import signal

__all__ = ["on_bytes", "on_state", "reset", "space_check_enabled"]

_totals: dict[str, int] = {}  # per process: a forked child starts from its parent's copy


def reset() -> None:
    """Forget the byte counts (a test fork server calls it in each new child)."""
    _totals.clear()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_state(name: str) -> None:
    """Called after an install state is stored."""
    if os.environ.get("LEANLOOP_TEST_KILL_AT") == f"state:{name}":
        _die()


def on_bytes(phase: str, n: int) -> None:
    """Called with each chunk of ``n`` bytes about to be written to a slot file in ``phase``."""
    kill_at = os.environ.get("LEANLOOP_TEST_KILL_AT", "")
    bytes_log = os.environ.get("LEANLOOP_TEST_BYTES_LOG", "")
    if not (kill_at or bytes_log):
        return
    before = _totals.get(phase, 0)
    total = _totals[phase] = before + n
    if bytes_log:
        with open(bytes_log, "a") as f:
            f.write(f"{phase} {total}\n")
    kp, _, at = kill_at.partition(":")
    if kp == phase and at.isdigit() and before <= int(at) < total:
        _die()


def space_check_enabled() -> bool:
    return os.environ.get("LEANLOOP_TEST_SKIP_SPACE_CHECK") != "1"
