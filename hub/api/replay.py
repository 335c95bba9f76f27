"""Admin replay routes: reports (JSON + HTML), blessings, the release audit log, replay jobs.

- ``POST /admin/replay/reports`` (multipart ``report`` JSON, optional ``html``): keep a report;
  answers its digest and decision. ``GET /admin/replay/reports`` lists them;
  ``GET /admin/replay/reports/{digest}.json|.html`` serves one (the HTML page is self-contained).
- ``POST /admin/blessings`` ``{"report_digest", "who"}``: bless the report's candidate if its
  gate passed (409 otherwise); ``GET /admin/blessings`` lists them.
- ``GET /admin/audit``: forced releases and blessings, newest first.
- ``POST /admin/replay/jobs``: the same replay as ``leanloop replay``, run by the hub on its own
  history (candidate uploaded as blobs and named by its manifest digest, baseline a published
  version), in a worker thread; ``GET /admin/replay/jobs/{id}`` says how it went. Jobs live in
  memory: a hub restart forgets them (their reports and blessings are stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import weakref
from typing import Any

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    BLOBS,
    CONFIG,
    DB,
    NAME_PATTERN,
    REPO,
    Body,
    caller_name,
    json_object,
    parse_body,
    read_capped,
    read_parts,
    store_blob,
)
from hub.errors import BadRequest, NotFound
from hub.replay.blessing import blessing_from_report
from hub.replay.evaluate import REPORT_FORMAT, report_digest
from hub.replay.spec import parse_gate_spec
from runtime.bundle.loader import read_manifest
from runtime.errors import ConfigError

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
MiB = 1024 * 1024


class BlessRequest(Body):
    """``POST /admin/blessings``."""

    report_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    who: str | None = Field(
        default=None, min_length=1, max_length=200, description="a named token's name wins"
    )


@routes.post(f"{API}/admin/replay/reports")
async def post_report(request: web.Request) -> web.Response:
    """Keep a replay report (and its HTML page); the same report again is a no-op."""
    cap = request.app[CONFIG].max_targets_bytes
    parts = await read_parts(request, {"report": cap, "html": 4 * cap}, {"report"})
    report = json_object(parts["report"], "report")
    if report.get("format") != REPORT_FORMAT:
        raise BadRequest(f"report format must be {REPORT_FORMAT}")
    try:
        cand = report["candidate"]
        bundle, version, cand_digest = str(cand["name"]), int(cand["version"]), str(cand["digest"])
        decision = str(report["decision"]["decision"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"not a replay report: missing or bad {e}") from e
    if not re.match(NAME_PATTERN, bundle) or not _DIGEST_RE.match(cand_digest):
        raise BadRequest("report names a bad bundle name or digest")
    digest = report_digest(report)
    json_sha = await store_blob(request.app, json.dumps(report, sort_keys=True).encode())
    html_sha = await store_blob(request.app, parts["html"]) if "html" in parts else None
    db = request.app[DB]
    await db.call(db.add_report, digest, bundle, version, cand_digest, decision, json_sha, html_sha)
    return web.json_response({"digest": digest, "decision": decision})


@routes.get(f"{API}/admin/replay/reports")
async def list_reports(request: web.Request) -> web.Response:
    """The latest reports, newest first."""
    db = request.app[DB]
    return web.json_response(await db.call(db.reports))


async def _report_row(request: web.Request) -> dict[str, Any]:
    digest = request.match_info["digest"]
    db = request.app[DB]
    row = await db.call(db.report, digest) if _DIGEST_RE.match(digest) else None
    if row is None:
        raise NotFound(f"no replay report {digest[:80]!r}")
    return row


async def _blob(request: web.Request, sha256: str) -> bytes:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, request.app[BLOBS].read, sha256)


@routes.get(f"{API}/admin/replay/reports/{{digest}}.json")
async def report_json(request: web.Request) -> web.Response:
    """One report as JSON."""
    data = await _blob(request, (await _report_row(request))["json_sha256"])
    return web.Response(body=data, content_type="application/json")


@routes.get(f"{API}/admin/replay/reports/{{digest}}.html")
async def report_html(request: web.Request) -> web.Response:
    """One report's self-contained HTML page."""
    row = await _report_row(request)
    if not row["html_sha256"]:
        raise NotFound("this report was stored without its HTML page")
    data = await _blob(request, row["html_sha256"])
    return web.Response(body=data, content_type="text/html", charset="utf-8")


@routes.post(f"{API}/admin/blessings")
async def bless(request: web.Request) -> web.Response:
    """Bless a stored report's candidate (its gate must have passed)."""
    body = parse_body(BlessRequest, await read_capped(request, 64 * 1024, "blessing"), "blessing")
    db = request.app[DB]
    row = await db.call(db.report, body.report_digest)
    if row is None:
        raise NotFound(f"no replay report {body.report_digest}; upload it first")
    report = json.loads(await _blob(request, row["json_sha256"]))
    who = caller_name(request, body.who)
    blessing = blessing_from_report(report, body.report_digest, who)
    await db.call(db.add_blessing, blessing)
    await db.call(db.audit, "bless", blessing["bundle"], blessing["version"], who, None, blessing)
    log.info("%s v%s blessed by %s", blessing["bundle"], blessing["version"], who)
    return web.json_response(blessing)


