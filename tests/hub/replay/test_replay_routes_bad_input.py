"""The replay routes answer bad input with one-line 4xx, never 5xx (real app, aiohttp client)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import FormData

from hub.testing import API, HubTestSession

GOOD: dict[str, Any] = {
    "format": "leanloop.replay-report/1",
    "candidate": {"name": "fruit", "version": 2, "digest": "c" * 64},
    "baseline": {"name": "fruit", "version": 1, "digest": "b" * 64},
    "spec_digest": "s" * 64,
    "decision": {"decision": "blocked", "summary": "blocked: all top1_accuracy regression"},
}


def form(report: Any) -> FormData:
    f = FormData()
    f.add_field("report", report if isinstance(report, bytes) else json.dumps(report).encode(),
                filename="report.json", content_type="application/json")  # fmt: skip
    return f


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, "not JSON"),
        ([1, 2], 400, "JSON object"),
        ({**GOOD, "format": "other/1"}, 400, "report format"),
        ({**GOOD, "candidate": {"name": "fruit"}}, 400, "not a replay report"),
        ({**GOOD, "candidate": {**GOOD["candidate"], "digest": "../x"}}, 400, "digest"),
    ],
)
@pytest.mark.asyncio
async def test_report_upload_refuses_what_is_not_a_report(
    hub: HubTestSession, body: Any, status: int, words: str
) -> None:
    resp = await hub.client.post(f"{API}/admin/replay/reports", data=form(body), headers=hub.admin)
    assert resp.status == status
    assert words in (await resp.json())["error"]


@pytest.mark.asyncio
async def test_blessing_and_report_routes_answer_4xx(hub: HubTestSession) -> None:
    c, h = hub.client, hub.admin
    resp = await c.post(f"{API}/admin/replay/reports", data=form(GOOD), headers=h)
    digest = (await resp.json())["digest"]
    checks = [
        (await c.post(f"{API}/admin/blessings", json={"report_digest": digest, "who": "a"},
                      headers=h), 409, "did not pass"),
        (await c.post(f"{API}/admin/blessings", json={"report_digest": "e" * 64}, headers=h),
         404, "upload it first"),
        (await c.post(f"{API}/admin/blessings", json={"report_digest": "x"}, headers=h),
         400, "report_digest"),
        (await c.get(f"{API}/admin/replay/reports/{'e' * 64}.json", headers=h), 404, "no replay"),
        (await c.get(f"{API}/admin/replay/reports/nothex.html", headers=h), 404, "no replay"),
        (await c.get(f"{API}/admin/replay/reports/{digest}.html", headers=h), 404, "without"),
        (await c.get(f"{API}/admin/metrics/compare?by=colour", headers=h), 400, "group by"),
        (await c.get(f"{API}/admin/metrics/compare?window_s=-1", headers=h), 400, "window_s"),
        (await c.get(f"{API}/admin/metrics/compare?now=soon", headers=h), 400, "now"),
        (await c.post(f"{API}/admin/replay/jobs", headers=h, json={
            "candidate_digest": "c" * 64, "baseline": 1, "spec": {"metrics": {"bogus": {}}}}),
         400, "unknown metric"),
        (await c.get(f"{API}/admin/replay/jobs/nope", headers=h), 404, "no such replay job"),
        (await c.get(f"{API}/admin/history/images/{'e' * 64}", headers=h), 404, "no image"),
        (await c.get(f"{API}/admin/history/images/zz", headers=h), 400, "sha256"),
    ]  # fmt: skip
    for resp, status, words in checks:
        assert (resp.status, words in (await resp.json())["error"]) == (status, True), (
            resp.url, await resp.text()
        )  # fmt: skip
    ok = await c.get(f"{API}/admin/replay/reports/{digest}.json", headers=h)
    assert ok.status == 200 and (await ok.json())["decision"]["decision"] == "blocked"


@pytest.mark.asyncio
async def test_a_replay_job_that_cannot_run_fails_with_a_reason(hub: HubTestSession) -> None:
    resp = await hub.client.post(f"{API}/admin/replay/jobs", headers=hub.admin,
                                 json={"candidate_digest": "c" * 64, "baseline": 1})  # fmt: skip
    assert resp.status == 202
    job_id = (await resp.json())["id"]
    for _ in range(100):
        job = await (await hub.client.get(f"{API}/admin/replay/jobs/{job_id}",
                                          headers=hub.admin)).json()  # fmt: skip
        if job["state"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "failed" and "no blob" in job["error"]
