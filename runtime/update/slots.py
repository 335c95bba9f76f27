"""Two bundle slots (A/B) and the persisted state that says which one serves.

``<state>/slots.json`` holds the slot table (status, bundle, version of each slot, which one is
active, which one was the previous committed one) *and* the install state machine's record
(:mod:`runtime.update.machine`). Both change in one atomic write: the machine calls the
``*_nosave`` methods here and stores the result with its next state, before that state's work
starts. What a restart does about each stored state is the machine's recovery map; the
:meth:`Slots.recover` here is only a safety net for slot states older files leave behind.

Versions never go down: ``highest`` remembers, per bundle name, the highest version ever
activated, and staging a lower or equal one is refused (except through an explicit rollback).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime._atomic import atomic_write_bytes
from runtime.errors import UpdateError, first_line
from runtime.update.machine import InstallRecord

__all__ = ["SlotInfo", "SlotName", "Slots", "SlotsState"]

SlotName = Literal["a", "b"]
SlotStatus = Literal["empty", "staging", "staged", "trial", "committed", "bad"]


class SlotInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: SlotStatus = "empty"
    bundle: str | None = None
    version: int | None = None


class SlotsState(BaseModel):
    """``slots.json``: persisted names never change (devices in the field read old files)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["leanloop.slots/1"] = "leanloop.slots/1"
    active: SlotName | None = None
    previous: SlotName | None = None
    slots: dict[SlotName, SlotInfo] = Field(
        default_factory=lambda: {"a": SlotInfo(), "b": SlotInfo()}  # type: ignore[arg-type]
    )
    highest: dict[str, int] = Field(default_factory=dict)
    bad_versions: dict[str, list[int]] = Field(default_factory=dict)
    held: dict[str, list[int]] = Field(
        default_factory=dict,
        description="versions an operator rolled back from: not installed again until the "
        "operator marks them good (a newer version is installed as usual)",
    )
    last_event: str = ""
    install: InstallRecord = Field(
        default_factory=InstallRecord, description="the install state machine's record"
    )


