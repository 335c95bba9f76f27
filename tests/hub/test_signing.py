"""Admin-side signing: keys init and targets signing, verified with python-tuf itself."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Targets

from hub.errors import Conflict
from hub.signing import KEY_FILES, init_keys, sign_targets
from runtime.errors import ConfigError, TrustError


def _root(keys_dir: Path) -> Metadata[Root]:
    return Metadata[Root].from_bytes((keys_dir / "root.json").read_bytes())


def test_init_keys_when_run_writes_self_signed_root_and_private_keys_0600(keys_dir: Path) -> None:
    root = _root(keys_dir)
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    assert root.signed.version == 1
    assert root.signed.consistent_snapshot is True
    for role, rel in KEY_FILES.items():
        assert root.signed.roles[role].threshold == 1
        assert len(root.signed.roles[role].keyids) == 1
        assert stat.S_IMODE((keys_dir / rel).stat().st_mode) == 0o600


def test_init_keys_when_root_exists_refuses(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="refusing"):
        init_keys(keys_dir)


def test_sign_targets_when_no_current_signs_version_1_that_root_accepts(keys_dir: Path) -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    data = sign_targets(None, {"digits/1/a.bin": (sha, 1, {"k": "v"})}, keys_dir)
    md = Metadata[Targets].from_bytes(data)
    _root(keys_dir).signed.verify_delegate("targets", md.signed_bytes, md.signatures)
    assert md.signed.version == 1
    assert md.signed.targets["digits/1/a.bin"].custom == {"k": "v"}

    data2 = sign_targets(data, {"digits/2/a.bin": (sha, 1, None)}, keys_dir)
    md2 = Metadata[Targets].from_bytes(data2)
    assert md2.signed.version == 2
    assert set(md2.signed.targets) == {"digits/1/a.bin", "digits/2/a.bin"}


def test_sign_targets_when_current_signed_by_other_key_raises_trust_error(
    keys_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    init_keys(other)
    foreign = sign_targets(None, {}, other)
    with pytest.raises(TrustError, match="not signed by the targets key"):
        sign_targets(foreign, {}, keys_dir)


def test_sign_targets_when_path_exists_with_other_hash_raises_conflict(keys_dir: Path) -> None:
    first = sign_targets(None, {"a": (hashlib.sha256(b"1").hexdigest(), 1, None)}, keys_dir)
    with pytest.raises(Conflict, match="different content"):
        sign_targets(first, {"a": (hashlib.sha256(b"2").hexdigest(), 1, None)}, keys_dir)
