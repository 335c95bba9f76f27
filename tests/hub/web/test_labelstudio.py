"""Label Studio JSON both ways and the ML backend's auth and webhook, through the real app.

The payloads follow Label Studio's documented shapes: an export is a list of tasks whose
``annotations[].result`` hold ``rectanglelabels`` regions in percent of ``original_width`` /
``original_height``; a webhook event carries ``action``, ``task`` and ``annotation``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import cv2
import numpy as np
import pytest

from hub.testing import API, HubTestSession, sample_form, sample_meta
from trainer.datasets.ls_json import annotation_of, task_for

Hub = HubTestSession


def _png(i: int) -> bytes:
    img = np.zeros((60, 80, 3), np.uint8)
    img[0, 0] = i
    return cv2.imencode(".png", img)[1].tobytes()


async def _upload(hub: Hub, auth: dict[str, str], i: int) -> str:
    m = sample_meta(f"{i:016x}-0000000{i % 10}", "cam-1", 0.5)
    m["bundle"] = "digits"
    m["image_format"] = "png"
    m["prediction"] = {
        "stages": {
            "d": {"kind": "d", "items": [{"box": [8, 6, 40, 30], "label": "3", "score": 0.8}]}
        }
    }
    resp = await hub.client.put(
        f"{API}/device/samples/{m['id']}", data=sample_form(m, _png(i)), headers=auth
    )
    assert resp.status == 200, await resp.text()
    return str(m["id"])


async def _token(hub: Hub, name: str, role: str) -> str:
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": name, "role": role}, headers=hub.admin
    )
    return str((await resp.json())["token"])


def _basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ls:{token}".encode()).decode()}


def test_boxes_when_sent_to_label_studio_and_back_are_the_same() -> None:
    items = [{"box": [8, 6, 40, 30], "label": "3", "score": 0.8},
             {"box": [0, 0, 80, 60], "label": "7", "score": 0.6}]  # fmt: skip
    task = task_for("s1", "http://hub/img", items, (80, 60), "digits v1")
    (pred,) = task["predictions"]
    assert pred["score"] == pytest.approx(0.7)
    region = pred["result"][0]
    assert region["value"]["x"] == pytest.approx(10.0) and region["value"]["height"] == 40.0
    back = annotation_of(pred["result"])
    assert back.problems == []
    assert back.boxes == [[8.0, 6.0, 40.0, 30.0, "3"], [0.0, 0.0, 80.0, 60.0, "7"]]


def test_classification_when_sent_and_back_is_one_choice() -> None:
    task = task_for("s2", "http://hub/img", [{"label": "cat", "score": 0.9}], (80, 60), "pets v2")
    (region,) = task["predictions"][0]["result"]
    assert region["type"] == "choices" and region["value"] == {"choices": ["cat"]}
    back = annotation_of(task["predictions"][0]["result"])
    assert (back.label, back.boxes, back.problems) == ("cat", [], [])


def test_annotation_when_results_are_bad_names_every_problem() -> None:
    result = [
        {"id": "a", "type": "rectanglelabels", "original_width": 80, "original_height": 60,
         "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 30,
                   "rectanglelabels": ["3"]}},
        {"id": "b", "type": "polygonlabels", "value": {"points": []}},
        {"id": "c", "type": "rectanglelabels", "value": {"x": "1", "y": 1, "width": 5,
                                                          "height": 5, "rectanglelabels": ["3"]}},
        {"id": "d", "type": "choices", "value": {"choices": ["cat", "dog"]}},
    ]  # fmt: skip
    got = annotation_of(result)
    assert len(got.problems) == 4
    assert [p.split(":")[0] for p in got.problems] == [
        "result a",
        "result b",
        "result c",
        "result d",
    ]


@pytest.mark.asyncio
async def test_tasks_when_exported_carry_signed_image_links_and_pre_annotations(hub: Hub) -> None:
    cam = await hub.enroll("cam-1")
    sid = await _upload(hub, cam, 1)
    resp = await hub.client.get(f"{API}/admin/labelstudio/tasks?bundle=digits", headers=hub.admin)
    assert resp.status == 200
    (task,) = await resp.json()
    assert task["data"]["leanloop_id"] == sid
    assert task["predictions"][0]["result"][0]["value"]["rectanglelabels"] == ["3"]
    url = task["data"]["image"]
    path = url.split("://", 1)[1].split("/", 1)[1]
    ok = await hub.client.get("/" + path)
    assert ok.status == 200 and ok.headers["Content-Type"] == "image/png"
    forged = re.sub(r"sig=[0-9a-f]{4}", "sig=0000", "/" + path)
    assert (await hub.client.get(forged)).status == 403
    expired = re.sub(r"exp=\d+", "exp=1000", "/" + path)
    assert (await hub.client.get(expired)).status == 403


@pytest.mark.asyncio
async def test_import_when_an_export_has_annotations_stores_them_or_nothing(
    hub: Hub, make_bundle: Any
) -> None:
    await hub.publish(make_bundle("digits", 1))  # its ontology: classes "0".."9"
    cam = await hub.enroll("cam-1")
    a, b = await _upload(hub, cam, 1), await _upload(hub, cam, 2)
    resp = await hub.client.get(f"{API}/admin/labelstudio/tasks", headers=hub.admin)
    tasks = await resp.json()
    for n, t in enumerate(tasks):
        t["id"] = n + 1
        result = [dict(r) for r in t["predictions"][0]["result"]]
        t["annotations"] = [
            {"id": 10 + n, "completed_by": 7, "was_cancelled": False, "result": result}
        ]
    bad = [dict(t) for t in tasks]
    bad[1] = {**bad[1], "annotations": [{"result": [{"type": "rectanglelabels", "value": {
        "x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["unicorn"]},
        "original_width": 80, "original_height": 60}]}]}  # fmt: skip
    ann = await _token(hub, "ann", "annotator")
    auth = {"Authorization": f"Bearer {ann}"}
    resp = await hub.client.post(f"{API}/admin/labelstudio/import", json=bad, headers=auth)
    assert resp.status == 400, await resp.text()
    state = await hub.client.get(f"{API}/admin/samples?state=annotated", headers=hub.admin)
    assert await state.json() == []  # nothing half-imported
    resp = await hub.client.post(f"{API}/admin/labelstudio/import", json=tasks, headers=auth)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["annotated"] == 2
    state = await hub.client.get(f"{API}/admin/samples?state=annotated", headers=hub.admin)
    got = {s["id"]: s["annotation"] for s in await state.json()}
    assert set(got) == {a, b}
    assert got[a]["boxes"] == [[8.0, 6.0, 40.0, 30.0, "3"]]
    assert got[a]["annotator"] == "labelstudio:7"
    for body in (b"not json", b"{}", b'[{"data": {}}]'):
        r = await hub.client.post(f"{API}/admin/labelstudio/import", data=body, headers=auth)
        assert r.status == 400


@pytest.mark.asyncio
async def test_ml_backend_when_called_checks_its_caller_and_stores_webhook_annotations(
    hub: Hub,
) -> None:
    cam = await hub.enroll("cam-1")
    sid = await _upload(hub, cam, 1)
    base = "/labelstudio/ml/digits"
    assert (await hub.client.get(f"{base}/health")).status == 200
    assert (await hub.client.post(f"{base}/setup", json={})).status == 401
    viewer = await _token(hub, "vic", "viewer")
    assert (await hub.client.post(f"{base}/setup", json={}, headers=_basic(viewer))).status == 403
    bad = {"Authorization": "Basic !!!"}
    assert (await hub.client.post(f"{base}/setup", json={}, headers=bad)).status == 401
    ann = await _token(hub, "ann", "annotator")
    r = await hub.client.post(f"{base}/setup", json={"project": "1.1"}, headers=_basic(ann))
    assert r.status == 200 and "model_version" in await r.json()
    event = {
        "action": "ANNOTATION_CREATED",
        "task": {"id": 1, "data": {"image": "x", "leanloop_id": sid}},
        "annotation": {"id": 5, "completed_by": 3, "result": [
            {"type": "rectanglelabels", "original_width": 80, "original_height": 60,
             "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["5"]}}]},
    }  # fmt: skip
    r = await hub.client.post(f"{base}/webhook", json=event, headers=_basic(ann))
    assert r.status == 201, await r.text()
    state = await hub.client.get(f"{API}/admin/samples?state=annotated", headers=hub.admin)
    (s,) = await state.json()
    assert s["annotation"]["boxes"] == [[8.0, 6.0, 48.0, 36.0, "5"]]
    r = await hub.client.post(
        f"{base}/webhook", json={"action": "PROJECT_UPDATED"}, headers=_basic(ann)
    )
    assert r.status == 200 and (await r.json())["status"] == "ignored"
    r = await hub.client.post(f"{base}/predict", json={"tasks": []}, headers=_basic(ann))
    assert r.status == 404  # nothing published for digits yet: a clear 4xx, not a 500
