"""Framing between the service and its shadow worker process (stdin/stdout pipes).

Service → worker: ``>II`` (header length, payload length), a JSON header, the raw payload (the
encoded frame bytes). Worker → service: ``>I`` length and a JSON message. Reads and writes on
the service side take a deadline, so a hung worker can never block the thread that feeds it.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

__all__ = ["WireClosed", "WireTimeout", "read_job", "read_message", "write_job", "write_message"]

_JOB = struct.Struct(">II")
_MSG = struct.Struct(">I")
MAX_MESSAGE = 64 << 20


class WireClosed(Exception):
    """The other end closed the pipe (the worker exited)."""


class WireTimeout(Exception):
    """The deadline passed before the message was complete."""


def _wait(fd: int, write: bool, deadline: float | None) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireTimeout
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], left)
    if not r and not w:
        raise WireTimeout


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        _wait(fd, False, deadline)
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise WireClosed
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes, deadline: float | None) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, True, deadline)
        try:
            n = os.write(fd, view)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise WireClosed from e
        view = view[n:]


def write_job(fd: int, header: dict[str, Any], payload: bytes, deadline: float | None) -> None:
    h = json.dumps(header).encode()
    _write_all(fd, _JOB.pack(len(h), len(payload)) + h + payload, deadline)


def read_job(fd: int) -> tuple[dict[str, Any], bytes]:
    hl, pl = _JOB.unpack(_read_exact(fd, _JOB.size, None))
    header = json.loads(_read_exact(fd, hl, None))
    return header, _read_exact(fd, pl, None)


def write_message(fd: int, msg: dict[str, Any], deadline: float | None = None) -> None:
    data = json.dumps(msg, separators=(",", ":")).encode()
    _write_all(fd, _MSG.pack(len(data)) + data, deadline)


def read_message(fd: int, deadline: float | None) -> dict[str, Any]:
    (n,) = _MSG.unpack(_read_exact(fd, _MSG.size, deadline))
    if n > MAX_MESSAGE:
        raise WireClosed
    msg = json.loads(_read_exact(fd, n, deadline))
    if not isinstance(msg, dict):
        raise WireClosed
    return msg
