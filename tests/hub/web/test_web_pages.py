"""The hub's web page through the real app: login and session cookie, CSRF, roles, escaping,
session expiry, claim/lock, review, the explorer's filters, rollout actions."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio

from hub.storage import Sample
from hub.testing import API, HubTestSession, sample_form, sample_meta
from hub.web.pages import explore

Hub = HubTestSession


def _png(i: int = 0) -> bytes:
    # A distinct scene per sample: the queue keeps one entry per near-duplicate group.
    img = np.random.default_rng(i).integers(0, 120, (60, 80, 3), dtype=np.uint8)
    img[10:30, 10:40] = 200
    return cv2.imencode(".png", img)[1].tobytes()


def _sid(i: int) -> str:
    return f"{i:016x}-0000000{i % 10}"


async def _upload(hub: Hub, auth: dict[str, str], i: int, device: str, priority: float,
                  label: str = "1", **extra: Any) -> str:  # fmt: skip
    m = sample_meta(_sid(i), device, priority)
    m["bundle"] = "digits"
    m["image_format"] = "png"
    m["prediction"] = {
        "stages": {"det": {"kind": "d", "items": [{"box": [10, 10, 40, 30], "label": label}]}}
    }
    m.update(extra)
    resp = await hub.client.put(
        f"{API}/device/samples/{m['id']}", data=sample_form(m, _png(i)), headers=auth
    )
    assert resp.status == 200, await resp.text()
    return m["id"]


async def _token(hub: Hub, name: str, role: str) -> str:
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": name, "role": role}, headers=hub.admin
    )
    assert resp.status in (200, 201), await resp.text()
    return str((await resp.json())["token"])


class Browser:
    """One person's cookie jar on the test client (aiohttp's client keeps cookies per session,
    so each person gets their own client session sharing the app)."""

    def __init__(self, hub: Hub, session: Any) -> None:
        self.hub, self.s = hub, session

    async def login(self, token: str) -> Any:
        return await self.s.post(
            "/ui/login", data={"token": token, "next": "/ui/"}, allow_redirects=False
        )

    async def get(self, path: str) -> tuple[int, str]:
        resp = await self.s.get(path, allow_redirects=False)
        return resp.status, await resp.text()

    async def csrf(self) -> str:
        _, html = await self.get("/ui/")
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m, html[:500]
        return m.group(1)


@pytest_asyncio.fixture
async def person(hub: Hub, aiohttp_client: Any) -> Any:
    made: list[Browser] = []

    async def make() -> Browser:
        client = await aiohttp_client(hub.client.server)
        b = Browser(hub, client)
        made.append(b)
        return b

    return make


@pytest.mark.asyncio
async def test_login_when_token_is_named_sets_a_strict_httponly_cookie(
    hub: Hub, person: Any
) -> None:
    token = await _token(hub, "ann", "annotator")
    b = await person()
    status, _ = await b.get("/ui/")
    assert status == 303  # not logged in: to the login page
    resp = await b.login(token)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    status, html = await b.get("/ui/")
    assert status == 200 and "ann (annotator)" in html


@pytest.mark.asyncio
async def test_login_when_token_is_a_device_token_or_unknown_is_refused(
    hub: Hub, person: Any
) -> None:
    cam = await hub.enroll("cam-1")
    b = await person()
    for token in (cam["Authorization"].split()[1], "nope", "x" * 600):
        resp = await b.login(token)
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers


@pytest.mark.asyncio
async def test_post_when_csrf_token_is_missing_or_wrong_is_refused(hub: Hub, person: Any) -> None:
    b = await person()
    await b.login(hub.admin_token)
    for data in ({}, {"csrf": "forged"}):
        resp = await b.s.post("/ui/logout", data=data, allow_redirects=False)
        assert resp.status == 403
    good = await b.csrf()
    resp = await b.s.post(
        "/ui/logout", data={"csrf": good}, headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 403
    resp = await b.s.post("/ui/logout", data={"csrf": good}, allow_redirects=False)
    assert resp.status == 303
    status, _ = await b.get("/ui/")
    assert status == 303  # logged out: the session is gone


@pytest.mark.asyncio
async def test_roles_when_annotator_or_viewer_reach_for_admin_actions_are_refused(
    hub: Hub, person: Any
) -> None:
    ann = await person()
    await ann.login(await _token(hub, "ann", "annotator"))
    viewer = await person()
    await viewer.login(await _token(hub, "vic", "viewer"))
    resp = await ann.s.post("/ui/rollouts/1/pause", data={"csrf": await ann.csrf()})
    assert resp.status == 403
    resp = await viewer.s.post("/ui/rollouts/1/abort", data={"csrf": await viewer.csrf()})
    assert resp.status == 403
    assert (await viewer.get("/ui/annotate"))[0] == 403
    assert (await viewer.get("/ui/review"))[0] == 403
    # The page's session cookie is no bearer token: the JSON API still wants a token.
    resp = await ann.s.get(f"{API}/admin/devices")
    assert resp.status == 401
    _, html = await viewer.get("/ui/rollouts")
    assert "Pause" not in html  # no admin buttons for a viewer


@pytest.mark.asyncio
async def test_pages_when_names_hold_markup_render_them_as_text(hub: Hub, person: Any) -> None:
    evil = "<script>alert(1)</script>"
    cam = await hub.enroll("cam-x")
    await hub.client.post(
        f"{API}/device/heartbeat", json={"update_state": evil, "fps": 3.0}, headers=cam
    )
    await _upload(hub, cam, 1, "cam-x", 0.9, label=evil)
    b = await person()
    await b.login(hub.admin_token)
    for path in ("/ui/", "/ui/samples", f"/ui/annotate/{_sid(1)}"):
        status, html = await b.get(path)
        assert status == 200, path
        assert evil not in html, path
        assert "&lt;script&gt;" in html or "\\u003cscript\\u003e" in html, path


@pytest.mark.asyncio
async def test_session_when_idle_past_its_ttl_expires(hub: Hub, person: Any) -> None:
    from hub.api._common import DB

    b = await person()
    await b.login(hub.admin_token)
    assert (await b.get("/ui/"))[0] == 200
    db = hub.client.server.app[DB]

    def age_sessions() -> None:
        db._db.execute("UPDATE web_sessions SET expires = ?", (time.time() - 1,))

    await db.call(age_sessions)
    assert (await b.get("/ui/"))[0] == 303


@pytest.mark.asyncio
async def test_claims_when_two_annotators_ask_never_hand_out_the_same_sample(
    hub: Hub, person: Any
) -> None:
    cam = await hub.enroll("cam-1")
    for i in range(3):
        await _upload(hub, cam, i + 1, "cam-1", 0.9 - i * 0.1)
    a, b = await person(), await person()
    await a.login(await _token(hub, "ann", "annotator"))
    await b.login(await _token(hub, "bob", "annotator"))
    ra = await a.s.get("/ui/annotate?bundle=digits", allow_redirects=False)
    rb = await b.s.get("/ui/annotate?bundle=digits", allow_redirects=False)
    la, lb = ra.headers["Location"], rb.headers["Location"]
    assert la != lb
    assert la.startswith(f"/ui/annotate/{_sid(1)}")  # the queue's top goes first
    # bob opening ann's sample sees it read-only
    status, html = await b.get(la.split("?")[0])
    assert status == 200 and "ann holds this sample" in html


@pytest.mark.asyncio
async def test_review_when_accepted_by_a_second_person_annotates_the_sample(
    hub: Hub, person: Any
) -> None:
    cam = await hub.enroll("cam-1")
    sid = await _upload(hub, cam, 1, "cam-1", 0.9)
    ann, rev = await person(), await person()
    await ann.login(await _token(hub, "ann", "annotator"))
    await rev.login(await _token(hub, "rev", "annotator"))
    await ann.get(f"/ui/annotate/{sid}")
    boxes = [[1, 2, 20, 30, "3"], [30, 5, 60, 40, "7"]]
    resp = await ann.s.post(
        f"/ui/annotate/{sid}", json={"boxes": boxes}, headers={"X-CSRF-Token": await ann.csrf()}
    )
    assert resp.status == 200, await resp.text()
    # bad boxes are a 400 naming the box
    resp = await ann.s.post(
        f"/ui/annotate/{sid}", json={"boxes": [[5, 5, 1, 1, "3"]]},
        headers={"X-CSRF-Token": await ann.csrf()},
    )  # fmt: skip
    assert resp.status in (400, 409)
    # the author cannot accept their own work
    resp = await ann.s.post(
        f"/ui/review/{sid}", data={"csrf": await ann.csrf(), "decision": "accept"}
    )
    assert resp.status == 403
    resp = await rev.s.post(
        f"/ui/review/{sid}", data={"csrf": await rev.csrf(), "decision": "accept"},
        allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 303
    got = await hub.client.get(f"{API}/admin/samples?state=annotated", headers=hub.admin)
    (sample,) = [s for s in await got.json() if s["id"] == sid]
    assert sample["annotation"]["boxes"] == boxes
    assert sample["annotation"]["annotator"] == "ann"
    assert sample["annotation"]["reviewer"] == "rev"


@pytest.mark.asyncio
async def test_review_when_sent_back_returns_the_sample_to_its_author_first(
    hub: Hub, person: Any
) -> None:
    cam = await hub.enroll("cam-1")
    first = await _upload(hub, cam, 1, "cam-1", 0.1)
    await _upload(hub, cam, 2, "cam-1", 0.9)  # the queue's top
    ann, rev = await person(), await person()
    await ann.login(await _token(hub, "ann", "annotator"))
    await rev.login(await _token(hub, "rev", "annotator"))
    await ann.get(f"/ui/annotate/{first}")
    await ann.s.post(
        f"/ui/annotate/{first}", json={"boxes": [[1, 1, 9, 9, "2"]]},
        headers={"X-CSRF-Token": await ann.csrf()},
    )  # fmt: skip
    resp = await rev.s.post(
        f"/ui/review/{first}",
        data={"csrf": await rev.csrf(), "decision": "return", "note": "box too small"},
        allow_redirects=False,
    )
    assert resp.status == 303
    r = await ann.s.get("/ui/annotate?bundle=digits", allow_redirects=False)
    assert r.headers["Location"].startswith(f"/ui/annotate/{first}")
    _, html = await ann.get(f"/ui/annotate/{first}")
    assert "box too small" in html


def _sample(i: int, **meta: Any) -> Sample:
    return Sample(
        id=_sid(i), bundle="digits", device_id=meta.pop("device", "cam-1"),
        priority=meta.pop("priority", 0.5), meta=meta, image_sha256="0" * 64,
        state=meta.pop("state", "pending"), annotation=None,
        created=meta.pop("created", time.time()),
    )  # fmt: skip


def test_explore_when_filtered_keeps_only_matching_samples_in_order() -> None:
    pred = {"stages": {"d": {"items": [{"label": "7"}]}}}
    s = [
        _sample(1, priority=0.9, scores={"margin": 0.9, "entropy": 0.1}, prediction=pred),
        _sample(2, priority=0.2, random_slice=True, device="cam-2"),
        _sample(3, priority=0.5, scores={"entropy": 0.8}, feedback={"kind": "correct"}),
        _sample(4, priority=0.7, scores={"margin": 0.4}, created=time.time() - 7200),
    ]
    cohorts = {"cam-1": "north", "cam-2": "south"}
    ids = lambda q: [x.id for x in explore(s, cohorts, q)]  # noqa: E731
    assert ids({}) == [_sid(1), _sid(4), _sid(3), _sid(2)]
    assert ids({"strategy": "margin"}) == [_sid(1), _sid(4)]
    assert ids({"strategy": "random"}) == [_sid(2)]
    assert ids({"cohort": "south"}) == [_sid(2)]
    assert ids({"label": "7"}) == [_sid(1)]
    assert ids({"corrected": "yes"}) == [_sid(3)]
    assert ids({"min_score": "0.6"}) == [_sid(1), _sid(4)]
    assert ids({"since_h": "1"}) == [_sid(1), _sid(3), _sid(2)]
    assert ids({"sort": "oldest"})[0] == _sid(4)
    assert ids({"min_score": "not a number"}) == ids({})


@pytest.mark.asyncio
async def test_rollout_action_when_admin_pauses_changes_the_rollout(
    hub: Hub, person: Any, make_bundle: Any, tmp_path: Path
) -> None:
    await hub.enroll("cam-1")
    await hub.publish(make_bundle("digits", 1))
    resp = await hub.client.post(
        f"{API}/admin/rollouts/staged",
        json={"bundle": "digits", "version": 1, "waves": [{"percent": 100}]},
        headers=hub.admin,
    )
    assert resp.status == 201, await resp.text()
    rid = (await resp.json())["id"]
    b = await person()
    await b.login(hub.admin_token)
    status, html = await b.get("/ui/rollouts")
    assert status == 200 and f'data-rollout="{rid}"' in html
    resp = await b.s.post(f"/ui/rollouts/{rid}/pause", data={"csrf": await b.csrf()})
    assert resp.status == 200
    html = await resp.text()
    assert "pause done" in html
    st = await hub.client.get(f"{API}/admin/rollouts/{rid}", headers=hub.admin)
    assert (await st.json())["status"] == "paused"


@pytest.mark.asyncio
async def test_reports_when_a_replay_report_is_stored_link_its_sandboxed_page(
    hub: Hub, person: Any
) -> None:
    from hub.api._common import BLOBS, DB

    app = hub.client.server.app
    db, blobs = app[DB], app[BLOBS]
    page_html = b"<html><body><h1>gate: blocked</h1><svg></svg></body></html>"
    html_sha, _ = await db.call(blobs.put, page_html)
    json_sha, _ = await db.call(blobs.put, b"{}")
    digest = "ab" * 16
    await db.call(db.add_report, digest, "digits", 4, "cd" * 16, "blocked", json_sha, html_sha)
    b = await person()
    await b.login(await _token(hub, "vic", "viewer"))
    status, html = await b.get("/ui/reports")
    assert status == 200 and f"/ui/reports/replay/{digest}" in html and "blocked" in html
    resp = await b.s.get(f"/ui/reports/replay/{digest}")
    assert resp.status == 200 and await resp.read() == page_html
    assert resp.headers["Content-Security-Policy"].startswith("sandbox")
    assert (await b.get(f"/ui/reports/replay/{'ef' * 16}"))[0] == 404


@pytest.mark.asyncio
async def test_jobs_when_a_job_wrote_a_model_card_show_its_metrics_and_confusion(
    hub: Hub, person: Any
) -> None:
    import json

    from hub.api._common import CONFIG, DB

    app = hub.client.server.app
    db = app[DB]
    job = await db.call(db.add_job, {"bundle": "pets", "version": 2})
    source = Path(app[CONFIG].data_dir) / "jobs" / str(job) / "source"
    source.mkdir(parents=True)
    card = {
        "format": "leanloop.model_card/1", "task": "classify", "time_s": 42.0,
        "data": {"dataset": "pets", "version": "3", "items": 120,
                 "ontology": {"id": "pets", "version": 2, "classes": ["cat", "<dog>"]}},
        "parity": {"max_abs_diff": {"openvino": 2e-6, "tflite": 7e-7}, "skipped": {}},
        "metrics": {"classifier": {
            "overall": {"accuracy": 0.875},
            "per_class": {"cat": {"precision": 0.9, "recall": 0.8},
                          "<dog>": {"precision": 0.85, "recall": 0.95}},
            "confusion": {"labels": ["cat", "<dog>"], "matrix": [[8, 2], [1, 19]]}}},
    }  # fmt: skip
    (source / "model_card.json").write_text(json.dumps(card))
    await db.call(db.set_job, job, "done", log_path=str(source.parent / "job.log"))
    b = await person()
    await b.login(hub.admin_token)
    status, html = await b.get("/ui/jobs")
    assert status == 200 and f'data-job="{job}"' in html
    assert "accuracy <b>0.875</b>" in html and "pets v3, 120 items" in html
    assert "&lt;dog&gt;" in html and "<dog>" not in html
    assert 'class="heat7">8<' in html and 'class="heat8">19<' in html
