"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, moto's server), via boto3.

The same content-addressed layout as the local folder, as object keys:
``<prefix><ab>/<abcdef…>``. A blob being written is spooled to a local temp file while it is
hashed; only when its hash checked is it uploaded (``upload_file``: multipart for big blobs), so
an object's key always matches its content and a reader never sees half a blob. Several hub
replicas share the bucket; two of them storing the same blob write the same bytes.

Methods are blocking (boto3); the app calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from hub.errors import BadRequest, NotFound
from hub.storage.blobs_fs import check_sha256

__all__ = ["S3BlobStore", "S3Config"]


class S3Config(BaseModel):
    """Where the blobs live when they are not in ``<data>/blobs``."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=3, max_length=63, description="the bucket (must exist)")
    prefix: str = Field(default="blobs/", max_length=200, description="key prefix of every blob")
    endpoint_url: str | None = Field(
        default=None, description="the S3-compatible server (none: AWS's endpoint for the region)"
    )
    region: str | None = Field(default=None, description="region name (none: boto3's default)")
    access_key_id: str | None = Field(
        default=None, description="credentials (none: boto3's chain — environment, profile, role)"
    )
    secret_access_key: str | None = Field(default=None, description="see access_key_id")


class S3BlobWriter:
    """A blob being written: spooled to a temp file, uploaded on :meth:`commit`."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        fd, tmp = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=store.tmp_dir)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self._tmp = Path(tmp)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk (hashed as it goes)."""
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Upload the blob; return (sha256, newly stored). Raises BadRequest on a hash mismatch
        (and keeps nothing)."""
        sha256 = self._hash.hexdigest()
        try:
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BadRequest(f"content hashes to {sha256}, not {expected_sha256}")
            if self._store.size(sha256) is not None:
                return sha256, False
            self._file.flush()
            self._file.seek(0)
            self._store.client.upload_fileobj(
                self._file, self._store.bucket, self._store.key(sha256)
            )
            return sha256, True
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temp file (safe to call more than once)."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class S3BlobStore:
    """Content-addressed objects in one bucket (see module doc)."""

    def __init__(self, cfg: S3Config, tmp_dir: Path) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            region_name=cfg.region,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            config=Config(
                max_pool_connections=32,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def key(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def check(self) -> None:
        """Raise RuntimeError (one line) when the bucket cannot be reached."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise RuntimeError(f"blob bucket {self.bucket!r} is not reachable: {e}") from e

    def size(self, sha256: str) -> int | None:
        """Size in bytes of a stored blob, or None if it is not stored."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except BadRequest:
            return None
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def has(self, sha256: str) -> bool:
        """True if a blob with this hash is stored."""
        return self.size(sha256) is not None

    def _get(self, sha256: str, **kw: Any) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256), **kw)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"no blob {sha256}") from None
            raise
        return bytes(obj["Body"].read())

    def read(self, sha256: str) -> bytes:
        """The blob's bytes. Raises NotFound."""
        return self._get(sha256)

    def read_range(self, sha256: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of a blob. Raises NotFound."""
        if end <= start:
            return b""
        return self._get(sha256, Range=f"bytes={start}-{end - 1}")

    def writer(self) -> S3BlobWriter:
        """Start writing a blob whose hash is known only at the end."""
        return S3BlobWriter(self)

    def put(self, data: bytes, expected_sha256: str | None = None) -> tuple[str, bool]:
        """Store ``data``; return (sha256, newly stored). Raises BadRequest on a hash mismatch."""
        w = self.writer()
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit(expected_sha256)