@routes.get(f"{API}/admin/blessings")
async def blessings(request: web.Request) -> web.Response:
    """Every blessing, newest first."""
    db = request.app[DB]
    return web.json_response(await db.call(db.blessings))


@routes.get(f"{API}/admin/audit")
async def audit(request: web.Request) -> web.Response:
    """The release audit log, newest first."""
    db = request.app[DB]
    return web.json_response(await db.call(db.audit_log))


# -- replay jobs ----------------------------------------------------------------------------------


class ReplayJobRequest(Body):
    """``POST /admin/replay/jobs``: replay a candidate (uploaded as blobs, named by its manifest
    digest) against a published baseline version on the hub's own history."""

    candidate_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="manifest sha256")
    baseline: int = Field(ge=1, description="published version of the same bundle")
    spec: dict[str, Any] = Field(default_factory=dict, description="gate spec (as gate.yaml)")
    since: float | None = None
    cohort: str | None = Field(default=None, pattern=NAME_PATTERN)
    workers: int = Field(default=1, ge=1, le=16)
    bless: bool = Field(default=False, description="bless the candidate if the gate passes")
    who: str = Field(default="hub", min_length=1, max_length=200)


_JOBS: weakref.WeakKeyDictionary[web.Application, dict[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _run_job(app: web.Application, job: dict[str, Any], body: ReplayJobRequest) -> None:
    """The job, in a worker thread: gather the inputs, replay, store the report, maybe bless."""
    from hub.replay.evaluate import run_replay
    from hub.replay.fetch import bundle_from_blobs, bundle_from_hub_store
    from hub.replay.history import HistoryDir, export_history
    from hub.replay.report import render_html

    db, blobs = app[DB], app[BLOBS]
    work = app[CONFIG].data_dir / "replay" / job["id"]
    job["state"] = "running"
    try:
        spec = parse_gate_spec(body.spec, "spec")
        cand = bundle_from_blobs(blobs, body.candidate_digest, work / "candidate")
        name = read_manifest(cand).name
        base = bundle_from_hub_store(app[REPO], blobs, name, body.baseline, work / "baseline")
        export_history(db, blobs, work / "history")
        report = run_replay(
            cand, base, HistoryDir(work / "history"), spec, work / "results", body.workers,
            body.since, body.cohort, who=body.who,
        )  # fmt: skip
        digest = report_digest(report)
        json_sha, _ = blobs.put(json.dumps(report, sort_keys=True).encode())
        html_sha, _ = blobs.put(render_html(report).encode())
        c = report["candidate"]
        decision = report["decision"]["decision"]
        db.add_report(digest, c["name"], c["version"], c["digest"], decision, json_sha, html_sha)
        job.update(report_digest=digest, decision=decision, summary=report["decision"]["summary"])
        if body.bless and decision == "pass":
            blessing = blessing_from_report(report, digest, body.who)
            db.add_blessing(blessing)
            db.audit("bless", blessing["bundle"], blessing["version"], body.who, None, blessing)
            job["blessed"] = True
        job["state"] = "done"
    except Exception as e:  # the job's error is its result; the hub goes on
        log.warning("replay job %s failed: %s", job["id"], e)
        job.update(state="failed", error=" ".join(str(e).split())[:500] or type(e).__name__)


@routes.post(f"{API}/admin/replay/jobs")
async def start_job(request: web.Request) -> web.Response:
    """Start a replay job on the hub; answers its id (poll ``GET /admin/replay/jobs/{id}``)."""
    body = parse_body(
        ReplayJobRequest, await read_capped(request, 256 * 1024, "replay job"), "replay job"
    )
    try:
        parse_gate_spec(body.spec, "spec")
    except ConfigError as e:
        raise BadRequest(str(e)) from e
    body = body.model_copy(update={"who": caller_name(request, body.who)})
    job: dict[str, Any] = {"id": uuid.uuid4().hex, "state": "queued", "created": time.time()}
    _JOBS.setdefault(request.app, {})[job["id"]] = job
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, _run_job, request.app, job, body)
    return web.json_response(job, status=202)


@routes.get(f"{API}/admin/replay/jobs/{{job_id}}")
async def job_status(request: web.Request) -> web.Response:
    """A replay job: ``state`` queued|running|done|failed, its report digest and decision."""
    job = _JOBS.get(request.app, {}).get(request.match_info["job_id"])
    if job is None:
        raise NotFound("no such replay job (jobs are kept until the hub restarts)")
    return web.json_response(job)
