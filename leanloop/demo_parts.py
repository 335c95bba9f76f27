"""The parts of ``leanloop demo`` beyond train → publish → update, each done for real against
the demo's hub and devices: the replay gate per candidate, the staged rollout's summary, an
operator's correction with ``leanloop feedback correct`` reaching the hub, and a shadow candidate
with its agreement. Functions of the running :class:`leanloop.demo.Demo`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leanloop.demo import Demo

__all__ = [
    "ONTOLOGY_CHANGE",
    "change_ontology",
    "gate",
    "ontology_result",
    "operator_correction",
    "rollout_summary",
    "shadow_result",
    "start_shadow",
]

ONTOLOGY_CHANGE = {"op": "rename", "old": "0", "new": "zero"}
"""The demo's ontology change: the class "0" becomes "zero", so that a reader of serial numbers
that mix letters and digits never takes it for the letter O. A rename keeps the class (and the
classifier's output) where it was, so the next candidates warm-start as before."""


def gate(demo: Demo, arm: str, bundle: Path, version: int) -> str | None:
    """Replay v against v-1 on the arm's history (the hub's labelled frames) and bless it when
    the gate passes; otherwise return the reason the demo publishes it anyway (audited).

    The history holds the frames the candidate was trained on, so this gate is optimistic;
    it shows the mechanism, one decision per iteration (a fleet gates on held-out history).
    """
    from hub.replay.evaluate import run_replay
    from hub.replay.fetch import download_history
    from hub.replay.history import HistoryDir
    from hub.replay.report import write_report
    from hub.replay.spec import parse_gate_spec

    if version == 1:
        demo.gates[(arm, version)] = {"decision": "forced", "summary": "first version"}
        return "first version: nothing to replay it against"
    work = demo.work / "replay" / f"{arm}-v{version}"
    download_history(demo.hub, work / "history", f"digits-{arm}")
    spec = parse_gate_spec({
        "metrics": {"top1_accuracy": {"max_drop": 0.02}},
        "slices": {"by": ["selection", "class"], "min_size": 30},
        "bootstrap": {"resamples": 300, "seed": demo.s.seed},
    })  # fmt: skip
    baseline = demo.work / "bundles" / f"digits-{arm}-v{version - 1}"
    report = run_replay(bundle, baseline, HistoryDir(work / "history"), spec,
                        work / "results", who="demo")  # fmt: skip
    j, h = write_report(report, work / "report")
    stored = demo.hub.post_report(j.read_bytes(), h.read_bytes())
    dec, m = report["decision"], report["metrics"]
    demo.gates[(arm, version)] = {
        "decision": dec["decision"], "summary": dec["summary"], "report": stored["digest"],
        "frames": report["counts"]["used"],
        "top1": [m["baseline"]["top1_accuracy"], m["candidate"]["top1_accuracy"]],
    }  # fmt: skip
    demo.say(
        f"gate digits-{arm} v{version} vs v{version - 1} on {report['counts']['used']} "
        f"frames: top-1 {m['candidate']['top1_accuracy']:.1%} vs "
        f"{m['baseline']['top1_accuracy']:.1%}: {dec['summary']}"
    )
    if dec["decision"] == "pass":
        demo.hub.bless(stored["digest"], "demo")
        return None
    return f"demo: the loop goes on although the gate blocked it ({dec['summary']})"


def operator_correction(demo: Demo, arm: str) -> dict[str, Any] | None:
    """An operator at device ``<arm>-1`` corrects one wrong digit of an uploaded sample
    with the real CLI (``leanloop feedback correct``, through the device's control socket);
    the demo waits for the correction to reach the hub's feedback metrics."""
    from leanloop.demo import _iou

    dev = f"{arm}-1"
    for meta in demo.hub.samples(f"digits-{arm}", state="pending", limit=200):
        if meta.get("device_id") != dev or f"1/{meta['frame_id']}" not in demo.gt:
            continue
        boxes, labels = demo.gt[f"1/{meta['frame_id']}"]
        stages = (meta.get("prediction") or {}).get("stages") or {}
        items = list(stages.values())[-1]["items"] if stages else []
        for k, it in enumerate(items):
            for box, lbl in zip(boxes, labels, strict=True):
                box_ok = it.get("box") and _iou(tuple(box), tuple(it["box"])) >= 0.5
                if box_ok and it.get("label") != str(lbl):
                    return _correct(demo, dev, meta["id"], k, str(it["label"]), str(lbl))
    return None  # every uploaded digit was read right


def _correct(demo: Demo, dev: str, sample: str, item: int, said: str, label: str) -> dict[str, Any]:
    from leanloop.demo import DemoError

    cfg = demo.work / "devices" / dev / "device.yaml"
    argv = [sys.executable, "-m", "leanloop.cli", "feedback", "correct", sample, "--label",
            label, "--item", str(item), "--who", "operator", "--config", str(cfg)]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if run.returncode != 0:
        raise DemoError(f"feedback correct failed: {(run.stderr or run.stdout).strip()}")

    def at_hub() -> bool:
        hub = (demo.hub.feedback_metrics()["devices"].get(dev) or {}).get("hub") or {}
        return bool((hub.get("confusion") or {}).get(said, {}).get(label))

    demo.wait(f"the correction of {sample} at the hub", at_hub, timeout=60)
    demo.say(f"operator at {dev} corrected {said} → {label} on {sample}; the hub has it")
    return {"device": dev, "sample": sample, "item": item, "said": said, "label": label}


def start_shadow(demo: Demo) -> int:
    """The random arm's latest model, built as the next version of ``digits-unc``, runs as
    a shadow candidate on the uncertainty arm's devices during the last segment: both
    models answer every frame, the devices report their agreement, and the rule never
    promotes it (``promote: false``). Returns its version once every device runs it."""
    from runtime.bundle.build import build_bundle

    v = demo.version["unc"] + 1
    src = demo.work / "sources" / f"rnd-v{demo.version['rnd']}"
    out = demo.work / "bundles" / f"digits-unc-v{v}-shadow"
    build_bundle(src, out, name="digits-unc", version=v)
    reason = "demo: a shadow candidate, measured, never rolled out"
    demo.hub.publish_bundle(out, demo.work / "keys", who="demo", force_reason=reason)
    rule = {"min_frames": 1_000_000, "min_agreement": 0.0, "promote": False}  # never judged
    demo.hub.shadow_rollout("digits-unc", v, rule=rule, cohort="unc")
    devs = set(demo.device_ids("unc"))

    def running() -> bool:
        seen = demo.hub.shadow("unc")["devices"]
        reports = {d["device_id"]: d.get("report") or {} for d in seen}
        return all((reports.get(d) or {}).get("status") == "running" for d in devs)

    demo.wait("the shadow candidate to run on the uncertainty devices", running, timeout=120)
    demo.say(f"shadow: digits-unc v{v} (the random arm's model) runs beside production")
    return v


def shadow_result(demo: Demo, version: int) -> dict[str, Any]:
    """Agreement of the shadow candidate with production over the last segment."""
    devs = set(demo.device_ids("unc"))

    def answered() -> bool:
        done = 0
        for d in demo.hub.shadow("unc")["devices"]:
            rep = d.get("report") or {}
            seen = (rep.get("stats") or {}).get("compared", 0)
            done += int(d["device_id"] in devs and seen + (rep.get("counters") or {}).get("shed", 0)
                        >= demo.s.frames)  # fmt: skip
        return done == len(devs)

    demo.wait("the shadow candidate's reports", answered, timeout=120)
    want = {"bundle": "digits-unc", "version": version}
    group = next(g for g in demo.hub.shadow("unc")["cohorts"] if g.get("candidate") == want)
    compared = int((group.get("stats") or {}).get("compared", 0))
    demo.say(f"shadow: v{version} agrees with production on {group['agreement']:.1%} "
             f"of {compared} frames")  # fmt: skip
    return {"version": version, "agreement": group["agreement"], "compared": compared}


def rollout_summary(demo: Demo, arm: str, version: int) -> dict[str, Any] | None:
    """The staged rollout of this version: its status and per-wave counts (canary first)."""
    rid = demo.rollouts.get((arm, version))
    if rid is None:
        return None
    r = demo.hub.rollout_status(rid)
    waves = [{k: w[k] for k in ("target", "succeeded", "failed")} for w in r["waves"]]
    return {"id": rid, "status": r["status"], "waves": waves}


def change_ontology(demo: Demo) -> dict[str, Any]:
    """The admin adopts the bundles' ontology on the hub (``digits`` v1, "0".."9") and changes
    it through the hub's API: version 2 renames "0". The hub remaps every stored sample of the
    demo's bundles in the same transaction (annotations, predictions, feedback); the next
    training jobs train in version 2 and their sources are stamped with its mapping."""
    classes = [str(d) for d in range(10)]
    demo.hub.create_ontology("digits", classes)
    got = demo.hub.change_ontology("digits", [ONTOLOGY_CHANGE], base_version=1)
    names = [ONTOLOGY_CHANGE["new"] if c == ONTOLOGY_CHANGE["old"] else c for c in classes]
    if got["classes"] != names:
        from leanloop.demo import DemoError

        raise DemoError(f"the hub's ontology v{got['version']} has classes {got['classes']}")
    demo.class_names[int(got["version"])] = names
    demo.say(
        f"ontology digits v1 → v{got['version']} (rename 0 → zero): the hub remapped "
        f"{got['remapped']} samples"
    )
    return {"version": int(got["version"]), "hub_remapped": int(got["remapped"])}


def ontology_result(demo: Demo, change: dict[str, Any], versions: dict[str, int]) -> dict[str, Any]:
    """Once the devices run the bundles trained in the new version: what each one's remap did
    (its ``status.json``: ``ontology_remap``): records of its sample store still waiting to go
    (the demo's devices upload nearly all before each update) and the labels it remembers of
    samples already uploaded (its feedback outbox), both LMDB."""
    want = change["version"]
    devs = [d for arm in versions for d in demo.device_ids(arm)]

    def remapped() -> bool:
        return all(
            (demo._status(d).get("ontology_remap") or {}).get("to_version") == want for d in devs
        )

    demo.wait("the devices' store remap", remapped, timeout=60)
    reports = {d: demo._status(d)["ontology_remap"] for d in devs}
    records = sum(int(r["records"]) for r in reports.values())
    sent = sum(int(r.get("outbox_remapped", 0)) for r in reports.values())
    demo.say(f"devices committed ontology v{want}: {records} store records and {sent} "
             "remembered uploads remapped")  # fmt: skip
    return {**change, "bundles": versions, "devices": len(devs), "device_records": records,
            "device_uploads": sent, "per_device": reports}  # fmt: skip
