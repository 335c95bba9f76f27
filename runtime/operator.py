"""Operator commands that work on the device, with the service up or down.

With the service running, ``leanloop status``, ``rollback``, ``feedback`` and ``mark-good`` go
through its control socket (:mod:`runtime.control`): the status is live, a rollback swaps
bundles between two frames, feedback goes through the service's own sample store, mark-good is
stored by the installer. With the service stopped they act on the state folder: ``status``
reads ``status.json`` (or the slot state), ``rollback`` runs the same persisted install-machine
transitions the service uses and ``mark-good`` edits the slot table, both through the installer
(:mod:`runtime.update.installer`, the only writer of the slots; both refuse if a service is
alive but does not answer: it owns the state then), ``feedback`` opens the store itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError, StoreError, UpdateError
from runtime.update.slots import Slots

__all__ = [
    "feedback",
    "give_feedback",
    "list_samples",
    "mark_good",
    "offline_rollback",
    "read_status",
    "rollback",
    "service_pid",
    "status",
    "status_notes",
]


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
        inst = slots.state.install
        st["update_state"] = inst.state.value
        st["install"] = inst.model_dump(
            mode="json", include={"state", "bundle", "version", "reason"}
        )
        act = slots.state.active
        if act:
            i = slots.info(act)
            st["active"] = {
                "slot": act,
                "bundle": i.bundle,
                "version": i.version,
                "status": i.status,
            }
        st["rolled_back_by_operator"] = inst.state.value == "rolled_back" and inst.by_operator
        st["held_back"] = {b: sorted(v) for b, v in slots.state.held.items() if v}
        from runtime.quarantine import quarantine_summary

        st["quarantine"] = quarantine_summary(state_dir)
    st["running"] = service_pid(state_dir) is not None
    return st


def offline_rollback(state_dir: Path) -> str:
    if service_pid(state_dir) is not None:
        raise UpdateError(
            f"the service is running (pid {service_pid(state_dir)}); stop it first "
            "(systemctl stop leanloop), then roll back"
        )
    from runtime.update.installer import rollback_offline

    return rollback_offline(state_dir)


def mark_good(state_dir: Path, version: int, bundle: str | None = None) -> str:
    """Let ``bundle`` ``version`` be installed again after an operator rollback (or a failure),
    through the service when it runs. Raises UpdateError, ConfigError."""
    from runtime.control import request
    from runtime.update.installer import mark_good_offline

    if not state_dir.is_dir():
        raise ConfigError(f"{state_dir}: no such state folder")
    live = request(state_dir, "mark_good", version=version, bundle=bundle)
    if live is not None:
        return str(live["message"])
    if service_pid(state_dir) is not None:
        raise UpdateError(
            f"the service is running (pid {service_pid(state_dir)}) but not answering"
        )
    return mark_good_offline(state_dir, version, bundle)


def status(state_dir: Path) -> dict[str, Any]:
    """The live status from the running service, else what the state folder says."""
    from runtime.control import request

    if state_dir.is_dir():
        live = request(state_dir, "status", timeout_s=10.0)
        if live is not None:
            return {**live, "running": True}
    return read_status(state_dir)


def status_notes(st: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows ``leanloop status`` adds when something needs the operator's eye: a rollback the
    operator asked for (not a failure), versions held back, quarantined records, a shadow
    candidate that waits."""
    rows: list[tuple[str, str]] = []
    if st.get("rolled_back_by_operator"):
        rows.append(("rollback", "rolled back by operator"))
    for bundle, versions in (st.get("held_back") or {}).items():
        for v in versions:
            rows.append(
                (
                    "held back",
                    f"{bundle} v{v} (operator rollback): not installed again until the hub "
                    f"desires a newer version or `leanloop mark-good {v}`",
                )
            )
    q = st.get("quarantine") or {}
    if q.get("count"):
        text = (
            f"{q['count']} record(s) the hub refused ({q.get('samples', 0)} samples, "
            f"{q.get('feedback', 0)} feedback), kept in {q.get('folder')}"
        )
        recent = q.get("recent") or []
        if recent:
            r = recent[0]
            text += f"; latest: {r['kind']} {r['id']}: {r['reason']}"
        rows.append(("quarantine", text))
    sh = st.get("shadow") or {}
    if sh.get("reason") and sh.get("status") not in (None, "running", "starting"):
        rows.append(("shadow", f"{sh['status']}: {sh['reason']}"))
    return rows


def rollback(state_dir: Path) -> str:
    """Return to the previous committed bundle, through the service when it runs."""
    from runtime.control import request

    live = request(state_dir, "rollback")
    if live is not None:
        return str(live["message"])
    return offline_rollback(state_dir)


def feedback(
    state_dir: Path,
    max_bytes: int,
    sample_id: str,
    label: str | None,
    who: str,
    item: int | None = None,
) -> dict[str, Any]:
    """Confirm or correct a stored sample, through the service when it runs."""
    from runtime.control import request

    live = request(state_dir, "feedback", id=sample_id, label=label, who=who, item=item)
    if live is not None:
        return dict(live)
    return give_feedback(state_dir, max_bytes, sample_id, label, who, item)


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


def _active_ontology(state_dir: Path) -> tuple[Any, int]:
    from runtime.bundle.loader import read_manifest

    slots = Slots(state_dir)
    d = slots.active_dir
    if d is None:
        raise UpdateError("no active bundle: cannot check labels against its ontology")
    m = read_manifest(d)
    return m.ontology, m.version


