"""The online TUF repository core, without HTTP: freshness re-signing, crash recovery, lookups."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Timestamp

from hub.errors import BadRequest, Conflict, NotFound
from hub.repository import TufRepository
from hub.signing import sign_targets
from hub.storage import BlobStore

DAY = timedelta(days=1)


@pytest.fixture
def repo_parts(tmp_path: Path, keys_dir: Path) -> tuple[Path, BlobStore]:
    blobs = BlobStore(tmp_path / "blobs")
    TufRepository.open(tmp_path, blobs.size, keys_dir)
    return tmp_path, blobs


def _open(data: Path, blobs: BlobStore) -> TufRepository:
    return TufRepository.open(data, blobs.size, timestamp_expiry=DAY)


def _publish(repo: TufRepository, blobs: BlobStore, keys_dir: Path, content: bytes) -> int:
    sha, _ = blobs.put(content)
    signed = sign_targets(
        repo.current_targets_bytes(), {f"t/{sha[:8]}.bin": (sha, len(content), None)}, keys_dir
    )
    return repo.accept_targets(signed)


def _timestamp(data: Path) -> Metadata[Timestamp]:
    return Metadata[Timestamp].from_bytes((data / "tuf" / "timestamp.json").read_bytes())


def test_open_when_no_repository_and_no_keys_raises(tmp_path: Path) -> None:
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="--keys"):
        TufRepository.open(tmp_path, lambda _sha: None)


def test_refresh_timestamp_when_half_life_passed_resigns_with_higher_version(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    assert repo.refresh_timestamp() is False  # nothing published yet
    _publish(repo, blobs, keys_dir, b"one")
    before = _timestamp(data).signed
    now = datetime.now(UTC)
    assert repo.refresh_timestamp(now) is False
    assert repo.refresh_timestamp(now + DAY * 0.6) is True
    after = _timestamp(data).signed
    assert after.version == before.version + 1
    assert after.expires > before.expires
    assert after.snapshot_meta.version == before.snapshot_meta.version


def test_refresh_timestamp_when_snapshot_near_expiry_resigns_snapshot(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    _publish(repo, blobs, keys_dir, b"one")
    assert repo.refresh_timestamp(datetime.now(UTC) + timedelta(days=5)) is True
    assert _timestamp(data).signed.snapshot_meta.version == 2
    assert (data / "tuf" / "2.snapshot.json").exists()


def test_open_when_crashed_after_targets_write_finishes_snapshot_and_timestamp(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    _publish(repo, blobs, keys_dir, b"one")
    sha, _ = blobs.put(b"two")
    signed = sign_targets(repo.current_targets_bytes(), {"t/two": (sha, 3, None)}, keys_dir)
    (data / "tuf" / "2.targets.json").write_bytes(signed)  # the crash: nothing after this

    reopened = _open(data, blobs)
    assert reopened.targets_version == 2
    ts = _timestamp(data).signed
    snap = Metadata.from_bytes(
        (data / "tuf" / f"{ts.snapshot_meta.version}.snapshot.json").read_bytes()
    )
    assert snap.signed.meta["targets.json"].version == 2  # type: ignore[attr-defined]


def test_accept_targets_when_version_skips_is_conflict(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    v1 = sign_targets(None, {}, keys_dir)
    v2 = sign_targets(v1, {}, keys_dir)
    with pytest.raises(Conflict, match="not 1"):
        repo.accept_targets(v2)


def test_accept_targets_when_expired_is_bad_request(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    signed = sign_targets(None, {}, keys_dir, expires_days=1)
    with pytest.raises(BadRequest, match="expired"):
        repo.accept_targets(signed, now=datetime.now(UTC) + timedelta(days=2))


def test_target_blob_when_hash_is_not_the_current_target_is_not_found(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    sha, _ = blobs.put(b"payload")
    other, _ = blobs.put(b"not a target")
    repo.accept_targets(sign_targets(None, {"d/p.bin": (sha, 7, None)}, keys_dir))
    assert repo.target_blob(f"d/{sha}.p.bin") == (sha, 7)
    for bad in (f"d/{other}.p.bin", f"{sha}.p.bin", f"e/{sha}.p.bin", "d/p.bin"):
        with pytest.raises(NotFound):
            repo.target_blob(bad)
    assert hashlib.sha256(blobs.read(sha)).hexdigest() == sha
