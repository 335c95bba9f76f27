"""Resumable, rate-capped download of one signed target file.

The caller has verified the TUF metadata first, so it knows a target's URL, its signed length
and its sha256. :meth:`Downloader.fetch` brings exactly those bytes to a destination path:

1. The bytes so far live in ``<dir>/<sha256>.part``, next to a small sidecar
   ``<sha256>.json`` (the server's ETag, the signed length, the URL) written atomically before
   the first byte of a response is kept. Keyed by the hash of the wanted content, a partial
   survives a restart of the process (or a SIGKILL) and is picked up by the next fetch.
2. Every attempt asks for ``Range: bytes=<have>-`` with ``If-Range: <etag>``. A 206 appends;
   its ``Content-Range`` must start exactly at ``<have>`` and name the signed length, else the
   server is broken (:class:`DownloadError`). A 200 means the server's copy changed (or it
   ignores ranges): the partial is dropped and the body is written from byte zero. Only a
   strong ETag is used as a validator; without one a partial is not resumed.
3. Nothing is read past the signed length. A ``Content-Length`` above it is refused before any
   body byte is read; a body without one is read up to the signed length and then probed for
   a single further byte: an endless or oversized body is cut there and refused
   (:class:`OversizeError`, partial deleted).
4. Dropped connections, timeouts, HTTP 408/429/5xx are retried; each attempt resumes from what
   is on disk. An attempt that brought new bytes is retried at once (the link works, it just
   drops); the k-th failed attempt in a row without a new byte waits a random time in
   ``[0, min(backoff_max_s, backoff_base_s * 2**(k-1))]`` (exponential backoff, full jitter),
   and ``max_attempts`` of them give up with a one-line :class:`DownloadError`; the partial is
   kept for the next fetch.
5. At the end the file is hashed: a mismatch deletes the partial (:class:`HashMismatchError`),
   a match moves it to the destination.

A rate cap (token bucket, bytes/s) is shared by every fetch of one :class:`Downloader`.
:class:`DownloadStats` counts body bytes actually received, resumes, retries and restarts.

Kill-matrix hook: the module-level ``_on_bytes`` (``None`` by default) is called as
``_on_bytes("download", n)`` after each chunk of ``n`` bytes has been written to the partial
(unbuffered, so the bytes are in the kernel when it runs). A crash test sets it to SIGKILL its
own process at a chosen byte offset.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import urllib3

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime.config import DownloadSettings
from runtime.errors import TrustError, UpdateError, first_line
from runtime.ratelimit import TokenBucket

__all__ = [
    "DownloadError",
    "DownloadStats",
    "Downloader",
    "HashMismatchError",
    "OversizeError",
    "TokenBucket",
    "backoff_delay",
]

log = logging.getLogger("leanloop.download")

# Kill-matrix hook (see the module docstring): called after each chunk written to a partial.
_on_bytes: Callable[[str, int], None] | None = None

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RETRY_STATUS = frozenset({408, 429})
_SIDECAR_FORMAT = 1


class DownloadError(UpdateError):
    """A target could not be downloaded: the link stayed down or the server misbehaved."""


class OversizeError(DownloadError):
    """The server sent (or announced) more bytes than the signed length allows."""


class HashMismatchError(TrustError):
    """The downloaded bytes do not hash to the signed sha256 (the partial is deleted)."""


class _Retry(Exception):
    """One attempt failed in a way worth retrying (dropped link, timeout, 5xx)."""


@dataclass
class DownloadStats:
    """Totals over every fetch of one :class:`Downloader`."""

    bytes_received: int = 0  # body bytes read from the network
    resumes: int = 0  # 206 answers that continued a partial
    retries: int = 0  # attempts made after a failed one
    restarts: int = 0  # partials dropped because the server's copy changed
    files: int = 0  # targets completed and verified

    def as_counters(self) -> dict[str, int]:
        """The service status counters (``download_<name>``)."""
        return {f"download_{k}": v for k, v in asdict(self).items()}


def backoff_delay(failures: int, base_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, min(max_s, base_s * 2**(failures-1))]``."""
    return rand() * min(max_s, base_s * 2.0 ** max(0, failures - 1))


