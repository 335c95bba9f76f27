"""One replay from end to end: history + two bundles + a gate spec -> the report (a dict).

:func:`run_replay` prepares the frames (ontology remapped or excluded), replays the baseline
and the candidate with :func:`~hub.replay.runner.replay_bundle`, drops the frames either bundle
could not run (missing image, corrupt frame: counted), judges the gate, computes the KPIs of
both under the spec's behaviour model, and assembles the report that
:mod:`hub.replay.report` renders and a blessing names by digest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hub.replay.behaviour import build_behaviour
from hub.replay.frames import HistoryFrame, Outcome
from hub.replay.gate import judge
from hub.replay.history import HistoryDir
from hub.replay.kpis import kpis
from hub.replay.metrics import build_counts, metric_names, object_pairs
from hub.replay.runner import (
    MISSING_IMAGE,
    ReplayCounts,
    baseline_in_candidate_ontology,
    bundle_digest,
    prepare_frames,
    replay_bundle,
)
from hub.replay.spec import GateSpec, spec_digest
from runtime.bundle.loader import verify_bundle_dir
from runtime.errors import ConfigError

__all__ = ["REPORT_FORMAT", "report_digest", "run_replay"]

REPORT_FORMAT = "leanloop.replay-report/1"
_PR_POINTS = 40

Stage = Callable[[str, int], Callable[[int], None]]  # (label, total) -> advance(n)


def report_digest(report: dict[str, Any]) -> str:
    """sha256 of the report's canonical JSON (what a blessing names)."""
    return hashlib.sha256(
        json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _confusion(
    frames: Sequence[HistoryFrame], outs: Sequence[Outcome], classes: list[str], iou: float
) -> list[list[int]]:
    """Rows: true class; columns: predicted class, then 'nothing'."""
    idx = {c: k for k, c in enumerate(classes)}
    m = [[0] * (len(classes) + 1) for _ in classes]
    for f, o in zip(frames, outs, strict=True):
        for t, it in object_pairs(f, o, iou):
            if t.label in idx:
                col = idx.get(it.label, len(classes)) if it else len(classes)
                m[idx[t.label]][col] += 1
    return m


def _pr_curves(
    frames: Sequence[HistoryFrame], outs: Sequence[Outcome], classes: list[str], iou: float
) -> dict[str, list[list[float]]]:
    """Per class, [recall, precision] as the score threshold falls (from each guess's score)."""
    curves: dict[str, list[list[float]]] = {}
    pairs = [p for f, o in zip(frames, outs, strict=True) for p in object_pairs(f, o, iou)]
    for c in classes:
        scored = []
        for t, it in pairs:
            s = 0.0
            if it is not None:
                s = max(
                    [g.score for g in it.top_k if g.label == c]
                    or [it.score if it.label == c else 0.0]
                )
            scored.append((s, t.label == c))
        positives = sum(p for _, p in scored)
        if not positives:
            continue
        scored.sort(key=lambda x: -x[0])
        tp = fp = 0
        pts: list[list[float]] = []
        for s, p in scored:
            if s <= 0:
                break
            tp += p
            fp += not p
            pts.append([tp / positives, tp / (tp + fp)])
        step = max(1, len(pts) // _PR_POINTS)
        curves[c] = pts[::step] + (pts[-1:] if pts and len(pts) % step else [])
    return curves


def _values(
    frames: Sequence[HistoryFrame], outs: Sequence[Outcome], classes: list[str], spec: GateSpec
) -> dict[str, float | None]:
    ev = spec.events
    t = build_counts(frames, outs, classes, ev.classes, ev.alert_threshold, spec.iou)
    out: dict[str, float | None] = {}
    for m in metric_names(classes, bool(ev.classes), t.has_boxes):
        v = t.value(m)
        out[m] = None if v != v else v
    return out


def run_replay(
    candidate: Path,
    baseline: Path,
    history: HistoryDir,
    spec: GateSpec,
    work: Path,
    workers: int = 1,
    since: float | None = None,
    cohort: str | None = None,
    stage: Stage | None = None,
    who: str = "",
) -> dict[str, Any]:
    """Replay both bundles on the history and judge the candidate. Raises LeanloopError."""
    cand_m = verify_bundle_dir(candidate)
    base_m = verify_bundle_dir(baseline)
    classes = list(cand_m.ontology.classes)
    counts = ReplayCounts()
    all_frames = history.frames(since, cohort)
    counts.frames = len(all_frames)
    frames = prepare_frames(all_frames, cand_m, counts)
    if not frames:
        raise ConfigError(
            f"{history.path}: no frame with ground truth to replay "
            f"({counts.frames} frames, {counts.ontology_excluded} excluded by ontology)"
        )
    outs: dict[str, list[Outcome]] = {}
    for label, bundle in (("baseline", baseline), ("candidate", candidate)):
        advance = (
            stage(f"{label} v{(base_m if label == 'baseline' else cand_m).version}", len(frames))
            if stage
            else None
        )
        outs[label] = replay_bundle(bundle, frames, history.images, work, workers, progress=advance)
    outs["baseline"] = baseline_in_candidate_ontology(outs["baseline"], base_m, cand_m)
    keep = []
    for k in range(len(frames)):
        errors = {lbl: outs[lbl][k].error for lbl in outs if outs[lbl][k].error}
        if not errors:
            keep.append(k)
        elif MISSING_IMAGE in errors.values():
            counts.missing_image += 1
        else:
            for lbl in errors:
                counts.corrupt[lbl] = counts.corrupt.get(lbl, 0) + 1
    counts.used = len(keep)
    used = [frames[k] for k in keep]
    base = [outs["baseline"][k] for k in keep]
    cand = [outs["candidate"][k] for k in keep]
    decision = judge(used, base, cand, classes, spec)
    model = build_behaviour(spec.behaviour, used)
    by_selection = {
        sel: {
            "frames": len(rows),
            "baseline": _values([used[k] for k in rows], [base[k] for k in rows], classes, spec),
            "candidate": _values([used[k] for k in rows], [cand[k] for k in rows], classes, spec),
        }
        for sel in ("random", "strategy")
        if (rows := [k for k, f in enumerate(used) if f.selection == sel])
    }
    both = {"baseline": base, "candidate": cand}
    bundles = {"baseline": (base_m, baseline), "candidate": (cand_m, candidate)}
    return {
        "format": REPORT_FORMAT,
        "created": time.time(),
        "who": who,
        **{
            k: {"name": m.name, "version": m.version, "digest": bundle_digest(path)}
            for k, (m, path) in bundles.items()
        },
        "spec": spec.model_dump(mode="json"),
        "spec_digest": spec_digest(spec),
        "filters": {"since": since, "cohort": cohort},
        "classes": classes,
        "counts": counts.to_dict(),
        "decision": decision.to_dict(),
        "metrics": {k: _values(used, o, classes, spec) for k, o in both.items()},
        "by_selection": by_selection,
        "kpis": {k: kpis(used, o, model, spec) for k, o in both.items()},
        "confusion": {k: _confusion(used, o, classes, spec.iou) for k, o in both.items()},
        "pr_curves": {k: _pr_curves(used, o, classes, spec.iou) for k, o in both.items()},
    }
