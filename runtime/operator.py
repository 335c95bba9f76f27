"""Operator commands that work on the device's state folder, with the service up or down.

``leanloop status`` reads ``status.json`` (written every second by the service) and tells
whether the service is alive from ``service.pid``. ``leanloop rollback`` edits the slot state
with the same atomic, persisted transitions the service uses; it refuses while the service runs
(the service owns the state then: stop it first, e.g. ``systemctl stop leanloop``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError, UpdateError
from runtime.update.slots import Slots

__all__ = ["give_feedback", "list_samples", "offline_rollback", "read_status", "service_pid"]


def service_pid(state_dir: Path) -> int | None:
    """The pid of the running service, or None when it is not running."""
    try:
        pid = int(json.loads((state_dir / "service.pid").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def read_status(state_dir: Path) -> dict[str, Any]:
    if not state_dir.is_dir():
        raise ConfigError(f"{state_dir}: no such state folder")
    st: dict[str, Any] = {}
    try:
        st = json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        slots = Slots(state_dir)
        act = slots.state.active
        if act:
            i = slots.info(act)
            st["active"] = {
                "slot": act,
                "bundle": i.bundle,
                "version": i.version,
                "status": i.status,
            }
    st["running"] = service_pid(state_dir) is not None
    return st


def offline_rollback(state_dir: Path) -> str:
    if service_pid(state_dir) is not None:
        raise UpdateError(
            f"the service is running (pid {service_pid(state_dir)}); stop it first "
            "(systemctl stop leanloop), then roll back"
        )
    slots = Slots(state_dir)
    slot = slots.rollback()
    i = slots.info(slot)
    return f"rolled back to {i.bundle} v{i.version} (slot {slot})"


def list_samples(state_dir: Path, top: int, max_bytes: int) -> list[dict[str, Any]]:
    """The ``top`` pending samples, most valuable first.

    ``max_bytes`` must be the service's ``store.max_bytes``: LMDB's map size is shared by every
    process that opens the store, so the operator opens it exactly as the service does.
    """
    from runtime.store.lmdb_store import SampleStore

    path = state_dir / "samples"
    if not path.exists():
        return []
    store = SampleStore(path, max_bytes=max_bytes)
    try:
        rows = []
        for r in store.top(top, state="pending"):
            items = r.prediction.get("stages", {})
            last = list(items.values())[-1]["items"] if items else []
            rows.append(
                {
                    "id": r.id,
                    "priority": r.priority,
                    "frame_id": r.frame_id,
                    "bundle": r.bundle,
                    "bundle_version": r.bundle_version,
                    "summary": " ".join(f"{i['label']}:{i['score']:.2f}" for i in last),
                    "upload_state": r.upload_state,
                    "scores": r.scores,
                    "feedback": r.feedback.to_dict() if r.feedback else None,
                }
            )
        return rows
    finally:
        store.close()


def _active_classes(state_dir: Path) -> tuple[list[str], int]:
    from runtime.bundle.loader import read_manifest

    slots = Slots(state_dir)
    d = slots.active_dir
    if d is None:
        raise UpdateError("no active bundle: cannot check labels against its ontology")
    m = read_manifest(d)
    return list(m.ontology.classes), m.version


def give_feedback(
    state_dir: Path,
    max_bytes: int,
    sample_id: str,
    label: str | None,
    who: str,
    item: int | None = None,
) -> dict[str, Any]:
    """Record a confirmation (``label`` None) or a correction on a stored sample.

    Works with the service up or down (LMDB serialises writers across processes). Raises
    ConfigError for a label the active bundle's ontology does not know, StoreError for an
    unknown sample.
    """
    import time

    from runtime.store.lmdb_store import SampleStore
    from runtime.store.record import Feedback

    classes, version = _active_classes(state_dir)
    if label is not None and label not in classes:
        raise ConfigError(
            f"unknown label {label!r}: the active bundle's ontology has {', '.join(classes)}"
        )
    path = state_dir / "samples"
    if not path.exists():
        raise ConfigError(f"{path}: no sample store")
    fb = Feedback(
        kind="correct" if label is not None else "confirm",
        label=label,
        who=who,
        when=time.time(),
        bundle_version=version,
        item=item,
    )
    store = SampleStore(path, max_bytes=max_bytes)
    try:
        rec = store.set_feedback(sample_id, fb)
    finally:
        store.close()
    return {"id": rec.id, "priority": rec.priority, "feedback": fb.to_dict()}