def _strong_etag(value: str | None) -> str | None:
    """The ETag if it is a strong validator (``If-Range`` accepts no weak one), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/") or not (len(value) >= 2 and value[0] == value[-1] == '"'):
        return None
    return value


class Downloader:
    """Fetch signed targets resumably into ``dir`` (partials) and then their destination."""

    def __init__(
        self,
        dir: Path,
        token: str | None,
        settings: DownloadSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.dir = Path(dir)
        self.settings = settings or DownloadSettings()
        self._headers = {"Accept-Encoding": "identity"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        s = self.settings
        self._timeout = urllib3.Timeout(connect=s.connect_timeout_s, read=s.read_timeout_s)
        self._http = urllib3.PoolManager(retries=False)
        self._read_size = s.chunk_bytes
        self._bucket: TokenBucket | None = None
        if s.rate_limit_bps:
            burst = max(4096, s.rate_limit_bps // 4)
            self._read_size = min(s.chunk_bytes, burst)
            self._bucket = TokenBucket(s.rate_limit_bps, burst, clock=clock, sleep=sleep)
        self.stats = DownloadStats()
        self.last_url: str | None = None  # the URL that finished the last fetch

    def set_token(self, token: str | None) -> None:
        """Send ``token`` from now on (the device refreshed it)."""
        self._headers.pop("Authorization", None)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    # ---- paths and the partial's sidecar ---------------------------------------------------

    def paths(self, sha256: str) -> tuple[Path, Path]:
        """(partial file, sidecar) of the target with ``sha256``."""
        if not _SHA256_RE.match(sha256):
            raise DownloadError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.dir / f"{sha256}.part", self.dir / f"{sha256}.json"

    def _read_sidecar(self, side: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(read_bounded(side, MAX_STATE_BYTES))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == _SIDECAR_FORMAT else None

    def _drop(self, part: Path, side: Path) -> None:
        for p in (part, side):
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)

    def resume_point(self, sha256: str, length: int) -> int:
        """Bytes of a usable partial of ``sha256`` on disk (an unusable one is deleted)."""
        part, side = self.paths(sha256)
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            return 0
        meta = self._read_sidecar(side)
        if meta is None or meta.get("length") != length or size > length:
            self._drop(part, side)
            return 0
        return size

    def prune(self, keep: Collection[str] = (), max_age_s: float | None = None) -> int:
        """Delete partials whose sha256 is not in ``keep`` and that nothing touched for
        ``max_age_s`` (default: ``settings.partial_max_age_s``). Returns how many went."""
        age = self.settings.partial_max_age_s if max_age_s is None else max_age_s
        now = time.time()
        removed = 0
        try:
            entries = list(self.dir.iterdir())
        except FileNotFoundError:
            return 0
        for p in entries:
            sha = p.name.split(".", 1)[0]
            if sha in keep or p.suffix not in (".part", ".json", ".tmp"):
                continue
            try:
                if now - p.stat().st_mtime < age:
                    continue
                p.unlink()
            except OSError:
                continue
            removed += p.suffix == ".part"
        return removed

    # ---- fetch ----------------------------------------------------------------------------

    def fetch(
        self, url: str, length: int, sha256: str, dest: Path, mirrors: Sequence[str] = ()
    ) -> Path:
        """Download the target at ``url`` (signed ``length`` and ``sha256``) to ``dest``.

        ``mirrors`` are the same target on other hubs (replicas): an attempt that brings no new
        byte moves on to the next one at once (the partial carries over: the bytes are signed,
        whoever serves them), and backs off only once every one failed in turn.
        :attr:`last_url` is the one that finished it.

        Raises DownloadError (gave up after ``max_attempts`` failures in a row, at least one per
        URL, a broken or refusing server; the partial is kept), OversizeError (more bytes than
        signed; partial deleted), HashMismatchError (wrong bytes; partial deleted).
        """
        if length < 0:
            raise DownloadError(f"{url}: negative signed length {length}")
        urls = [url, *mirrors]
        turn = 0
        part, side = self.paths(sha256)
        self.dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        failures = 0
        while True:
            have = self.resume_point(sha256, length)
            if have == length:
                break
            before = self.stats.bytes_received
            url = urls[turn % len(urls)]
            try:
                self._attempt(url, length, part, side, have)
                continue  # the loop re-reads what is on disk; complete means have == length
            except _Retry as e:
                reason = str(e)
            progressed = self.stats.bytes_received > before
            failures = 0 if progressed else failures + 1
            if not progressed and len(urls) > 1:
                turn += 1  # this hub is down or refusing: the next one, at once
                if failures % len(urls):
                    self.stats.retries += 1
                    log.info("download %s: %s; trying %s", url, reason, urls[turn % len(urls)])
                    continue
            if failures >= max(s.max_attempts, len(urls)):
                raise DownloadError(
                    f"{url}: gave up after {failures} attempts in a row without progress "
                    f"({self.resume_point(sha256, length)} of {length} bytes kept): {reason}"
                )
            self.stats.retries += 1
            # A link that brought bytes works, it just drops: go on at once; otherwise back off.
            delay = (
                0.0
                if progressed
                else backoff_delay(failures, s.backoff_base_s, s.backoff_max_s, self._rand)
            )
            log.info("download %s: %s; retry in %.2fs", url, reason, delay)
            if delay:
                self._sleep(delay)
        self._finish(url, part, side, length, sha256, Path(dest))
        self.last_url = url
        return Path(dest)

    def _attempt(self, url: str, length: int, part: Path, side: Path, have: int) -> None:
        """One request: append to (or restart) the partial until it holds ``length`` bytes.

        Returns when complete; raises _Retry for what is worth retrying.
        """
        headers = dict(self._headers)
        meta = self._read_sidecar(side) if have else None
        etag = meta.get("etag") if meta else None
        if have and not isinstance(etag, str):
            self._drop(part, side)  # no strong validator: resuming could splice two versions
            have = 0
        if have:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = str(etag)
        try:
            r = self._http.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                redirect=False,
                timeout=self._timeout,
            )
        except urllib3.exceptions.HTTPError as e:
            raise _Retry(first_line(e)) from e
        clean = False
        try:
            clean = self._answer(url, r, length, part, side, have, etag)
        finally:
            if not clean:  # unread or unwanted body: never hand this connection back
                r.close()
            r.release_conn()

    def _answer(
        self,
        url: str,
        r: urllib3.BaseHTTPResponse,
        length: int,
        part: Path,
        side: Path,
        have: int,
        etag: str | None,
    ) -> bool:
        status = r.status
        if status in _RETRY_STATUS or status >= 500:
            raise _Retry(f"HTTP {status}")
        if status == 416:  # the server's copy is shorter than our partial: start over
            self._drop(part, side)
            self.stats.restarts += 1
            raise _Retry("HTTP 416: the server's copy is shorter than the partial")
        declared = r.headers.get("Content-Length")
        try:
            declared_n = int(declared) if declared is not None else None
        except ValueError as e:
            raise DownloadError(f"{url}: bad Content-Length {str(declared)[:40]!r}") from e
        if status == 206 and have:
            start, end = self._content_range(url, r.headers.get("Content-Range"), length, have)
            new_etag = _strong_etag(r.headers.get("ETag"))
            if new_etag is not None and new_etag != etag:
                self._drop(part, side)
                self.stats.restarts += 1
                raise _Retry("the server's ETag changed under a partial")
            expect = end - start + 1
            if declared_n is not None and declared_n != expect:
                raise DownloadError(
                    f"{url}: Content-Length {declared_n} disagrees with Content-Range {start}-{end}"
                )
            self.stats.resumes += 1
            mode = "ab"
        elif status == 200:
            if declared_n is not None and declared_n > length:
                self._drop(part, side)
                raise OversizeError(
                    f"{url}: server announces {declared_n} bytes, the signed length is "
                    f"{length}; refused without reading"
                )
            if declared_n is not None and declared_n < length:
                raise DownloadError(
                    f"{url}: server has {declared_n} bytes, the signed length is {length}"
                )
            if have:
                self.stats.restarts += 1
            have, expect, mode = 0, length, "wb"
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)  # before the sidecar names a new validator
            sidecar = {
                "format": _SIDECAR_FORMAT,
                "etag": _strong_etag(r.headers.get("ETag")),
                "length": length,
                "url": url,
            }
            try:
                atomic_write_json(side, sidecar)
            except OSError as e:
                raise DownloadError(f"{side}: cannot write: {e}") from e
        else:
            raise DownloadError(f"{url}: HTTP {status} {r.reason or ''}".rstrip())
        self._stream(url, r, part, side, mode, have, expect, length)
        return True

    def _content_range(
        self, url: str, value: str | None, length: int, have: int
    ) -> tuple[int, int]:
        m = _CONTENT_RANGE_RE.match((value or "").strip())
        if m is None:
            raise DownloadError(f"{url}: 206 with a bad Content-Range {str(value)[:80]!r}")
        start, end, total = int(m[1]), int(m[2]), m[3]
        if start != have or end < start or end >= length or total not in ("*", str(length)):
            raise DownloadError(
                f"{url}: 206 Content-Range {value!r} does not continue a partial of {have} "
                f"bytes of a {length}-byte file"
            )
        return start, end

    def _stream(
        self,
        url: str,
        r: urllib3.BaseHTTPResponse,
        part: Path,
        side: Path,
        mode: str,
        have: int,
        expect: int,
        length: int,
    ) -> None:
        """Write up to ``expect`` body bytes after ``have``; never read past ``length``."""
        remaining = expect
        try:
            f = open(part, mode, buffering=0)  # noqa: SIM115 - closed below, after fsync
        except OSError as e:
            raise DownloadError(f"{part}: cannot open: {e}") from e
        try:
            while remaining:
                try:
                    data = r.read1(min(self._read_size, remaining))
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise _Retry(f"connection dropped: {first_line(e)}") from e
                if not data:
                    raise _Retry(f"connection closed after {length - remaining} of {length} bytes")
                self.stats.bytes_received += len(data)
                self._write(f, data, part, side)
                remaining -= len(data)
                if _on_bytes is not None:
                    _on_bytes("download", len(data))
                if self._bucket is not None:
                    wait = self._bucket.debit(len(data), self._clock())
                    if wait > 0:
                        self._sleep(wait)
            if have + expect == length:
                try:
                    extra = r.read1(1)
                except (urllib3.exceptions.HTTPError, OSError):
                    extra = b""  # the body is complete; how the connection ended is moot
                if extra:
                    self.stats.bytes_received += len(extra)
                    f.close()
                    self._drop(part, side)
                    raise OversizeError(
                        f"{url}: server sent more than the signed {length} bytes; cut there "
                        "and refused"
                    )
        finally:
            if not f.closed:
                with contextlib.suppress(OSError):
                    os.fsync(f.fileno())
                f.close()

    def _write(self, f: Any, data: bytes, part: Path, side: Path) -> None:
        view = memoryview(data)
        try:
            while view:
                n = f.write(view)
                view = view[n:]
        except OSError as e:
            f.close()
            self._drop(part, side)  # a full disk gets its space back
            raise DownloadError(f"{part}: cannot write ({first_line(e)}); partial deleted") from e

    def _finish(
        self, url: str, part: Path, side: Path, length: int, sha256: str, dest: Path
    ) -> None:
        if length == 0 and not part.exists():
            part.touch()
        h = hashlib.sha256()
        size = 0
        try:
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as e:
            raise DownloadError(f"{part}: cannot read back: {e}") from e
        if size != length or h.hexdigest() != sha256:
            self._drop(part, side)
            raise HashMismatchError(
                f"{url}: downloaded {size} bytes hash to {h.hexdigest()[:16]}…, signed "
                f"{length} bytes {sha256[:16]}…; partial deleted"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(part, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise DownloadError(f"{dest}: cannot move the download there: {e}") from e
            shutil.move(part, dest)
        with contextlib.suppress(OSError):
            side.unlink(missing_ok=True)
        self.stats.files += 1
