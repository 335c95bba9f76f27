from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import UpdateError
from runtime.update.slots import Slots


def _install(slots: Slots, bundle: str, version: int) -> str:
    slot, d = slots.begin_staging(bundle, version)
    (d / "manifest.json").write_text("{}")
    slots.mark_staged(slot)
    slots.activate(slot)
    slots.commit()
    return slot


def test_slots_alternate_when_two_versions_are_installed(tmp_path: Path) -> None:
    s = Slots(tmp_path)
    a = _install(s, "digits", 1)
    b = _install(s, "digits", 2)
    assert (a, b) == ("a", "b")
    assert s.state.active == "b" and s.state.previous == "a"
    assert Slots(tmp_path).state.active == "b"  # persisted


def test_staging_is_refused_when_version_is_not_newer(tmp_path: Path) -> None:
    s = Slots(tmp_path)
    _install(s, "digits", 3)
    with pytest.raises(UpdateError, match="not newer"):
        s.begin_staging("digits", 3)
    with pytest.raises(UpdateError, match="not newer"):
        s.begin_staging("digits", 2)


def test_recover_discards_slot_when_killed_during_staging(tmp_path: Path) -> None:
    s = Slots(tmp_path)
    _install(s, "digits", 1)
    slot, d = s.begin_staging("digits", 2)
    (d / "half").write_bytes(b"x" * 10)
    s2 = Slots(tmp_path)  # the process restarted
    did = s2.recover()
    assert did and "half-staged" in did[0]
    assert not d.exists()
    assert s2.state.active == "a" and s2.info(slot).status == "empty"


def test_recover_rolls_back_when_killed_during_trial(tmp_path: Path) -> None:
    s = Slots(tmp_path)
    _install(s, "digits", 1)
    slot, _ = s.begin_staging("digits", 2)
    s.mark_staged(slot)
    s.activate(slot)
    s2 = Slots(tmp_path)
    s2.recover()
    assert s2.state.active == "a"
    assert 2 in s2.state.bad_versions["digits"]
    with pytest.raises(UpdateError, match="failed on this device"):
        s2.check_version("digits", 2)
    s2.check_version("digits", 3)


def test_operator_rollback_returns_to_previous_when_one_is_committed(tmp_path: Path) -> None:
    s = Slots(tmp_path)
    _install(s, "digits", 1)
    _install(s, "digits", 2)
    assert s.rollback() == "a"
    assert s.info("a").version == 1
    with pytest.raises(UpdateError, match="no previous"):
        s.rollback()


def test_state_file_is_unchanged_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Slots(tmp_path)
    _install(s, "digits", 1)
    before = (tmp_path / "slots.json").read_bytes()

    def boom(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        s.begin_staging("digits", 2)
    assert (tmp_path / "slots.json").read_bytes() == before
    assert json.loads(before)["active"] == "a"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
