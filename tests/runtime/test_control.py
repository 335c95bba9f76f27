"""The control socket on its own: a real Unix socket, real clients, bad requests as a table."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.control import MAX_REQUEST, ControlServer, request, socket_path
from runtime.errors import ConfigError, StoreError, UpdateError


def _feedback(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("id") == "missing":
        raise StoreError("no sample missing")
    return {"id": req["id"], "label": req.get("label")}


def _rollback(req: dict[str, Any]) -> dict[str, Any]:
    raise UpdateError("no previous committed bundle to roll back to")


def _boom(req: dict[str, Any]) -> None:
    raise RuntimeError("internal detail")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    srv = ControlServer(
        socket_path(tmp_path),
        {
            "status": lambda req: {"fps": 3.0},
            "feedback": _feedback,
            "rollback": _rollback,
            "boom": _boom,
        },
    )
    assert srv.start()
    yield srv
    srv.close()


def _raw(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return s.makefile("rb").read()


def test_socket_is_private_when_created(tmp_path: Path, server: ControlServer) -> None:
    mode = (tmp_path / "control.sock").stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_request_returns_result_when_command_succeeds(
    tmp_path: Path, server: ControlServer
) -> None:
    assert request(tmp_path, "status") == {"fps": 3.0}
    assert request(tmp_path, "feedback", id="s1", label="7") == {"id": "s1", "label": "7"}


@pytest.mark.parametrize(
    ("cmd", "args", "error", "match"),
    [
        ("rollback", {}, UpdateError, "^no previous committed bundle"),
        ("feedback", {"id": "missing"}, StoreError, "^no sample missing$"),
        ("nope", {}, ConfigError, "unknown command 'nope'"),
        ("boom", {}, Exception, "^internal error: RuntimeError$"),
        ("feedback", {"id": "x" * MAX_REQUEST}, ConfigError, "larger than"),
    ],
    ids=["refused", "store-error", "unknown", "crash", "too-large"],
)
def test_request_raises_one_line_error_when_command_fails(
    tmp_path: Path,
    server: ControlServer,
    cmd: str,
    args: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        request(tmp_path, cmd, **args)
    assert request(tmp_path, "status") == {"fps": 3.0}  # the server survived


@pytest.mark.parametrize(
    "payload",
    [b"not json\n", b"[1, 2]\n", b'{"cmd": 3}\n', b"", b"x" * (MAX_REQUEST + 10)],
    ids=["not-json", "not-object", "cmd-not-string", "empty", "oversized-no-newline"],
)
def test_server_answers_bad_request_when_payload_is_malformed(
    tmp_path: Path, server: ControlServer, payload: bytes
) -> None:
    answer = _raw(tmp_path / "control.sock", payload)
    assert answer.startswith(b'{"ok": false, "error": "bad request')
    assert answer.count(b"\n") == 1


def test_request_returns_none_when_no_service_listens(tmp_path: Path) -> None:
    assert request(tmp_path, "status") is None  # no socket
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))  # a socket file nobody listens on
    stale.close()
    assert request(tmp_path, "status") is None


def test_socket_works_when_state_path_is_longer_than_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    srv = ControlServer(socket_path(deep), {"status": lambda req: {"ok": 1}})
    assert srv.start()
    try:
        assert request(deep, "status") == {"ok": 1}
    finally:
        srv.close()
    assert not (deep / "control.sock").exists()
