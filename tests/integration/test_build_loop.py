"""Round the whole loop for a task that is not digits (issue 13's "done when").

Circles, squares and triangles drawn at known places (``trainer.synthetic``) go in as a COCO
dataset through the hub's import; a hub training job trains a detector and a crop classifier
(``detect_then_classify``), exported to ONNX and OpenVINO IR with parity checked by the trainer,
and the classifier to TFLite here (the detector's TFLite conversion alone takes about a minute
on two cores, so it is left to ``tests/trainer``). The source is built, published, and served
by a real device process; the operator's corrections reach the hub; the ontology changes on
the hub with a merge and a rule-driven split; a warm-started job retrains on the same hub
dataset, aligned to the new version; v2 is published, the device commits it, serves the new
class names, and the records of its LMDB store are remapped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopkit import Device, committed
from typer.testing import CliRunner

from hub.client import HubAdminClient
from hub.testing import LiveHub
from leanloop.cli import app
from runtime.store.lmdb_store import SampleStore
from trainer.synthetic import shapes_dataset

pytestmark = pytest.mark.integration

V1 = ["circle", "square", "triangle"]
CHANGES = ["merge square+triangle=polygon", "split circle=big_circle|small_circle if area>=300"]
V2 = {"polygon", "big_circle", "small_circle"}
SPEC: dict[str, Any] = {
    "format": "leanloop.train/1",
    "name": "shapes",
    "task": "detect_then_classify",
    "dataset": {"path": "unused", "val_fraction": 0.25},
    "model": {"architecture": "mobilenet_v3_small", "width": 0.25, "input_size": [64, 64]},
    "crop_model": {"architecture": "mobilenet_v3_small", "width": 0.25, "input_size": [32, 32]},
    "epochs": 6,
    "batch": 4,
    "lr": 0.01,
    "threads": 2,
    "export": ["onnx", "openvino"],
    "score_threshold": 0.05,  # six short epochs: any box will do, the loop is what is tested
}


def cli(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, f"{args}: {r.output}"
    return r.stdout


def train_on_hub(admin: HubAdminClient, version: int, out: Path, **kw: Any) -> dict[str, Any]:
    job = admin.start_train("shapes", version, spec=SPEC, datasets=["shapes"], **kw)
    deadline = time.monotonic() + 600
    while (status := admin.job(job))["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["state"] == "done", status
    admin.job_artifact(job, out)
    return {"job": job, "card": json.loads((out / "model_card.json").read_text())}


def publish(hub: LiveHub, keys: Path, source: Path, version: int, tmp: Path) -> None:
    bundle = tmp / f"bundle-v{version}"
    cli("bundle", "build", str(source), "--out", str(bundle), "--name", "shapes",
        "--version", str(version))  # fmt: skip
    cli("bundle", "publish", str(bundle), "--hub", hub.url, "--keys", str(keys),
        "--token", hub.admin_token, "--cohort", "lab")  # fmt: skip


def feed(dev: Device, images: list[Path], tag: str) -> list[str]:
    names = []
    for i, img in enumerate(images):
        name = f"{tag}{i:03d}.png"
        tmp = dev.inbox / f".{name}.tmp"
        tmp.write_bytes(img.read_bytes())
        tmp.rename(dev.inbox / name)
        names.append(name)
    return names


def served_labels(dev: Device, frames: list[str], timeout: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout
    while not set(frames) <= set(results := dev.results()):
        assert time.monotonic() < deadline, f"not served: {frames}; {dev.tail()}"
        time.sleep(0.1)
    return {item["label"] for f in frames for item in results[f]["stages"]["classifier"]["items"]}


def with_detections(dev: Device, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample rows whose frame has at least one classified detection (a correction names
    one with ``--item``; a split's rule reads its box)."""
    results = dev.results()
    return [r for r in rows if results[r["frame_id"]]["stages"]["classifier"]["items"]]


def stored_records(dev: Device) -> list[Any]:
    store = SampleStore(dev.state / "samples", max_bytes=1 << 30)
    try:
        return [r for r in store.top(1 << 30, state=None, with_image=False)]
    finally:
        store.close()


