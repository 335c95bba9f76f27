"""runtime.sdnotify over a real datagram socket, and runtime.logs' journal format."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from runtime.logs import JournalFormatter, setup_logging, stderr_is_journal
from runtime.sdnotify import Notifier, Watchdog, watchdog_interval


def _listener(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_notifier_sends_sd_notify_lines_when_socket_is_set(tmp_path: Path) -> None:
    sock, path = _listener(tmp_path)
    n = Notifier(path)
    assert n.enabled
    assert n.ready("serving digits v3")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving digits v3"
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.extend_timeout(2.5)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=2500000"
    n.reloading()
    msg = sock.recv(4096).decode().split("\n")
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
    n.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two"
    n.close()
    sock.close()


def test_notifier_uses_abstract_namespace_when_address_starts_with_at() -> None:
    name = f"leanloop-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    Notifier("@" + name).stopping()
    assert s.recv(100) == b"STOPPING=1"
    s.close()


def test_notifier_does_nothing_when_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.ready() and not n.watchdog()


def test_watchdog_pets_at_most_twice_per_period_when_loop_spins(tmp_path: Path) -> None:
    sock, path = _listener(tmp_path)
    wd = Watchdog(Notifier(path), interval_s=3600)
    for _ in range(1000):
        wd.progress()
    assert wd.sent == 1 and sock.recv(100) == b"WATCHDOG=1"
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    sock.close()


def test_journal_format_has_priority_and_no_timestamp_when_stderr_is_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = (tmp_path / "stream").open("w")
    st = os.fstat(out.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert stderr_is_journal(out)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    setup_logging(stream=out)
    # An earlier in-process CLI call (e.g. `leanloop infer` without --verbose) may have quieted
    # the `leanloop` logger: this test is about the format, so it sets the levels it needs.
    for name in ("leanloop", "leanloop.test"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger("leanloop"), "disabled", False)
    log = logging.getLogger("leanloop.test")
    log.warning("camera gone")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("frame loop")
    out.flush()
    lines = (tmp_path / "stream").read_text().splitlines()
    assert lines[0] == "<4>leanloop.test: camera gone"
    assert lines[1] == "<3>leanloop.test: frame loop"
    assert all(ln.startswith("<3>") for ln in lines[2:]) and "ValueError: boom" in lines[-1]
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not stderr_is_journal(out)
    rec = logging.LogRecord("x", logging.INFO, "", 0, "hi", None, None)
    assert JournalFormatter().format(rec) == "<6>x: hi"
    root.handlers[:] = saved
