"""The online TUF repository core, without HTTP: freshness re-signing, crash recovery, lookups."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Timestamp

from hub.errors import BadRequest, Conflict, NotFound
from hub.repository import TufRepository
from hub.signing import (
    KEY_FILES,
    init_keys,
    load_signer,
    resign_targets,
    rotate_root,
    sign_targets,
)
from hub.storage import BlobStore
from runtime.timefloor import ISSUED_FIELD, parse_utc

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


# -- root rotation -----------------------------------------------------------------------------


@pytest.fixture
def own_keys(tmp_path: Path) -> Path:
    """A keys folder of this test alone (rotation changes it)."""
    out = tmp_path / "own-keys"
    init_keys(out)
    return out


def _rotate_repo(tmp_path: Path, own_keys: Path) -> tuple[Path, BlobStore, TufRepository]:
    blobs = BlobStore(tmp_path / "blobs")
    repo = TufRepository.open(tmp_path, blobs.size, own_keys, timestamp_expiry=DAY)
    _publish(repo, blobs, own_keys, b"one")
    return tmp_path, blobs, repo


def _online(keys: Path) -> dict[str, bytes]:
    return {role: (keys / KEY_FILES[role]).read_bytes() for role in ("snapshot", "timestamp")}


def test_accept_root_when_every_key_rotated_serves_chain_and_resigns_with_new_keys(
    tmp_path: Path, own_keys: Path
) -> None:
    data, blobs, repo = _rotate_repo(tmp_path, own_keys)
    rotate_root(own_keys, {"root", "targets", "snapshot", "timestamp"})
    targets = resign_targets(repo.current_targets_bytes() or b"", own_keys)
    root2 = (own_keys / "root.json").read_bytes()
    assert repo.accept_root(root2, targets, _online(own_keys)) == 2
    assert repo.accept_root(root2) == 2  # posting it again is a no-op
    assert repo.metadata_bytes("2.root.json") == root2
    assert Metadata[Root].from_bytes(repo.metadata_bytes("1.root.json")).signed.version == 1
    new_root = Metadata[Root].from_bytes(root2).signed
    ts = _timestamp(data)
    new_root.verify_delegate("timestamp", ts.signed_bytes, ts.signatures)
    assert repo.targets_version == 2
    for role in ("snapshot", "timestamp"):
        assert (data / "keys" / "online" / f"{role}.key").read_bytes() == _online(own_keys)[role]
        assert not (data / "keys" / "online" / f"{role}.next.key").exists()
    reopened = _open(data, blobs)  # the new online keys match the new root
    assert reopened.root_version == 2
    assert _publish(reopened, blobs, own_keys, b"two") == 3


def test_accept_root_when_signed_only_by_new_root_key_is_bad_request(
    tmp_path: Path, own_keys: Path
) -> None:
    _, _, repo = _rotate_repo(tmp_path, own_keys)
    forged = rotate_root(own_keys, {"root"})
    forged.signatures.clear()
    forged.sign(load_signer(own_keys / KEY_FILES["root"]))
    with pytest.raises(BadRequest, match="root keys of version 1"):
        repo.accept_root(forged.to_bytes())
    assert repo.root_version == 1
    with pytest.raises(NotFound):
        repo.metadata_bytes("2.root.json")


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        ({"targets"}, "re-signed with the new targets key"),
        ({"timestamp"}, "does not name the hub's timestamp key"),
        ({"snapshot"}, "does not name the hub's snapshot key"),
    ],
)
def test_accept_root_when_hub_could_not_serve_it_is_bad_request(
    tmp_path: Path, own_keys: Path, replace: set[str], match: str
) -> None:
    data, _, repo = _rotate_repo(tmp_path, own_keys)
    before = _timestamp(data).signed.version
    rotate_root(own_keys, replace)
    with pytest.raises(BadRequest, match=match):
        repo.accept_root((own_keys / "root.json").read_bytes())
    assert repo.root_version == 1
    assert _timestamp(data).signed.version == before


def test_accept_root_when_version_skips_is_conflict(tmp_path: Path, own_keys: Path) -> None:
    _, _, repo = _rotate_repo(tmp_path, own_keys)
    rotate_root(own_keys, set())
    rotate_root(own_keys, set())
    with pytest.raises(Conflict, match="not 2"):
        repo.accept_root((own_keys / "root.json").read_bytes())
    assert repo.accept_root((own_keys / "roots" / "2.root.json").read_bytes()) == 2
    assert repo.accept_root((own_keys / "root.json").read_bytes()) == 3


@pytest.mark.parametrize("root_written", [False, True])
def test_open_when_crashed_during_online_key_switch_keeps_keys_the_root_names(
    tmp_path: Path, own_keys: Path, root_written: bool
) -> None:
    data, blobs, _ = _rotate_repo(tmp_path, own_keys)
    online = data / "keys" / "online"
    rotate_root(own_keys, {"timestamp"})
    new_key = _online(own_keys)["timestamp"]
    (online / "timestamp.next.key").write_bytes(new_key)  # the crash: written, not moved
    if root_written:
        (data / "tuf" / "2.root.json").write_bytes((own_keys / "root.json").read_bytes())
    reopened = _open(data, blobs)
    assert not (online / "timestamp.next.key").exists()
    assert ((online / "timestamp.key").read_bytes() == new_key) == root_written
    assert reopened.root_version == (2 if root_written else 1)
    root = Metadata[Root].from_bytes(reopened.root_bytes).signed
    ts = _timestamp(data)
    root.verify_delegate("timestamp", ts.signed_bytes, ts.signatures)  # re-signed if needed


def test_timestamp_when_signed_carries_issue_time_within_its_life(
    repo_parts: tuple[Path, BlobStore], keys_dir: Path
) -> None:
    data, blobs = repo_parts
    repo = _open(data, blobs)
    _publish(repo, blobs, keys_dir, b"one")
    ts = _timestamp(data).signed
    issued = parse_utc(ts.unrecognized_fields[ISSUED_FIELD])
    assert issued is not None
    assert abs(issued - datetime.now(UTC)) < timedelta(minutes=1)
    assert ts.expires - issued == DAY


def test_open_when_keys_folder_was_rotated_imports_whole_root_chain(
    tmp_path: Path, own_keys: Path
) -> None:
    rotate_root(own_keys, {"snapshot", "timestamp"})
    rotate_root(own_keys, {"root"})
    blobs = BlobStore(tmp_path / "blobs")
    repo = TufRepository.open(tmp_path, blobs.size, own_keys)  # a new hub for a rotated fleet
    assert repo.root_version == 3
    for v in (1, 2, 3):
        assert (
            repo.metadata_bytes(f"{v}.root.json")
            == (own_keys / "roots" / f"{v}.root.json").read_bytes()
        )
    assert _publish(repo, blobs, own_keys, b"one") == 1


def test_open_when_root_chain_has_a_gap_raises_config_error(tmp_path: Path, own_keys: Path) -> None:
    from runtime.errors import ConfigError

    rotate_root(own_keys, set())
    rotate_root(own_keys, set())
    (own_keys / "roots" / "2.root.json").unlink()
    with pytest.raises(ConfigError, match="every root version"):
        TufRepository.open(tmp_path, lambda _sha: None, own_keys)
    assert not (tmp_path / "tuf" / "1.root.json").exists()
