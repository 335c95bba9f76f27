"""A real device commits a bundle whose ontology has a new version (a merge, a split, renames):
its sample store is remapped at commit, and feedback that cannot be converted is refused."""

from __future__ import annotations

import json
from dataclasses import replace

import yaml
from loopkit import BOXES, Loop, committed
from typer.testing import CliRunner

from leanloop.cli import app
from runtime.store.lmdb_store import SampleStore

CHANGES = [
    {"op": "merge", "sources": ["0", "1"], "into": "low"},
    {"op": "split", "source": "9", "into": ["9a", "9b"]},
    {"op": "rename", "old": "2", "new": "two"},
    {"op": "rename", "old": "7", "new": "seven"},
]
V2 = {
    "id": "digits",
    "version": 2,
    "previous_version": 1,
    "classes": ["low", "two", "3", "4", "5", "6", "seven", "8", "9a", "9b"],
    "changes": CHANGES,
}


def test_device_remaps_its_store_when_a_bundle_with_a_new_ontology_commits(loop: Loop) -> None:
    dev = loop.serving_device(upload={"interval_s": 3600})  # keep samples on the device
    dev.feed(3)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 3)
    runner = CliRunner()
    cfg = ["--config", str(dev.config)]
    rows = json.loads(runner.invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    to_split, to_merge, untouched = (r["id"] for r in rows[:3])
    for sid, label in ((to_split, "9"), (to_merge, "1")):
        r = runner.invoke(app, ["feedback", "correct", sid, "--label", label, "--item", "0", *cfg])
        assert r.exit_code == 0, r.output

    v2 = loop.make_bundle(2, BOXES, extra={"ontology.yaml": yaml.safe_dump(V2).encode()})
    loop.publish(2, bundle=v2)
    dev.feed(3)
    dev.wait("v2 committed", committed(2))
    # The operator's status says what the remap did (the demo's ontology line reads it).
    remap = dev.wait("remap in status", lambda st: bool(st.get("ontology_remap")))["ontology_remap"]
    assert remap["ontology"] == "digits" and (remap["from_version"], remap["to_version"]) == (1, 2)
    assert remap["records"] >= 3 and remap["needs_review"] >= 1
    # Feedback given now with a label of version 1: converted when it has one successor,
    # refused with what became of it otherwise.
    r = runner.invoke(app, ["feedback", "correct", untouched, "--label", "0", "--item", "1", *cfg])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["feedback", "correct", untouched, "--label", "9", *cfg])
    assert r.exit_code == 2
    assert r.output.startswith("error: label '9' is from ontology version 1: in version 2 '9'")
    dev.stop(close_log=False)

    store = SampleStore(dev.state / "samples", max_bytes=1 << 30)
    try:
        split, merged, plain = (store.get(s) for s in (to_split, to_merge, untouched))
    finally:
        store.close()
    assert split is not None and merged is not None and plain is not None
    for rec in (split, merged, plain):
        assert rec.ontology_version == 2
        labels = [i["label"] for i in rec.prediction["stages"]["classifier"]["items"]]
        assert labels == ["two", "seven"]
    assert merged.feedback is not None and merged.feedback.label == "low"
    assert split.feedback is None and split.extra["needs_review"] is True
    assert split.extra["refused_feedback"]["label"] == "9"
    assert plain.feedback is not None and plain.feedback.label == "low"

    # A crash between the commit and the remap leaves records at version 1: the next start
    # finishes the remap.
    old_pred = json.loads(json.dumps(plain.prediction))
    for item, label in zip(old_pred["stages"]["classifier"]["items"], ["2", "7"], strict=True):
        item["label"] = label
    store = SampleStore(dev.state / "samples", max_bytes=1 << 30)
    try:
        store.put(replace(plain, id=plain.id[:-1] + "f", ontology_version=1, prediction=old_pred))
    finally:
        store.close()
    dev.restart()
    dev.wait("running again", lambda st: st.get("pid") == dev.proc.pid)
    dev.stop()
    store = SampleStore(dev.state / "samples", max_bytes=1 << 30)
    try:
        again = store.get(plain.id[:-1] + "f")
    finally:
        store.close()
    assert again is not None and again.ontology_version == 2
    assert [i["label"] for i in again.prediction["stages"]["classifier"]["items"]] == [
        "two",
        "seven",
    ]
