"""Blobs in a local folder, content-addressed by sha256, and partial uploads of samples.

A blob is written to a temp file in ``<root>/tmp``, fsynced, and ``os.replace``d into place only
after its hash checked, so a reader never sees half a blob and a name always matches its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Literal

from hub.errors import BadRequest, NotFound
from runtime._atomic import fsync_dir

SampleState = Literal["pending", "annotated"]
JobState = Literal["queued", "running", "done", "failed"]


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str) -> str:
    """Return ``value`` if it is 64 lower-case hex digits; raise BadRequest otherwise."""
    if not _SHA256_RE.match(value):
        raise BadRequest(f"{value[:80]!r} is not a lower-case hex sha256")
    return value


class BlobWriter:
    """A blob being written: feed chunks, then :meth:`commit` (checks the hash) or :meth:`abort`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, tmp = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=store.tmp_dir)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk (hashed as it goes)."""
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Fsync and move the blob into place; return (sha256, newly stored).

        Raises BadRequest (and keeps nothing) if the content does not hash to
        ``expected_sha256``. Storing a blob that already exists is a no-op.
        """
        sha256 = self._hash.hexdigest()
        try:
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BadRequest(f"content hashes to {sha256}, not {expected_sha256}")
            final = self._store.path(sha256)
            if final.exists():
                return sha256, False
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
            return sha256, True
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temp file (safe to call more than once)."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class BlobStore:
    """Content-addressed files under ``root``: ``root/ab/abcdef…`` named by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("*.tmp"):  # left by a crash mid-upload
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def size(self, sha256: str) -> int | None:
        """Size in bytes of a stored blob, or None if it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except (FileNotFoundError, BadRequest):
            return None

    def has(self, sha256: str) -> bool:
        """True if a blob with this hash is stored."""
        return self.size(sha256) is not None

    def read(self, sha256: str) -> bytes:
        """The blob's bytes. Raises NotFound."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}") from None

    def read_range(self, sha256: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of a blob. Raises NotFound."""
        try:
            with self.path(sha256).open("rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}") from None

    def writer(self) -> BlobWriter:
        """Start writing a blob whose hash is known only at the end."""
        return BlobWriter(self)

    def put(self, data: bytes, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Store ``data``; return (sha256, newly stored). Raises BadRequest on a hash mismatch."""
        w = self.writer()
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit(expected_sha256)


class PartialUploads:
    """Sample payloads being uploaded in parts: ``<root>/<device>/<id>.<sha256>.<length>.part``.

    The file name carries everything the hub must remember about an upload, and the file's size
    *is* the offset the device resumes from, so there is no second state to disagree with. A
    new payload for the same sample id (its meta changed on the device) replaces the old one.
    Files untouched for ``max_age_s`` are removed at start (a device that never came back).
    """

    def __init__(self, root: Path, max_age_s: float = 7 * 86400, per_device: int = 16) -> None:
        self.root = Path(root)
        self.per_device = per_device
        self.root.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - max_age_s
        for stale in self.root.glob("*/*.part"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()

    def path(self, device_id: str, sample_id: str, sha256: str, length: int) -> Path:
        check_sha256(sha256)
        return self.root / device_id / f"{sample_id}.{sha256}.{int(length)}.part"

    def offset(self, device_id: str, sample_id: str, sha256: str) -> int:
        """Bytes held of this payload (0: none)."""
        for p in (self.root / device_id).glob(f"{sample_id}.{check_sha256(sha256)}.*.part"):
            with contextlib.suppress(OSError):
                return p.stat().st_size
        return 0

    def drop(self, device_id: str, sample_id: str, keep: Path | None = None) -> None:
        """Remove the partial uploads of a sample (all but ``keep``)."""
        for p in (self.root / device_id).glob(f"{sample_id}.*.part"):
            if p != keep:
                p.unlink(missing_ok=True)

    def make_room(self, device_id: str, keep: Path) -> None:
        """Keep at most ``per_device`` partial uploads of a device: the oldest others go.

        A device uploads one sample at a time, so more means abandoned uploads (or a device
        misbehaving); this bounds the disk a device can hold with partial bytes.
        """
        parts = []
        for p in (self.root / device_id).glob("*.part"):
            with contextlib.suppress(OSError):
                parts.append((p.stat().st_mtime, p))
        parts.sort()
        for _, p in parts[: max(0, len(parts) - self.per_device + 1)]:
            if p != keep:
                p.unlink(missing_ok=True)
