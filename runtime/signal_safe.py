"""An event a signal handler may set.

Python runs a signal handler in the main thread between two bytecodes, which may be while
that thread is inside ``threading.Event.wait()`` or ``set()`` holding the event's lock. That lock
is not reentrant, so ``Event.set()`` called from the handler then waits for itself forever: a
device told to stop (SIGTERM) hangs instead, until its supervisor kills it. The frame loop waits
on its stop event many times a second, so the window is hit often enough to matter (the kill
matrix caught it under load). :class:`SignalSafeEvent` has the same API on a reentrant lock: the
handler's ``set()`` goes through, and a ``wait()`` it interrupted returns at its timeout at the
latest.
"""

from __future__ import annotations

import threading

__all__ = ["SignalSafeEvent"]


class SignalSafeEvent:
    """``threading.Event``'s API (``is_set``, ``set``, ``clear``, ``wait``), safe to ``set()``
    from a signal handler."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._flag:
                self._cond.wait(timeout)
            return self._flag
