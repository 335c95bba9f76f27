"""Hub ontology versions: a merge and a split remap stored samples, annotations and feedback in
one transaction; a split without a rule sends samples back to the queue as needs_review; the
weakness report counts predictions, annotations and corrections per class."""

from __future__ import annotations

from typing import Any

import pytest

from hub.api._common import DB
from hub.testing import API, HubTestSession, sample_form, sample_meta

pytestmark = pytest.mark.asyncio


@pytest.fixture
def hub_storage(hub_backend: dict[str, Any]) -> dict[str, Any]:
    """Every test here runs on SQLite + blob folder and on PostgreSQL + S3."""
    return hub_backend


def sid(i: int) -> str:
    return f"{i:016x}-0000000{i % 10}"


def prediction(*items: tuple[str, list[float]]) -> dict[str, Any]:
    return {
        "stages": {"det": {"items": [{"label": lb, "box": b, "score": 0.9} for lb, b in items]}}
    }


async def upload(
    hub: HubTestSession, auth: dict[str, str], i: int, pred: dict[str, Any], fb: Any = None
) -> str:
    m = sample_meta(sid(i), "dev-1", 0.5, bundle="things")
    m["prediction"] = pred
    if fb is not None:
        m["feedback"] = fb
    resp = await hub.client.put(
        f"{API}/device/samples/{m['id']}",
        data=sample_form(m, b"\xff\xd8%d\xff\xd9" % i),
        headers=auth,
    )
    assert resp.status == 200, await resp.text()
    return m["id"]