def _check_label(ontology: Any, label: str) -> tuple[str, str | None]:
    """(label to store, the old label it was converted from). A label of the previous ontology
    version converts when it has one successor; otherwise ConfigError says what became of it."""
    from runtime.ontology import old_label_fate

    classes = list(ontology.classes)
    if label in classes:
        return label, None
    new, why = old_label_fate(label, ontology.changes, ontology.mapping_from_previous)
    if new is not None and new in classes:
        return new, label
    if why and "is not a class" not in why:
        raise ConfigError(
            f"label {label!r} is from ontology version {ontology.version - 1}: in version "
            f"{ontology.version} {why} ({', '.join(classes)})"
        )
    raise ConfigError(
        f"unknown label {label!r}: the active bundle's ontology has {', '.join(classes)}"
    )


def give_feedback(
    state_dir: Path,
    max_bytes: int,
    sample_id: str,
    label: str | None,
    who: str,
    item: int | None = None,
    store: Any = None,
    outbox: Any = None,
) -> dict[str, Any]:
    """Record a confirmation (``label`` None) or a correction on a sample.

    On a sample still in the store, the feedback goes into its record (``queued`` False). On a
    sample the device already uploaded (it left the store; :mod:`runtime.outbox` remembers it),
    the feedback is queued for the hub instead (``queued`` True, ``priority`` None) and the
    device's feedback metrics count it at once. Works with the service up or down (LMDB
    serialises writers across processes); the service passes its own open ``store`` and
    ``outbox`` (one LMDB environment per process). Raises ConfigError for a label the active
    bundle's ontology does not know, StoreError for a sample the device does not know.
    """
    import time

    from runtime.outbox import SENT_DIR, FeedbackOutbox
    from runtime.store.lmdb_store import SampleStore
    from runtime.store.record import Feedback

    ontology, version = _active_ontology(state_dir)
    converted_from = None
    if label is not None:
        label, converted_from = _check_label(ontology, label)
    path = state_dir / "samples"
    if store is None and not path.exists():
        raise ConfigError(f"{path}: no sample store")
    fb = Feedback(
        kind="correct" if label is not None else "confirm",
        label=label,
        who=who,
        when=time.time(),
        bundle_version=version,
        item=item,
    )
    _check_as_the_hub_would(fb)
    note = {"converted_from": converted_from} if converted_from else {}
    if store is not None:
        return {**_record_feedback(state_dir, store, outbox, sample_id, fb), **note}
    own = SampleStore(path, max_bytes=max_bytes)
    sent = state_dir / SENT_DIR
    own_outbox = FeedbackOutbox(sent) if sent.exists() else None
    try:
        return {**_record_feedback(state_dir, own, own_outbox, sample_id, fb), **note}
    finally:
        if own_outbox is not None:
            own_outbox.close()
        own.close()


def _check_as_the_hub_would(fb: Any) -> None:
    """Refuse feedback the hub would refuse (the shared message model). Raises ConfigError."""
    from pydantic import ValidationError

    from runtime.protocol import FeedbackMessage, validation_reason

    try:
        FeedbackMessage.model_validate(fb.to_dict())
    except ValidationError as e:
        raise ConfigError(validation_reason(e, "feedback")) from e


def resolve_sample_id(store: Any, sample_id: str) -> str:
    """The full id of ``sample_id`` or of the one stored sample whose id starts with it.

    An id the store does not hold and no stored id starts with is returned as given (it may be
    a sample that went to the hub). Raises ConfigError when the prefix names several samples.
    """
    if store.get(sample_id) is not None:
        return sample_id
    found = store.ids_with_prefix(sample_id, limit=3)
    if len(found) > 1:
        raise ConfigError(
            f"sample id prefix {sample_id!r} is ambiguous: it matches {', '.join(found[:2])}"
            + (" and more" if len(found) > 2 else "")
            + "; type more of the id"
        )
    return found[0] if found else sample_id


def _final_labels(prediction: dict[str, Any]) -> list[str]:
    stages = prediction.get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        return []
    last = list(stages.values())[-1]
    items = last.get("items") if isinstance(last, dict) else None
    return [str(i.get("label", "?")) for i in items or [] if isinstance(i, dict)]


def _check_item(sample_id: str, item: int | None, labels: Sequence[str]) -> None:
    """Refuse feedback on an item the sample's prediction does not have. Raises ConfigError."""
    if item is None or item < len(labels):
        return
    has = f"items 0..{len(labels) - 1}" if labels else "no items"
    raise ConfigError(f"sample {sample_id} has {has} in its final stage: there is no item {item}")


def _record_feedback(
    state_dir: Path, store: Any, outbox: Any, sample_id: str, fb: Any
) -> dict[str, Any]:
    from runtime.feedback_stats import LEDGER_NAME, FeedbackLedger, forget_summary

    sample_id = resolve_sample_id(store, sample_id)
    held = store.get(sample_id)
    if held is not None:
        _check_item(sample_id, fb.item, _final_labels(held.prediction))
    try:
        rec = store.set_feedback(sample_id, fb)
    except StoreError:
        if outbox is None or store.get(sample_id) is not None:
            raise  # not a sample that went home: the store's own error
        sent = outbox.sent(sample_id)
        if sent is not None:
            _check_item(sample_id, fb.item, sent.labels)
        before = outbox.enqueue(sample_id, fb)  # StoreError if the device never had it
        old = before.feedback
        FeedbackLedger(state_dir / LEDGER_NAME).replace(
            (before.predicted(old.get("item")), str(old.get("kind")), old.get("label"))
            if old
            else None,
            (before.predicted(fb.item), fb.kind, fb.label),
        )
        return {"id": sample_id, "priority": None, "feedback": fb.to_dict(), "queued": True}
    forget_summary()
    return {"id": rec.id, "priority": rec.priority, "feedback": fb.to_dict(), "queued": False}
