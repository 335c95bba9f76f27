"""The local control socket: how ``leanloop status/rollback/feedback`` talk to a running service.

The service listens on ``<state_dir>/control.sock``, a Unix stream socket created with mode
0600 (only the service's user — root or ``leanloop`` — may connect; there is no other
authentication). One connection carries one request and one answer, each a single JSON object
on one line:

    → {"cmd": "rollback"}
    ← {"ok": true, "result": {"message": "rolled back to digits v1 (slot a)"}}
    ← {"ok": false, "error": "no previous committed bundle to roll back to", "kind": "UpdateError"}

Requests larger than :data:`MAX_REQUEST` bytes, malformed JSON or an unknown command get an
``ok: false`` answer; a client that sends nothing is dropped after :data:`IO_TIMEOUT_S`. At most
:data:`MAX_CLIENTS` connections are served at once (others wait in the listen backlog).

When no service listens (no socket, or a stale one left by a killed process), :func:`request`
returns ``None`` and the operator commands act on the state folder directly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runtime import errors
from runtime.errors import ConfigError, LeanloopError

__all__ = ["MAX_REQUEST", "SOCKET_NAME", "ControlServer", "request", "socket_path"]

log = logging.getLogger("leanloop.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 8 << 20
IO_TIMEOUT_S = 5.0
MAX_CLIENTS = 4

Handler = Callable[[dict[str, Any]], Any]


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@contextlib.contextmanager
def _addr(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path`` (108 bytes): long paths go through the
    folder's ``/proc/self/fd`` entry (Linux), which names the same socket."""
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _read_line(conn: socket.socket, limit: int) -> bytes:
    """Read up to the first newline (or EOF). Raises ValueError past ``limit`` bytes."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ValueError(f"request larger than {limit} bytes")
    line = bytes(buf).split(b"\n", 1)[0]
    if len(line) > limit:
        raise ValueError(f"request larger than {limit} bytes")
    return line


class ControlServer:
    """Serves ``handlers[cmd](request)`` on the control socket, one thread per connection."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind (mode 0600 from the first instant) and start accepting.

        Returns False (logged) when the socket cannot be created: the service still runs, and
        the operator commands then refuse what needs it.
        """
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a killed process
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # no window in which the socket is wider than 0600
        try:
            with _addr(self.path) as addr:
                sock.bind(addr)
            os.chmod(self.path, 0o600)
        except OSError as e:
            sock.close()
            log.warning("control socket %s unavailable: %s", self.path, e)
            return False
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self._thread.start()
        return True

    def _accept(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            self._slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(IO_TIMEOUT_S)
            answer = self._answer(conn)
            conn.settimeout(IO_TIMEOUT_S)
            conn.sendall(json.dumps(answer, default=str).encode() + b"\n")
        except OSError as e:
            log.debug("control client: %s", e)
        finally:
            conn.close()
            self._slots.release()

    def _answer(self, conn: socket.socket) -> dict[str, Any]:
        try:
            req = json.loads(_read_line(conn, MAX_REQUEST))
        except (ValueError, UnicodeDecodeError) as e:
            return {"ok": False, "error": f"bad request: {e}", "kind": "ConfigError"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {
                "ok": False,
                "error": 'bad request: expected {"cmd": ...}',
                "kind": "ConfigError",
            }
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {
                "ok": False,
                "error": f"unknown command {req['cmd']!r} (known: {known})",
                "kind": "ConfigError",
            }
        conn.settimeout(None)  # a rollback may take a few seconds; the answer is still sent
        try:
            return {"ok": True, "result": handler(req)}
        except LeanloopError as e:
            return {"ok": False, "error": str(e), "kind": type(e).__name__}
        except Exception as e:  # the service must survive any request
            log.exception("control %s: unexpected %s", req["cmd"], e)
            return {"ok": False, "error": f"internal error: {type(e).__name__}", "kind": ""}

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(state_dir: Path, cmd: str, timeout_s: float = 60.0, **args: Any) -> Any:
    """Send one command to the running service and return its ``result``.

    Returns None when no service listens. Raises the service's error type (ConfigError,
    StoreError, UpdateError, ...) with its one-line message when the command failed.
    """
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            with _addr(path) as addr:
                sock.connect(addr)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise ConfigError(f"{path}: cannot connect: {e.strerror}") from e
        payload = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        if len(payload) > MAX_REQUEST:
            raise ConfigError(f"{cmd}: request larger than {MAX_REQUEST} bytes")
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = _read_line(sock, MAX_RESPONSE)
    except TimeoutError as e:
        raise errors.UpdateError(f"the service did not answer {cmd!r} in {timeout_s:.0f} s") from e
    except ValueError as e:
        raise errors.UpdateError(f"{cmd}: {e}") from e
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError as e:
        raise errors.UpdateError(f"{cmd}: the service answered with non-JSON") from e
    if answer.get("ok"):
        return answer.get("result")
    kind = getattr(errors, str(answer.get("kind")), None)
    exc = kind if isinstance(kind, type) and issubclass(kind, LeanloopError) else LeanloopError
    raise exc(str(answer.get("error")))