def test_a_shapes_task_goes_round_the_loop_with_an_ontology_change(
    tmp_path: Path,
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    start_device: Callable[..., Device],
) -> None:
    # Import: a native set written as COCO, imported by the hub (which validates it again).
    native = shapes_dataset(tmp_path / "native", n=40, kinds=V1)
    cli(
        "dataset", "convert", "native", str(native), "--to", "coco", "--out", str(tmp_path / "coco")
    )
    got = json.loads(
        cli(
            "dataset",
            "import",
            "coco",
            str(tmp_path / "coco"),
            "--name",
            "shapes",
            "--hub",
            live_hub.url,
            "--token",
            live_hub.admin_token,
            "--json",
        )
    )
    assert got["version"] == 1 and got["classes"] == V1 and got["source_format"] == "coco"
    hub = ["--hub", live_hub.url, "--token", live_hub.admin_token]
    cli("ontology", "create", "shapes", *V1, *hub)

    # Train v1 on the hub: a detector and a crop classifier, parity checked per engine.
    v1 = train_on_hub(admin, 1, tmp_path / "src-v1")
    parity = v1["card"]["parity"]
    for engine in ("onnx", "openvino"):
        for model in ("detector", "classifier"):
            assert parity["max_abs_diff"][f"{engine}.{model}"] < 1e-3, parity
    export_classifier_tflite(tmp_path / "src-v1")
    publish(live_hub, keys, tmp_path / "src-v1", 1, tmp_path)

    # Serve: a real device commits v1 and predicts v1 classes. Uploads wait (interval 1 h) so
    # that the operator's corrections are on the records when they go.
    dev = start_device(cohort="lab", upload={"interval_s": 3600})
    dev.wait("v1 committed", committed(1))
    images = sorted((native / "images").glob("*.png")) or sorted(native.glob("**/*.png"))
    first = feed(dev, images[:8], "a")
    assert served_labels(dev, first) <= set(V1)
    dev.wait("stored", lambda st: st["writer"]["stored"] >= 8)
    cfg = ["--config", str(dev.config)]
    rows = with_detections(dev, json.loads(cli("samples", "list", *cfg, "--json")))
    assert len(rows) >= 2, "the detector found nothing to correct"
    fixes = {rows[0]["id"]: "square", rows[1]["id"]: "circle"}
    for sid, label in fixes.items():
        cli("feedback", "correct", sid, "--label", label, "--item", "0", *cfg)

    # Learn: the corrections reach the hub with their samples.
    dev.reconfigure(upload={"interval_s": 0.3})
    deadline = time.monotonic() + 60
    while {
        s["id"] for s in admin.samples("shapes") if (s.get("feedback") or {}).get("label")
    } < set(fixes):
        assert time.monotonic() < deadline, f"corrections not on the hub: {dev.tail()}"
        time.sleep(0.3)
    dev.reconfigure(upload={"interval_s": 3600})  # the next records stay in the device store
    kept = feed(dev, images[8:16], "b")
    served_labels(dev, kept)
    dev.wait("stored again", lambda st: st["writer"]["stored"] >= 8)
    rows = with_detections(dev, json.loads(cli("samples", "list", *cfg, "--json")))
    kept_fix = rows[0]["id"]
    cli("feedback", "correct", kept_fix, "--label", "triangle", "--item", "0", *cfg)

    # Change the ontology on the hub: a merge and a split with a rule; hub samples follow.
    before = {s["id"]: s for s in admin.samples("shapes")}
    cli("ontology", "change", "shapes", *CHANGES, "--base-version", "1", *hub)
    on_hub = {s["id"]: s for s in admin.samples("shapes")}
    for sid, old in fixes.items():
        fb = on_hub[sid]["feedback"]
        assert fb is not None, json.dumps([before[sid], on_hub[sid]])
        assert fb["label"] in (V2 if old == "circle" else {"polygon"}), on_hub[sid]

    # Retrain on the same hub dataset (aligned to v2 through the history), warm-started.
    v2 = train_on_hub(admin, 2, tmp_path / "src-v2", init_from=v1["job"])
    onto = yaml.safe_load((tmp_path / "src-v2" / "ontology.yaml").read_text())
    assert onto["version"] == 2 and onto["previous_version"] == 1 and set(onto["classes"]) == V2
    assert v2["card"]["warm_start"], v2["card"]
    publish(live_hub, keys, tmp_path / "src-v2", 2, tmp_path)

    # The device commits v2, serves the new class names, and its store was remapped.
    later = feed(dev, images[16:20], "c")
    dev.wait("v2 committed", committed(2), timeout=120)
    newer = feed(dev, images[20:24], "d")
    assert served_labels(dev, newer) <= V2
    assert later  # frames during the update were served by v1 or v2, either is fine
    dev.stop(close_log=False)
    records = {r.id: r for r in stored_records(dev)}
    assert kept_fix in records
    for rec in records.values():
        assert rec.ontology_version == 2, rec
        items = rec.prediction["stages"]["classifier"]["items"]
        assert {i["label"] for i in items} <= V2 | {None}, items
    fixed = records[kept_fix]
    assert fixed.feedback is not None and fixed.feedback.label == "polygon"


def export_classifier_tflite(source: Path) -> None:
    """The third engine, for the classifier: TFLite from the job's checkpoint, parity checked
    against torch by the exporter and against the job's ONNX model here."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from trainer.arch import build_classifier
    from trainer.export_formats import export_tflite, tflite_unavailable_reason
    from trainer.spec import TrainingSpec

    if (why := tflite_unavailable_reason()) is not None:
        pytest.skip(f"TFLite export: {why}")
    spec = TrainingSpec.model_validate_json((source / "checkpoint" / "spec.json").read_text())
    assert spec.crop_model is not None
    classes = yaml.safe_load((source / "ontology.yaml").read_text())["classes"]
    net = build_classifier(spec.crop_model, len(classes))
    net.load_state_dict(torch.load(source / "checkpoint" / "classifier.pt", weights_only=True))
    net.eval()
    w, h = spec.crop_model.input_size
    shape = (1, 3, h, w)
    diff = export_tflite(net, source / "models" / "classifier.tflite", shape[1:])
    assert diff < 1e-3
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    sess = ort.InferenceSession(str(source / "models" / "classifier.onnx"))
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    interp = Interpreter(model_path=str(source / "models" / "classifier.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    assert np.abs(interp.get_tensor(out["index"]) - want).max() < 1e-3
