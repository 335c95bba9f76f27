"""Admin-side signing: keys init and targets signing, verified with python-tuf itself."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Targets

from hub.errors import Conflict
from hub.signing import (
    KEY_FILES,
    init_keys,
    load_signer,
    resign_targets,
    rotate_root,
    sign_targets,
    verify_root_chain,
)
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


def _fresh_keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    init_keys(out)
    return out


@pytest.mark.parametrize("replace", [set(), {"targets"}, {"root"}, set(KEY_FILES)])
def test_rotate_root_when_roles_replaced_chains_from_old_root_and_revokes_old_keys(
    tmp_path: Path, replace: set[str]
) -> None:
    keys = _fresh_keys(tmp_path)
    old = _root(keys)
    old_pems = {role: (keys / rel).read_bytes() for role, rel in KEY_FILES.items()}
    new = rotate_root(keys, replace)
    assert new.signed.version == 2
    verify_root_chain(old.signed, new)
    assert _root(keys).to_dict() == new.to_dict()
    assert (keys / "roots" / "2.root.json").read_bytes() == (keys / "root.json").read_bytes()
    for role, rel in KEY_FILES.items():
        changed = (keys / rel).read_bytes() != old_pems[role]
        assert changed == (role in replace), role
        assert (set(new.signed.roles[role].keyids) == set(old.signed.roles[role].keyids)) == (
            role not in replace
        )
        if role in replace:
            assert (keys / "retired" / "v1" / f"{role}.key").read_bytes() == old_pems[role]


def test_verify_root_chain_when_signed_only_by_new_root_key_raises(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    old = _root(keys)
    new = rotate_root(keys, {"root"})
    new.signatures.clear()
    new.sign(load_signer(keys / KEY_FILES["root"]))  # the new key alone
    with pytest.raises(TrustError, match="root keys of version 1"):
        verify_root_chain(old.signed, new)
    with pytest.raises(TrustError, match="its own root keys"):
        new.signatures.clear()
        new.sign(load_signer(keys / "retired" / "v1" / "root.key"))  # the old key alone
        verify_root_chain(old.signed, new)


def test_rotate_root_when_role_unknown_raises_config_error(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    with pytest.raises(ConfigError, match="unknown role"):
        rotate_root(keys, {"mirror"})
    assert _root(keys).signed.version == 1


def test_resign_targets_when_targets_key_rotated_signs_next_version_with_new_key(
    tmp_path: Path,
) -> None:
    keys = _fresh_keys(tmp_path)
    sha = hashlib.sha256(b"x").hexdigest()
    current = sign_targets(None, {"digits/1/a.bin": (sha, 1, None)}, keys)
    rotate_root(keys, {"targets"})
    with pytest.raises(TrustError, match="not signed by the targets key"):
        sign_targets(current, {}, keys)
    resigned = resign_targets(current, keys)
    md = Metadata[Targets].from_bytes(resigned)
    _root(keys).signed.verify_delegate("targets", md.signed_bytes, md.signatures)
    assert md.signed.version == 2
    assert set(md.signed.targets) == {"digits/1/a.bin"}
    assert resign_targets(resigned, keys) == resigned  # already valid: unchanged


def test_resign_targets_when_current_signed_by_foreign_key_raises(tmp_path: Path) -> None:
    keys = _fresh_keys(tmp_path)
    other = tmp_path / "other"
    init_keys(other)
    rotate_root(keys, {"targets"})
    with pytest.raises(TrustError, match="neither"):
        resign_targets(sign_targets(None, {}, other), keys)
