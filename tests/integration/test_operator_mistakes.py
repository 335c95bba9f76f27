"""Nothing a message or a typo can do stops the device (real hub, real device processes):

- a typo in ``inference.backend`` stops the device at config load, before it touches a slot,
  so no bundle is ever marked bad for it;
- a sample the hub refuses (4xx) is quarantined with its reason, shows in ``status``, and the
  samples behind it still go; the CLI refuses feedback the hub would refuse;
- an operator rollback is not a failure: the version is held back (not marked bad) until
  ``leanloop mark-good``, status says so, and a shadow candidate that waits says why.
"""

from __future__ import annotations

import json
import time

import yaml
from loopkit import BOXES, BOXES_NEW, Loop, committed
from typer.testing import CliRunner

from leanloop.cli import app
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import SampleRecord, new_sample_id

MAX_BYTES = 64 << 20


def test_device_refuses_a_misspelt_engine_at_load_and_never_marks_a_bundle_bad(loop: Loop) -> None:
    dev = loop.serving_device()
    loop.publish(2, BOXES_NEW)  # waiting for the device
    dev.stop(close_log=False)
    before = (dev.state / "slots.json").read_bytes()
    dev.reconfigure(inference={"backend": "onnxruntme"})
    assert dev.wait_exit() == 2
    err = [ln for ln in dev.tail().splitlines() if ln.startswith("error:")]
    assert len(err) == 1, dev.tail()
    assert "inference.backend: unknown engine 'onnxruntme'" in err[0]
    assert "did you mean 'onnxruntime'" in err[0]
    assert (dev.state / "slots.json").read_bytes() == before  # no slot was touched
    r = CliRunner().invoke(app, ["config", "check", str(dev.config)])
    assert r.exit_code == 2
    text = dev.config.read_text().splitlines()
    line = next(i for i, ln in enumerate(text, 1) if ln.strip().startswith("backend:"))
    assert f"error: {dev.config}:{line}: inference.backend: unknown engine" in r.output

    cfg = yaml.safe_load(dev.config.read_text())
    cfg["inference"] = {"backend": "onnxruntime"}
    dev.config.write_text(yaml.safe_dump(cfg))
    dev.restart()
    st = dev.wait("v2 committed", committed(2))
    slots = json.loads((dev.state / "slots.json").read_text())
    assert slots["bad_versions"] == {} and st["last_update_error"] is None


def _foreign_record(device_id: str) -> SampleRecord:
    """A sample that says it comes from another device: the hub answers 400."""
    return SampleRecord(
        id=new_sample_id(),
        device_id=device_id,
        created=time.time(),
        frame_id="planted",
        bundle="digits",
        bundle_version=1,
        ontology_version=1,
        image=b"\xff\xd8planted\xff\xd9",
        image_format="jpeg",
        prediction={"frame_id": "planted", "stages": {}},
        scores={"margin": 1.0},
        priority=1.0,  # first in line
    )


def test_device_quarantines_what_the_hub_refuses_and_uploads_the_rest(loop: Loop) -> None:
    dev = loop.serving_device(upload={"interval_s": 3600})
    dev.feed(3)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 3)
    runner = CliRunner()
    cfg = ["--config", str(dev.config)]
    rows = json.loads(runner.invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    r = runner.invoke(
        app, ["feedback", "correct", rows[0]["id"], "--label", "3", "--item", "-1", *cfg]
    )
    assert r.exit_code == 2 and r.output.startswith("error: bad feedback: item:"), r.output
    assert r.output.count("\n") == 1
    n_items = len(rows[0]["summary"].split())  # "label:score label:score"
    r = runner.invoke(
        app, ["feedback", "correct", rows[0]["id"], "--label", "3", "--item", str(n_items), *cfg]
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    has = f"items 0..{n_items - 1}" if n_items else "no items"
    assert r.output.startswith(f"error: sample {rows[0]['id']} has {has}"), r.output
    assert f"there is no item {n_items}" in r.output
    after = json.loads(runner.invoke(app, ["samples", "list", *cfg, "--json"]).stdout)
    assert after[0]["id"] == rows[0]["id"] and not after[0].get("feedback")  # nothing stored
    store = SampleStore(dev.state / "samples", max_bytes=MAX_BYTES)  # LMDB: shared with the service
    planted = _foreign_record("cam-9")
    store.put(planted)
    store.close()

    dev.reconfigure(upload={"interval_s": 0.3})
    st = dev.wait(
        "all sent or set aside",
        lambda st: st["store"]["count"] == 0 and (st.get("quarantine") or {}).get("count") == 1,
    )
    q = st["quarantine"]
    assert q["recent"][0]["id"] == planted.id and q["recent"][0]["http_status"] == 400
    assert "not this device" in q["recent"][0]["reason"]
    kept = json.loads((dev.state / "quarantine" / f"sample-{planted.id}.json").read_text())
    assert kept["record"]["device_id"] == "cam-9"
    assert (dev.state / "quarantine" / kept["image"]).read_bytes() == planted.image
    hub_ids = {s["id"] for s in loop.admin.samples(limit=100)}
    assert planted.id not in hub_ids and {r["id"] for r in rows} <= hub_ids
    assert st["counters"]["upload_errors"] == 0
    shown = runner.invoke(app, ["status", *cfg])
    assert "quarantine" in shown.stdout and "not this device" in shown.stdout


def test_operator_rollback_holds_the_version_until_mark_good_and_shadow_says_why_it_waits(
    loop: Loop,
) -> None:
    dev = loop.serving_device()
    loop.publish(2, BOXES_NEW)
    dev.feed(3)
    dev.wait("v2 committed", committed(2))
    runner = CliRunner()
    cfg = ["--config", str(dev.config)]
    r = runner.invoke(app, ["rollback", "--yes", *cfg])
    assert r.exit_code == 0, r.output
    st = dev.wait("rolled back", lambda st: st["update_state"] == "rolled_back")
    assert st["rolled_back_by_operator"] is True and st["held_back"] == {"digits": [2]}
    loop.admin.publish_bundle(loop.make_bundle(3, BOXES), loop.keys)
    loop.admin.shadow_rollout("digits", 3, devices=["cam-1"])
    st = dev.wait(
        "candidate waits", lambda st: "waits" in ((st.get("shadow") or {}).get("reason") or "")
    )
    assert "held back by an operator rollback" in st["shadow"]["reason"]
    time.sleep(1.0)  # several polls: v2 is not installed again by itself
    st = dev.status()
    assert st["active"]["version"] == 1 and st["last_update_error"] is None
    shown = runner.invoke(app, ["status", *cfg]).stdout
    assert "rolled back by operator" in shown and "mark-good 2" in shown
    assert "candidate digits v3 waits" in shown
    js = json.loads(runner.invoke(app, ["status", "--json", *cfg]).stdout)
    assert js["held_back"] == {"digits": [2]}

    r = runner.invoke(app, ["mark-good", "2", *cfg])
    assert r.exit_code == 0 and "digits v2 marked good" in r.output, r.output
    dev.feed(3)
    st = dev.wait("v2 again", committed(2))
    assert st["held_back"] == {} and not st["rolled_back_by_operator"]
    r = runner.invoke(app, ["mark-good", "2", *cfg])
    assert r.exit_code == 0 and "nothing to do" in r.output
