"""Admin job routes: start a training job, its status and its artifact."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    DB,
    JOBS,
    NAME_PATTERN,
    Body,
    parse_body,
    read_capped,
)
from hub.errors import (
    Conflict,
    NotFound,
)
from hub.jobs import log_tail

log = logging.getLogger("leanloop.hub.api.jobs")

routes = web.RouteTableDef()


class TrainRequest(Body):
    """``POST /admin/jobs/train``."""

    bundle: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1, description="the bundle version the job's output will become")
    init_from: int | None = Field(default=None, ge=1, description="an earlier (done) job id")
    params: dict[str, Any] = Field(default_factory=dict)


# -- admin: jobs --------------------------------------------------------------------------------


def _job_id(request: web.Request) -> int:
    try:
        return int(request.match_info["job"])
    except ValueError:
        raise NotFound(f"no job {request.match_info['job'][:40]!r}") from None


@routes.post(f"{API}/admin/jobs/train")
async def start_train(request: web.Request) -> web.Response:
    """Queue a training job over the bundle's annotated samples."""
    body = parse_body(TrainRequest, await read_capped(request, 64 * 1024, "job"), "job")
    if body.init_from is not None:
        prev = await request.app[DB].call(request.app[DB].job, body.init_from)
        if prev.state != "done":
            raise Conflict(f"job {prev.id} is {prev.state}; init_from needs a done job")
    job_id = await request.app[JOBS].submit(body.model_dump())
    return web.json_response({"job": job_id})


@routes.get(f"{API}/admin/jobs/{{job}}")
async def job_status(request: web.Request) -> web.Response:
    """A job's state, error and the tail of its log."""
    job = await request.app[DB].call(request.app[DB].job, _job_id(request))
    body: dict[str, Any] = {
        "job": job.id,
        "state": job.state,
        "params": job.params,
        "log_tail": log_tail(job.log_path),
    }
    if job.error:
        body["error"] = job.error
    return web.json_response(body)


@routes.get(f"{API}/admin/jobs/{{job}}/artifact")
async def job_artifact(request: web.Request) -> web.FileResponse:
    """The tar.gz of the bundle source a done job wrote."""
    job = await request.app[DB].call(request.app[DB].job, _job_id(request))
    if job.state != "done" or not job.artifact_path:
        raise Conflict(f"job {job.id} is {job.state}; the artifact exists once it is done")
    return web.FileResponse(job.artifact_path, headers={"Content-Type": "application/gzip"})
