"""The resumable downloader against a real HTTP server on loopback that misbehaves on cue.

Each request the server gets takes the next step of a script (``ok``: serve the file honouring
Range/If-Range; ``cut:N``: announce the whole answer, send N body bytes, close; ``stall:N``: the
same, silent for a second before closing; ``500``; ``endless``; ``oversize``; ``bad-range``;
``etag:X``: serve under another ETag). Pure parts
(token bucket, backoff) are tested on their own.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime import download
from runtime.config import DownloadSettings, load_config
from runtime.download import (
    Downloader,
    DownloadError,
    HashMismatchError,
    OversizeError,
    TokenBucket,
    backoff_delay,
)
from runtime.errors import ConfigError

DATA = random.Random(4).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = DATA
        self.etag = f'"{SHA}"'
        self.script: list[str] = []
        self.requests: list[dict[str, str]] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up on an endless body is the point of some tests


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _head(self, status: int, length: int | None, extra: dict[str, str]) -> None:
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(dict(self.headers))
        step = srv.script.pop(0) if srv.script else "ok"
        data, etag = srv.data, srv.etag
        if step.startswith("etag:"):
            etag = f'"{step[5:]}"'
        if step == "500":
            self._head(500, 0, {})
            return
        if step == "endless":
            self._head(200, None, {"ETag": etag, "Connection": "close"})
            while True:  # until the client hangs up
                self.wfile.write(b"\0" * 65536)
        if step == "oversize":
            self._head(200, len(data) + 1, {"ETag": etag})
            self.wfile.write(data + b"!")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.headers.get("If-Range") in (None, etag):
            start = int(rng.removeprefix("bytes=").rstrip("-"))
        body = data[start:]
        headers = {"ETag": etag}
        status = 200
        if start:
            status = 206
            cr_start = start + 1 if step == "bad-range" else start
            headers["Content-Range"] = f"bytes {cr_start}-{len(data) - 1}/{len(data)}"
        self._head(status, len(body), headers)
        if step.startswith(("cut:", "stall:")):
            self.wfile.write(body[: int(step.split(":")[1])])
            self.wfile.flush()
            if step.startswith("stall:"):
                time.sleep(1.0)  # a link that goes silent
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/blob"


def _downloader(tmp_path: Path, **settings: float) -> Downloader:
    cfg = DownloadSettings(**{"backoff_base_s": 0.001, "backoff_max_s": 0.01, **settings})
    return Downloader(tmp_path / "downloads", "tok", cfg)


def test_fetch_when_link_is_cut_resumes_with_range_and_if_range(
    server: _Server, tmp_path: Path
) -> None:
    server.script = ["cut:100000", "cut:100000", "ok"]
    d = _downloader(tmp_path)
    out = d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert out.read_bytes() == DATA
    assert d.stats.bytes_received == len(DATA)
    assert (d.stats.resumes, d.stats.retries, d.stats.restarts) == (2, 2, 0)
    assert [r.get("Range") for r in server.requests] == [None, "bytes=100000-", "bytes=200000-"]
    assert {r.get("If-Range") for r in server.requests[1:]} == {f'"{SHA}"'}
    assert server.requests[0]["Authorization"] == "Bearer tok"
    assert not list((tmp_path / "downloads").iterdir())  # partial and sidecar moved/removed


def test_fetch_when_link_goes_silent_times_out_and_resumes(server: _Server, tmp_path: Path) -> None:
    server.script = ["stall:50000"]
    d = _downloader(tmp_path, read_timeout_s=0.2)
    d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == DATA
    assert (d.stats.retries, d.stats.resumes) == (1, 1)
    assert d.stats.bytes_received == len(DATA)


def test_fetch_when_partial_exists_from_earlier_process_sends_only_the_rest(
    server: _Server, tmp_path: Path
) -> None:
    server.script = ["cut:120000", "500"]
    first = _downloader(tmp_path, max_attempts=1)
    with pytest.raises(DownloadError, match="gave up after 1 attempts"):
        first.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert first.resume_point(SHA, len(DATA)) == 120000
    again = _downloader(tmp_path)
    again.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert again.stats.bytes_received == len(DATA) - 120000
    assert (tmp_path / "out.bin").read_bytes() == DATA


def test_fetch_when_etag_changed_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    server.script = ["cut:100000", "500"]
    d = _downloader(tmp_path, max_attempts=1)
    with pytest.raises(DownloadError):
        d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    server.etag = '"republished"'  # the If-Range no longer matches: the server answers 200
    d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert server.requests[-1]["If-Range"] == f'"{SHA}"'
    assert d.stats.restarts == 1
    assert d.stats.bytes_received == 100000 + len(DATA)
    assert (tmp_path / "out.bin").read_bytes() == DATA


# Misbehaving servers: (script, settings, error, partial kept?, reason fragment)
REFUSALS = [
    (["oversize"], {}, OversizeError, False, "announces 300001 bytes"),
    (["endless"], {}, OversizeError, False, "more than the signed 300000 bytes"),
    (["cut:1000", "bad-range"], {}, DownloadError, True, "does not continue a partial"),
    (["cut:1000", "500", "500", "500"], {"max_attempts": 3}, DownloadError, True, "HTTP 500"),
    (["500", "500", "cut:0"], {"max_attempts": 3}, DownloadError, False, "0 bytes read"),
]


@pytest.mark.parametrize(("script", "settings", "error", "kept", "reason"), REFUSALS)
def test_fetch_when_server_misbehaves_refuses_with_one_line_reason(
    server: _Server,
    tmp_path: Path,
    script: list[str],
    settings: dict[str, float],
    error: type[Exception],
    kept: bool,
    reason: str,
) -> None:
    server.script = list(script)
    d = _downloader(tmp_path, **settings)
    with pytest.raises(error, match=reason) as info:
        d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.bin").exists()
    assert (
        d.stats.bytes_received <= len(DATA) + 1
    )  # never more than one byte past the signed length
    assert (d.resume_point(SHA, len(DATA)) > 0) == kept


def test_fetch_when_gives_up_counts_attempts_since_last_progress(
    server: _Server, tmp_path: Path
) -> None:
    server.script = ["cut:1000", "500", "cut:2000", "500", "500", "500", "500"]
    d = _downloader(tmp_path, max_attempts=3)
    with pytest.raises(DownloadError, match=r"gave up after 3 attempts .*\(3000 of 300000"):
        d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert len(server.requests) == 6  # the cut that brought bytes reset the count
    assert d.stats.retries == 5


def test_fetch_when_bytes_do_not_hash_as_signed_deletes_partial(
    server: _Server, tmp_path: Path
) -> None:
    server.data = bytes(len(DATA))
    d = _downloader(tmp_path)
    with pytest.raises(HashMismatchError, match="partial deleted"):
        d.fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    assert not list((tmp_path / "downloads").iterdir())


def test_fetch_when_server_is_down_retries_then_gives_up(tmp_path: Path) -> None:
    d = _downloader(tmp_path, max_attempts=2, connect_timeout_s=1.0)
    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        d.fetch("http://127.0.0.1:9/blob", len(DATA), SHA, tmp_path / "out.bin")


def test_fetch_when_a_mirror_is_given_moves_on_at_once_and_resumes_there(
    server: _Server, tmp_path: Path
) -> None:
    # The first hub brings 100,000 bytes, then fails (500): the next attempt goes to the mirror
    # at once (no backoff sleep) and resumes from the partial.
    first = _Server()
    t = threading.Thread(target=first.serve_forever, args=(0.02,), daemon=True)
    t.start()
    first.script = ["cut:100000", "500"]
    slept: list[float] = []
    d = Downloader(
        tmp_path / "downloads", "tok", DownloadSettings(backoff_base_s=5.0), sleep=slept.append
    )
    try:
        out = d.fetch(_url(first), len(DATA), SHA, tmp_path / "out.bin", mirrors=[_url(server)])
    finally:
        first.shutdown()
        first.server_close()
    assert out.read_bytes() == DATA
    assert d.last_url == _url(server)
    assert [r.get("Range") for r in server.requests] == ["bytes=100000-"]
    assert d.stats.bytes_received == len(DATA) and slept == []


def test_fetch_when_every_mirror_is_down_gives_up_after_trying_each(tmp_path: Path) -> None:
    d = _downloader(tmp_path, max_attempts=1, connect_timeout_s=1.0)
    with pytest.raises(DownloadError, match="gave up after 2 attempts"):
        d.fetch(
            "http://127.0.0.1:9/blob", len(DATA), SHA, tmp_path / "out.bin",
            mirrors=["http://127.0.0.1:7/blob"],
        )  # fmt: skip


def test_fetch_when_hook_set_reports_every_written_chunk(server: _Server, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    download._on_bytes = lambda kind, n: seen.append((kind, n))
    try:
        _downloader(tmp_path).fetch(_url(server), len(DATA), SHA, tmp_path / "out.bin")
    finally:
        download._on_bytes = None
    assert {k for k, _ in seen} == {"download"}
    assert sum(n for _, n in seen) == len(DATA)


def test_prune_when_partials_are_stale_keeps_wanted_and_fresh(tmp_path: Path) -> None:
    d = _downloader(tmp_path)
    d.dir.mkdir(parents=True)
    old = time.time() - 2 * 86400
    for sha in ("a" * 64, "b" * 64, "c" * 64):
        for suffix in (".part", ".json"):
            (d.dir / f"{sha}{suffix}").write_bytes(b"x")
    for name in (f"{'a' * 64}.part", f"{'a' * 64}.json", f"{'b' * 64}.part"):
        os.utime(d.dir / name, (old, old))
    assert d.prune(keep={"b" * 64}) == 1
    assert sorted(p.name[:1] + p.suffix for p in d.dir.iterdir()) == [
        "b.json",
        "b.part",
        "c.json",
        "c.part",
    ]


def test_paths_when_hash_is_not_hex_refuses(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not a sha256"):
        _downloader(tmp_path).paths("../../etc/passwd")


def test_token_bucket_when_reads_outpace_rate_asks_to_wait() -> None:
    bucket = TokenBucket(rate=1000, burst=500, clock=lambda: 0.0)
    assert bucket.debit(500, 0.0) == 0.0  # the burst is free
    assert bucket.debit(1000, 0.0) == pytest.approx(1.0)
    assert bucket.debit(0, 1.0) == 0.0  # the debt was slept off
    assert bucket.debit(100, 10.0) == 0.0  # idle time refills only up to the burst
    assert bucket.debit(500, 10.0) == pytest.approx(0.1)


def test_backoff_delay_when_failures_grow_doubles_up_to_cap() -> None:
    assert [backoff_delay(k, 0.5, 3.0, lambda: 1.0) for k in (1, 2, 3, 4, 5)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]
    assert backoff_delay(3, 0.5, 3.0, lambda: 0.25) == 0.5  # full jitter: uniform in [0, cap]


def test_download_settings_when_key_is_misspelt_fail_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "device.yaml"
    cfg.write_text("download: {rate_limit_bps: 1000, max_attemps: 3}\n")
    with pytest.raises(ConfigError, match=r"download\.max_attemps"):
        load_config(cfg)
    cfg.write_text("download: {rate_limit_bps: 1000}\n")
    assert load_config(cfg).download.rate_limit_bps == 1000