async def call(hub: HubTestSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await hub.client.request(method, f"{API}{path}", headers=hub.admin, **kw)
    return resp.status, await resp.json()


async def test_merge_and_split_remap_hub_data_when_the_ontology_changes(
    hub: HubTestSession,
) -> None:
    db = hub.client.app[DB]
    db.add_bundle("things", 1, {"ontology": {"id": "things", "version": 1}})
    status, body = await call(
        hub, "POST", "/admin/ontologies", json={"id": "things", "classes": ["cat", "dog", "car"]}
    )
    assert status == 200 and body["version"] == 1
    auth = await hub.enroll("dev-1")
    wide, square = [0, 0, 40, 10], [0, 0, 10, 10]
    s_merge = await upload(
        hub, auth, 1, prediction(("cat", square)),
        {"kind": "correct", "label": "dog", "who": "op", "when": 1.0},
    )  # fmt: skip
    s_split = await upload(hub, auth, 2, prediction(("car", wide)))
    s_refused = await upload(
        hub, auth, 3, prediction(("dog", square)),
        {"kind": "correct", "label": "car", "who": "op", "when": 1.0},
    )  # fmt: skip
    for s, boxes in ((s_split, [[0, 0, 40, 10, "car"]]), (s_merge, [[0, 0, 10, 10, "dog"]])):
        status, _ = await call(
            hub, "POST", f"/admin/samples/{s}/annotation", json={"boxes": boxes, "annotator": "a"}
        )
        assert status == 200

    status, body = await call(
        hub,
        "POST",
        "/admin/ontologies/things/changes",
        json={
            "base_version": 1,
            "changes": [
                {"op": "merge", "sources": ["cat", "dog"], "into": "animal"},
                {"op": "split", "source": "car", "into": ["sedan", "truck"]},
            ],
        },
    )
    assert status == 200, body
    assert body["version"] == 2 and body["classes"] == ["animal", "sedan", "truck"]
    assert body["remapped"] == 3 and sorted(body["needs_review"]) == [s_split, s_refused]

    merged = db.sample(s_merge)
    assert merged.annotation is not None and merged.annotation["boxes"] == [
        [0, 0, 10, 10, "animal"]
    ]
    assert merged.meta["prediction"]["stages"]["det"]["items"][0]["label"] == "animal"
    assert merged.meta["ontology_version"] == 2
    assert db.feedback(s_merge) == {
        "kind": "correct", "label": "animal", "who": "op", "when": 1.0, "bundle_version": 0,
        "item": None,
    }  # fmt: skip
    split = db.sample(s_split)
    assert split.state == "pending" and split.annotation is None
    assert split.meta["needs_review"] is True
    assert split.meta["annotation_before_review"]["boxes"] == [[0, 0, 40, 10, "car"]]
    refused = db.sample(s_refused)
    assert db.feedback(s_refused) is None
    assert refused.meta["refused_feedback"]["label"] == "car"
    queue = await (
        await hub.client.get(f"{API}/admin/samples", params={"state": "pending"}, headers=hub.admin)
    ).json()
    assert {q["id"] for q in queue if q.get("needs_review")} == {s_split, s_refused}

    # A stale base version, or a change that does not apply, is refused and changes nothing.
    status, body = await call(
        hub, "POST", "/admin/ontologies/things/changes",
        json={"base_version": 1, "changes": [{"op": "create", "name": "x"}]},
    )  # fmt: skip
    assert status == 409 and "at version 2, not 1" in body["error"]
    status, body = await call(
        hub, "POST", "/admin/ontologies/things/changes",
        json={"changes": [{"op": "rename", "old": "car", "new": "auto"}]},
    )  # fmt: skip
    assert status == 400 and "no class 'car'" in body["error"]
    # A device still on the old bundle uploads a sample labelled under version 1.
    late = await upload(
        hub, auth, 4, prediction(("dog", square)),
        {"kind": "correct", "label": "cat", "who": "op", "when": 2.0},
    )  # fmt: skip
    stored = db.sample(late)
    assert stored.meta["ontology_version"] == 2
    assert stored.meta["prediction"]["stages"]["det"]["items"][0]["label"] == "animal"
    fb = db.feedback(late)
    assert fb is not None and fb["label"] == "animal"
    # A human annotating with labels of version 1: converted, or refused saying why.
    status, body = await call(
        hub, "POST", f"/admin/samples/{late}/annotation",
        json={"boxes": [[0, 0, 5, 5, "dog"]], "annotator": "a"},
    )  # fmt: skip
    assert status == 200, body
    annotation = db.sample(late).annotation
    assert annotation is not None and annotation["boxes"] == [[0, 0, 5, 5, "animal"]]
    status, body = await call(
        hub, "POST", f"/admin/samples/{late}/annotation",
        json={"boxes": [[0, 0, 5, 5, "car"]], "annotator": "a"},
    )  # fmt: skip
    assert status == 400
    assert body["error"] == (
        "label 'car' is not in ontology 'things' version 2: 'car' was split into 'sedan', "
        "'truck'; choose one of them (animal, sedan, truck)"
    )
    # Feedback a device on the old bundle sends later is converted too.
    resp = await hub.client.put(
        f"{API}/device/samples/{s_split}/feedback",
        json={"feedback": {"kind": "correct", "label": "cat", "who": "op", "when": 3.0}},
        headers=auth,
    )
    assert resp.status == 200, await resp.text()
    fb = db.feedback(s_split)
    assert fb is not None and fb["label"] == "animal"
    status, versions = await call(hub, "GET", "/admin/ontologies/things")
    assert [v["version"] for v in versions] == [1, 2]
    assert [v.version for v in db.ontology_versions("things")] == [1, 2]


async def test_weakness_report_lists_confusions_when_corrections_disagree(
    hub: HubTestSession,
) -> None:
    db = hub.client.app[DB]
    db.add_bundle("things", 1, {"ontology": {"id": "things", "version": 1}})
    await call(hub, "POST", "/admin/ontologies", json={"id": "things", "classes": ["a", "b", "c"]})
    auth = await hub.enroll("dev-1")
    box = [0, 0, 10, 10]
    for i in range(4):
        await upload(
            hub, auth, i, prediction(("a", box)),
            {"kind": "correct", "label": "b", "who": "op", "when": 1.0} if i < 3 else None,
        )  # fmt: skip
    s = await upload(hub, auth, 9, prediction(("b", box)))
    await call(
        hub, "POST", f"/admin/samples/{s}/annotation",
        json={"boxes": [[0, 0, 10, 10, "c"]], "annotator": "x"},
    )  # fmt: skip
    status, report = await call(hub, "GET", "/admin/ontologies/things/weakness")
    assert status == 200, report
    a, b, c = (report["classes"][k] for k in "abc")
    assert (a["predicted"], a["corrected_from"]) == (4, 3)
    assert (b["predicted"], b["corrected_to"]) == (1, 3)
    assert (c["predicted"], c["annotated"]) == (0, 1) and "never_predicted" in c["flags"]
    assert report["confused_pairs"][:2] == [
        {"predicted": "a", "actual": "b", "count": 3},
        {"predicted": "b", "actual": "c", "count": 1},
    ]
    assert "often_confused" in a["flags"]