class Slots:
    """The A/B slot folders under ``<state>/slots`` and their state file."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self.path = self.root / "slots.json"
        self.state = self._load()

    def _load(self) -> SlotsState:
        if not self.path.exists():
            return SlotsState()
        try:
            return SlotsState.model_validate(json.loads(self.path.read_bytes()))
        except (OSError, ValueError, ValidationError) as e:
            raise UpdateError(f"{self.path}: unreadable slot state: {first_line(e)}") from e

    def save(self, event: str) -> None:
        self.state.last_event = event
        atomic_write_bytes(self.path, self.state.model_dump_json(indent=2).encode() + b"\n")

    def dir(self, slot: SlotName) -> Path:
        return self.root / "slots" / slot

    @property
    def active_dir(self) -> Path | None:
        return self.dir(self.state.active) if self.state.active else None

    def inactive(self) -> SlotName:
        return "b" if self.state.active == "a" else "a"

    def info(self, slot: SlotName) -> SlotInfo:
        return self.state.slots[slot]

    def recover(self, keep: SlotName | None = None) -> list[str]:
        """Safety net for slot states the install record does not explain (files written by
        older releases): wipe ``staging``/``staged`` slots that are not active (but ``keep``, a
        staged slot the install record explains), roll back an active ``trial`` slot. The
        install machine's recovery runs first. Returns what it did."""
        did: list[str] = []
        for name, info in self.state.slots.items():
            if name == keep and info.status == "staged":
                continue
            if info.status in ("staging", "staged") and name != self.state.active:
                self.discard_nosave(name)
                did.append(f"slot {name}: discarded a half-staged bundle")
        act = self.state.active
        if act is not None and self.state.slots[act].status == "trial":
            info = self.state.slots[act]
            who = f"{info.bundle} v{info.version}"
            back = self.fail_trial_nosave()
            did.append(
                f"slot {act}: {who} was in trial at restart; "
                + (f"rolled back to slot {back}" if back else "no fallback")
            )
        if did:
            self.save("recover")
        return did

    def _mark_bad(self, info: SlotInfo) -> None:
        if info.bundle and info.version is not None:
            bad = self.state.bad_versions.setdefault(info.bundle, [])
            if info.version not in bad:
                bad.append(info.version)

    def _hold(self, info: SlotInfo) -> None:
        if info.bundle and info.version is not None:
            held = self.state.held.setdefault(info.bundle, [])
            if info.version not in held:
                held.append(info.version)

    def is_held(self, bundle: str, version: int) -> bool:
        """An operator rolled back from ``bundle`` ``version`` (it waits for mark-good)."""
        return version in self.state.held.get(bundle, [])

    def mark_good_nosave(self, bundle: str, version: int) -> bool:
        """Forget that ``bundle`` ``version`` was rolled back from or failed here; True if it
        was held or bad (the device may then install it again)."""
        found = False
        for table in (self.state.held, self.state.bad_versions):
            versions = table.get(bundle, [])
            if version in versions:
                versions.remove(version)
                found = True
            if not versions:
                table.pop(bundle, None)
        return found

    def check_version(self, bundle: str, version: int) -> None:
        """Refuse versions that would go down or that already failed here. Raises UpdateError."""
        act = self.state.active
        if act is not None:
            info = self.state.slots[act]
            if info.bundle == bundle and info.version is not None and version <= info.version:
                raise UpdateError(
                    f"{bundle} v{version} is not newer than the active v{info.version}"
                )
        high = self.state.highest.get(bundle)
        if high is not None and version < high:
            raise UpdateError(f"{bundle} v{version} is older than v{high} already installed")
        if version in self.state.bad_versions.get(bundle, []):
            raise UpdateError(f"{bundle} v{version} failed on this device before")
        if self.is_held(bundle, version):
            raise UpdateError(
                f"{bundle} v{version} is held back: an operator rolled back from it "
                f"(leanloop mark-good {version} allows it again)"
            )

    # ---- in-memory changes, stored by the caller (the install machine stores them together
    # ---- with its next state in one atomic write) ---------------------------------------------

    def begin_staging_nosave(self, bundle: str, version: int) -> SlotName:
        """Mark the inactive slot ``staging`` for ``bundle`` ``version``. Raises UpdateError."""
        self.check_version(bundle, version)
        slot = self.inactive()
        self.state.slots[slot] = SlotInfo(status="staging", bundle=bundle, version=version)
        return slot

    def prepare_dir(self, slot: SlotName) -> Path:
        """Empty ``slot``'s folder (after ``staging`` is stored) and return it."""
        d = self.dir(slot)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def discard_nosave(self, slot: SlotName, bad: bool = False) -> None:
        """Wipe a slot that is not active (its files first: a crash leaves it for recovery)."""
        info = self.state.slots[slot]
        if bad:
            self._mark_bad(info)
        shutil.rmtree(self.dir(slot), ignore_errors=True)
        self.state.slots[slot] = SlotInfo()

    def mark_staged_nosave(self, slot: SlotName) -> None:
        self.state.slots[slot].status = "staged"

    def activate_nosave(self, slot: SlotName) -> None:
        """Make ``slot`` (staged) active with status ``trial``. Raises UpdateError."""
        info = self.state.slots[slot]
        if info.status != "staged":
            raise UpdateError(f"slot {slot} is {info.status}, not staged")
        info.status = "trial"
        if self.state.active is not None and self.state.active != slot:
            self.state.previous = self.state.active
        self.state.active = slot
        if info.bundle and info.version is not None:
            self.state.highest[info.bundle] = max(
                info.version, self.state.highest.get(info.bundle, 0)
            )

    def undo_activation_nosave(self, slot: SlotName, bad: bool = False) -> None:
        """Return from a just-activated ``slot`` to the previous one and wipe ``slot``."""
        if self.state.active == slot:
            self.state.active, self.state.previous = self.state.previous, None
        self.discard_nosave(slot, bad=bad)

    def commit_nosave(self) -> None:
        act = self.state.active
        if act is not None and self.state.slots[act].status == "trial":
            self.state.slots[act].status = "committed"

    def fail_trial_nosave(self, hold: bool = False) -> SlotName | None:
        """Leave the active bundle for the previous committed slot, if any. Its version is
        marked bad, or only held back (``hold``: an operator's rollback is not a failure)."""
        act = self.state.active
        if act is None:
            return None
        info = self.state.slots[act]
        if hold:
            self._hold(info)
        else:
            self._mark_bad(info)
        info.status = "bad"
        prev = self.state.previous
        if prev is not None and self.state.slots[prev].status == "committed":
            self.state.active, self.state.previous = prev, None
        else:
            self.state.active = None
        return self.state.active

    # ---- the same steps, each stored at once (tools and tests) ---------------------------------

    def begin_staging(self, bundle: str, version: int) -> tuple[SlotName, Path]:
        """Persist ``staging`` for the inactive slot, then empty its folder."""
        slot = self.begin_staging_nosave(bundle, version)
        self.save(f"staging {bundle} v{version} in slot {slot}")
        return slot, self.prepare_dir(slot)

    def abort_staging(self, slot: SlotName, reason: str, bad: bool = False) -> None:
        self.discard_nosave(slot, bad=bad)
        self.save(f"aborted slot {slot}: {reason}")

    def mark_staged(self, slot: SlotName) -> None:
        self.mark_staged_nosave(slot)
        self.save(f"staged slot {slot}")

    def activate(self, slot: SlotName) -> None:
        """Persist the switch (status ``trial``) before the service serves from ``slot``."""
        self.activate_nosave(slot)
        info = self.state.slots[slot]
        self.save(f"activated slot {slot} ({info.bundle} v{info.version}) for trial")

    def commit(self) -> None:
        self.commit_nosave()
        self.save(f"committed slot {self.state.active}")

    def fail_trial(self, reason: str) -> SlotName | None:
        """The active bundle failed its trial: go back to the previous committed slot."""
        act = self.state.active
        back = self.fail_trial_nosave()
        self.save(f"trial failed for slot {act}: {reason}")
        return back

    def rollback(self) -> SlotName:
        """Operator rollback to the previous committed bundle. Raises UpdateError if none."""
        prev = self.state.previous
        if prev is None or self.state.slots[prev].status != "committed":
            raise UpdateError("no previous committed bundle to roll back to")
        self.fail_trial_nosave()
        info = self.state.slots[prev]
        self.save(f"operator rollback to slot {prev} ({info.bundle} v{info.version})")
        return prev

    def free_bytes(self) -> int:
        """Free bytes where the slots live (for the plan's space check and the status)."""
        d = self.root / "slots"
        d.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(d)
        return st.f_bavail * st.f_frsize
