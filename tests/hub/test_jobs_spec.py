"""Spec-driven training jobs on the hub: a bad spec is a 400; the small inner loop (off by
default) queues a real training job after every N annotations, warm-starts the next one from
it, and the job status shows the confusion matrix of what it learnt."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import FormData

from hub.testing import API, sample_form, sample_meta
from hub.testing import HubTestSession as Hub

SPEC = {
    "task": "classify",
    "model": {"architecture": "mobilenet_v3_small", "width": 0.25, "input_size": [32, 32]},
    "epochs": 2,
    "batch": 8,
    "threads": 1,
    "export": ["onnx"],
}


def _jpeg(kind: int, k: int) -> bytes:
    img = np.full((40, 40, 3), 30 + k, np.uint8)
    if kind == 0:
        cv2.circle(img, (20, 20), 12, (220, 220, 220), -1)
    else:
        cv2.rectangle(img, (8, 8), (32, 32), (220, 220, 220), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


async def _wait_job(hub: Hub, job: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(1200):
        body = await (await hub.client.get(f"{API}/admin/jobs/{job}", headers=hub.admin)).json()
        if body["state"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job} did not finish: {body}")


async def _annotate(hub: Hub, cam: dict[str, str], n: int) -> dict[str, Any]:
    sid = f"{1000 + n:016d}-{n:08d}"
    resp = await hub.client.put(
        f"{API}/device/samples/{sid}",
        data=sample_form(sample_meta(sid, "cam-1", 0.5, bundle="shapes"), image=_jpeg(n % 2, n)),
        headers=cam,
    )
    assert resp.status in (200, 201), await resp.text()
    label = ["circle", "square"][n % 2]
    body = {"boxes": [[0, 0, 40, 40, label]], "annotator": "ann"}
    resp = await hub.client.post(
        f"{API}/admin/samples/{sid}/annotation", json=body, headers=hub.admin
    )
    assert resp.status == 200
    return dict(await resp.json())


@pytest.mark.asyncio
async def test_train_job_when_spec_is_invalid_answers_400(hub: Hub) -> None:
    body = {"bundle": "shapes", "version": 1, "spec": {**SPEC, "epoch": 3}}
    resp = await hub.client.post(f"{API}/admin/jobs/train", json=body, headers=hub.admin)
    assert resp.status == 400
    assert "epoch" in (await resp.json())["error"]


@pytest.mark.asyncio
async def test_auto_train_when_every_four_annotations_trains_and_shows_confusion(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    # Off by default: annotations queue nothing.
    assert "auto_job" not in await _annotate(hub, cam, 0)
    rule = {"every": 4, "version": 2, "spec": SPEC, "classes": ["circle", "square"]}
    resp = await hub.client.put(f"{API}/admin/jobs/auto/shapes", json=rule, headers=hub.admin)
    assert resp.status == 200, await resp.text()
    answers = [await _annotate(hub, cam, n) for n in range(1, 5)]
    assert [("auto_job" in a) for a in answers] == [False, False, False, True]
    status = await _wait_job(hub, answers[-1]["auto_job"])
    assert status["state"] == "done", status
    assert status["params"]["auto"] == {"annotated": 5, "new": 4}
    conf = status["progress"]["metrics"]["classifier"]["confusion"]
    assert conf["labels"] == ["circle", "square"] and sum(map(sum, conf["matrix"])) > 0
    # The next sub-batch warm-starts from the job before.
    answers = [await _annotate(hub, cam, n) for n in range(5, 9)]
    second = answers[-1]["auto_job"]
    status = await _wait_job(hub, second)
    assert status["state"] == "done", status
    assert status["params"]["init_from"] == answers[-1]["auto_job"] - 1
    assert status["params"]["version"] == 3
    rules = await (await hub.client.get(f"{API}/admin/jobs/auto", headers=hub.admin)).json()
    assert rules["shapes"]["jobs"] == [second - 1, second]
    resp = await hub.client.delete(f"{API}/admin/jobs/auto/shapes", headers=hub.admin)
    assert resp.status == 200
    assert "auto_job" not in await _annotate(hub, cam, 9)


@pytest.mark.asyncio
async def test_train_job_when_the_hub_manages_the_ontology_labels_the_dataset_in_it(
    hub: Hub,
) -> None:
    onto = {"id": "shapes", "classes": ["square", "circle", "triangle"]}
    resp = await hub.client.post(f"{API}/admin/ontologies", json=onto, headers=hub.admin)
    assert resp.status in (200, 201), await resp.text()
    for n in range(6):
        form = FormData()
        meta = {"bundle": "shapes", "ontology_id": "shapes", "ontology_version": 1}
        form.add_field("meta", json.dumps(meta), content_type="application/json")
        form.add_field("image", _jpeg(n % 2, n), filename="i.jpg", content_type="image/jpeg")
        label = ["circle", "square"][n % 2]
        ann = {"boxes": [[0, 0, 40, 40, label]], "annotator": "ann"}
        form.add_field("annotation", json.dumps(ann), content_type="application/json")
        resp = await hub.client.post(f"{API}/admin/samples", data=form, headers=hub.admin)
        assert resp.status == 200, await resp.text()
    body = {"bundle": "shapes", "version": 1, "spec": SPEC}
    resp = await hub.client.post(f"{API}/admin/jobs/train", json=body, headers=hub.admin)
    status = await _wait_job(hub, int((await resp.json())["job"]))
    assert status["state"] == "done", status
    labels = status["progress"]["metrics"]["classifier"]["confusion"]["labels"]
    assert labels == ["square", "circle", "triangle"]


def test_cli_train_when_given_a_hub_trains_there_and_downloads_the_source(
    live_hub: Any, tmp_path: Path
) -> None:
    from hub.client import HubAdminClient

    client = HubAdminClient(live_hub.url, live_hub.admin_token)
    for n in range(8):
        label = ["circle", "square"][n % 2]
        client.import_sample({"bundle": "shapes"}, _jpeg(n % 2, n), [[0, 0, 40, 40, label]])
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**SPEC, "name": "shapes", "dataset": {"path": "unused"}}))
    run = subprocess.run(
        [sys.executable, "-m", "leanloop.cli", "train", str(spec), "--hub", live_hub.url,
         "--bundle", "shapes", "--version", "2", "--out", str(tmp_path / "src"), "--json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LEANLOOP_ADMIN_TOKEN": live_hub.admin_token},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["card"]["data"]["items"] == 8
    assert (tmp_path / "src" / "models" / "classifier.onnx").is_file()


def test_spec_job_when_two_stage_and_init_from_warm_starts_both_stages(tmp_path: Path) -> None:
    from hub.jobs import JobRunner
    from hub.storage import BlobStore, HubDB

    db = HubDB(tmp_path / "hub.sqlite3")
    runner = JobRunner(db, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", [sys.executable])
    spec = {**SPEC, "task": "detect_then_classify", "dataset": {"path": "unused"}}
    job_dir = tmp_path / "jobs" / "9"
    job_dir.mkdir(parents=True)
    runner._spec_job({"bundle": "b", "spec": spec, "init_from": 3}, [], job_dir, True)
    written = json.loads((job_dir / "spec.json").read_text())
    ckpt = runner.checkpoint(3)
    assert written["warm_start"] == str(ckpt / "detector.pt")
    assert written["crop_warm_start"] == str(ckpt / "classifier.pt")
    db.close()
