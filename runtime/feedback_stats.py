"""Feedback metrics: how often humans agreed with the model, per class, and what they corrected.

A human's feedback on a stored sample is a confirmation ("the model was right") or a
correction ("it is a 7, not a 1"). Per class *predicted by the model* the metrics count
confirmations and corrections; ``accuracy`` = confirmations / (confirmations + corrections) is
the model's accuracy on the human-reviewed samples of that class (a precision: reviewed samples
are not a random draw, so it says where the model is wrong, not how often overall). The
``confusion`` counts map predicted label -> corrected label -> n.

Sources, on the device: the records in the sample store that carry feedback, plus a small
**ledger** (``<state>/feedback_ledger.json``, written atomically) of the feedback whose sample
has been uploaded and released — feedback samples go first, so without the ledger the metrics
would empty as soon as the link works. The uploader adds a record to the ledger right after the
store released it; a crash between the two undercounts that one record. The hub computes the
same :func:`tally` from the feedback it received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded

if TYPE_CHECKING:
    from runtime.store.lmdb_store import SampleStore
    from runtime.store.record import SampleRecord

__all__ = [
    "LEDGER_NAME",
    "FeedbackLedger",
    "feedback_summary",
    "forget_summary",
    "predicted_label",
    "tally",
]

LEDGER_NAME = "feedback_ledger.json"
_UNKNOWN = "?"  # the predicted label of an item the prediction does not have
_KEEP = 50  # classes and confusion pairs kept in the status (it travels in every heartbeat)

Entry = tuple[str, str, str | None, int]  # predicted label, kind, corrected label, count


def predicted_label(prediction: Mapping[str, Any], item: int | None) -> str:
    """The label the model gave the reviewed item: the final stage's ``item`` (None: item 0).

    Returns "?" when the prediction has no such item (e.g. a detector that found nothing).
    """
    stages = prediction.get("stages") or {}
    if not isinstance(stages, Mapping) or not stages:
        return _UNKNOWN
    items = list(stages.values())[-1].get("items") or []
    index = item if item is not None else 0
    if not isinstance(items, list) or not 0 <= index < len(items):
        return _UNKNOWN
    return str(items[index].get("label", _UNKNOWN))


def tally(entries: Iterable[Entry]) -> dict[str, Any]:
    """Per-class confirmations, corrections and accuracy, the confusion counts, and totals."""
    classes: dict[str, dict[str, Any]] = {}
    confusion: dict[str, dict[str, int]] = {}
    for predicted, kind, label, n in entries:
        c = classes.setdefault(predicted, {"confirmations": 0, "corrections": 0})
        if kind == "confirm" or (kind == "correct" and label == predicted):
            c["confirmations"] += n  # a "correction" to the same label agrees with the model
        elif kind == "correct":
            c["corrections"] += n
            row = confusion.setdefault(predicted, {})
            row[str(label)] = row.get(str(label), 0) + n
    confirmed = corrected = 0
    for c in classes.values():
        reviewed = c["confirmations"] + c["corrections"]
        c["accuracy"] = round(c["confirmations"] / reviewed, 4) if reviewed else None
        confirmed += c["confirmations"]
        corrected += c["corrections"]
    total = confirmed + corrected
    return {
        "reviewed": total,
        "confirmations": confirmed,
        "corrections": corrected,
        "accuracy": round(confirmed / total, 4) if total else None,
        "classes": dict(sorted(classes.items())),
        "confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
    }


def _entry(record: SampleRecord) -> Entry | None:
    fb = record.feedback
    if fb is None:
        return None
    return predicted_label(record.prediction, fb.item), fb.kind, fb.label, 1


class FeedbackLedger:
    """Counts of feedback whose sample left the store, persisted in one small JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(read_bounded(self.path, MAX_STATE_BYTES))
            counts = data.get("counts", {}) if isinstance(data, dict) else {}
            return {str(k): int(v) for k, v in counts.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # missing or unreadable: start again (metrics only, nothing is lost)

    def add(self, record: SampleRecord) -> None:
        """Count the feedback of a record that was just released (no feedback: no-op)."""
        entry = _entry(record)
        if entry is not None:
            self.replace(None, entry[:3])

    def replace(
        self, before: tuple[str, str, str | None] | None, after: tuple[str, str, str | None]
    ) -> None:
        """Count ``after`` (predicted label, kind, corrected label) in place of ``before`` (None:
        in addition): new feedback on a sample that already left the store, see
        :mod:`runtime.outbox`."""
        with self._lock:
            counts = self._read()
            if before is not None:
                old = json.dumps(list(before))
                if counts.get(old, 0) > 1:
                    counts[old] -= 1
                else:
                    counts.pop(old, None)
            new = json.dumps(list(after))
            counts[new] = counts.get(new, 0) + 1
            atomic_write_json(self.path, {"format": "leanloop.feedback-ledger/1", "counts": counts})
        forget_summary()

    def entries(self) -> list[Entry]:
        """(predicted, kind, corrected label, count) for everything counted so far."""
        out: list[Entry] = []
        for key, n in self._read().items():
            try:
                predicted, kind, label = json.loads(key)
            except (ValueError, TypeError):
                continue
            out.append((str(predicted), str(kind), label, n))
        return out


def _bounded(out: dict[str, Any], keep: int = _KEEP) -> dict[str, Any]:
    """At most ``keep`` classes (the most reviewed) and confusion pairs (the most frequent), so
    the status stays well under the hub's heartbeat cap; ``truncated`` says when cut."""
    classes = out["classes"]
    pairs = [(n, p, c) for p, row in out["confusion"].items() for c, n in row.items()]
    if len(classes) <= keep and len(pairs) <= keep:
        return out
    top = sorted(classes, key=lambda k: -(classes[k]["confirmations"] + classes[k]["corrections"]))
    confusion: dict[str, dict[str, int]] = {}
    for n, p, c in sorted(pairs, reverse=True)[:keep]:
        confusion.setdefault(p, {})[c] = n
    return {
        **out,
        "classes": {k: classes[k] for k in sorted(top[:keep])},
        "confusion": confusion,
        "truncated": True,
    }


_cache: dict[Path, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def forget_summary() -> None:
    """Drop the cached summaries: feedback just changed (the next status reads it afresh)."""
    with _cache_lock:
        _cache.clear()


def feedback_summary(store: SampleStore, state_dir: Path, max_age_s: float = 5.0) -> dict[str, Any]:
    """The device's feedback metrics: the ledger plus the feedback records still stored.

    Cached for ``max_age_s`` (the status loop asks every second; a scan reads every record's
    header). A store error yields the ledger's part alone, marked ``"partial": true``.
    """
    from runtime.errors import StoreError

    key = Path(state_dir)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
    entries = FeedbackLedger(key / LEDGER_NAME).entries()
    partial = False
    try:
        entries += [e for r in store.feedback_records() if (e := _entry(r)) is not None]
    except StoreError:
        partial = True
    out = _bounded(tally(entries))
    if partial:
        out["partial"] = True
    with _cache_lock:
        _cache[key] = (now, out)
    return out
