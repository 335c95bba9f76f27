"""Talking to systemd (``Type=notify``): a few lines over the ``$NOTIFY_SOCKET`` datagram socket.

The protocol is newline-separated ``KEY=value`` assignments in one datagram to the Unix socket
named by ``$NOTIFY_SOCKET`` (``@`` at the start means the abstract namespace); see
sd_notify(3). It is small enough that a dependency (python-systemd needs libsystemd headers to
build) would cost more than it saves. Outside systemd ``$NOTIFY_SOCKET`` is unset and every
call is a no-op.

How the device uses it (runtime/service.py):

- ``READY=1`` once the active bundle is loaded and the source opened (the unit is ``activating``
  until then, so ``systemctl start`` returns only when frames can flow);
- ``WATCHDOG=1`` from the **frame loop** after each iteration, at most twice per watchdog period
  (:class:`Watchdog`) — not from a timer thread, which would keep petting while the frame loop
  hangs. When it hangs, systemd sends ``SIGABRT`` (``WatchdogSec=`` in the unit); faulthandler
  writes every thread's traceback to stderr (the journal) and systemd restarts the service;
- ``STATUS=`` one line for ``systemctl status``;
- ``EXTEND_TIMEOUT_USEC=`` while the start-up may take long (loading and recovering bundles)
  and while stopping;
- ``RELOADING=1`` (with ``MONOTONIC_USEC=``) on ``SIGHUP``, then ``READY=1`` again;
- ``STOPPING=1`` when it stops.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier", "Watchdog"]


class Notifier:
    """Send sd_notify messages; a no-op when the process was not started by systemd."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when not under systemd or it failed."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._addr)
        except OSError:
            return False  # systemd went away (shutdown); nothing to do about it
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text.splitlines()[0] if text else ''}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """The watchdog period systemd asked for (``$WATCHDOG_USEC``, for this pid), in seconds."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = e.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1e6 if usec > 0 else None


class Watchdog:
    """Pet systemd's watchdog from the loop whose progress it guards.

    :meth:`progress` is called after every iteration of the frame loop; it sends ``WATCHDOG=1``
    at most every half period, so a loop at 1000 iterations a second costs one clock read each.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None = None) -> None:
        self.notifier = notifier
        period = interval_s if interval_s is not None else watchdog_interval()
        self.every = period / 2 if period else None
        self._next = 0.0
        self.sent = 0

    def progress(self) -> None:
        if self.every is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            if self.notifier.watchdog():
                self.sent += 1
