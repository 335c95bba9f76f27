"""Admin job routes: start a training job, its status and its artifact."""

from __future__ import annotations

import logging
import re
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
    BadRequest,
    Conflict,
    NotFound,
)
from hub.jobs import job_progress, log_tail

log = logging.getLogger("leanloop.hub.api.jobs")

routes = web.RouteTableDef()


class TrainRequest(Body):
    """``POST /admin/jobs/train``."""

    bundle: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1, description="the bundle version the job's output will become")
    init_from: int | None = Field(default=None, ge=1, description="an earlier (done) job id")
    params: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = Field(
        default=None,
        description="a training spec (leanloop.train/1); its dataset is the bundle's "
        "annotated samples, so spec.dataset may be left out",
    )
    classes: list[str] | None = Field(
        default=None, max_length=10_000, description="spec jobs: class order (default: labels seen)"
    )
    datasets: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="spec jobs: train on these hub datasets ('name' or 'name:version') instead "
        "of the annotated samples; versions of one ontology are aligned (docs/datasets.md)",
    )


# -- admin: jobs --------------------------------------------------------------------------------


def _job_id(request: web.Request) -> int:
    try:
        return int(request.match_info["job"])
    except ValueError:
        raise NotFound(f"no job {request.match_info['job'][:40]!r}") from None


def _checked_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec as the job will run it (validated now, so a typo is a 400, not a failed job)."""
    from trainer.spec import SpecError, parse_spec

    raw = {"dataset": {"path": "."}, **raw}
    try:
        return parse_spec(raw, "spec").model_dump(mode="json")
    except SpecError as e:
        raise BadRequest(str(e)) from e


@routes.post(f"{API}/admin/jobs/train")
async def start_train(request: web.Request) -> web.Response:
    """Queue a training job over the bundle's annotated samples."""
    body = parse_body(TrainRequest, await read_capped(request, 256 * 1024, "job"), "job")
    if body.spec is not None:
        body = body.model_copy(update={"spec": _checked_spec(body.spec)})
    elif body.datasets is not None:
        raise BadRequest("datasets need a spec (the training spec the job runs)")
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
    progress = job_progress(request.app[JOBS].job_dir(job.id))
    if progress is not None:
        body["progress"] = progress
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


class AutoRequest(Body):
    """``PUT /admin/jobs/auto/{bundle}``: train after every ``every`` new annotations."""

    every: int = Field(ge=1, le=1_000_000)
    version: int = Field(ge=1, description="bundle version the first auto job produces")
    spec: dict[str, Any]
    classes: list[str] | None = Field(default=None, max_length=10_000)


def _bundle(request: web.Request) -> str:
    name = request.match_info["bundle"]
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadRequest("bundle: not a valid name")
    return name


@routes.put(f"{API}/admin/jobs/auto/{{bundle}}")
async def set_auto(request: web.Request) -> web.Response:
    """Turn the small inner loop on (or change it) for a bundle (off by default)."""
    from hub.autotrain import AutoTrainRule

    body = parse_body(AutoRequest, await read_capped(request, 256 * 1024, "auto"), "auto")
    rule = AutoTrainRule(
        every=body.every, version=body.version, spec=_checked_spec(body.spec), classes=body.classes
    )
    saved = await request.app[JOBS].auto.set(_bundle(request), rule)
    return web.json_response(saved.model_dump(mode="json"))


@routes.get(f"{API}/admin/jobs/auto")
async def list_auto(request: web.Request) -> web.Response:
    """Every bundle's auto-training rule."""
    rules = request.app[JOBS].auto.rules()
    return web.json_response({k: r.model_dump(mode="json") for k, r in rules.items()})


@routes.delete(f"{API}/admin/jobs/auto/{{bundle}}")
async def clear_auto(request: web.Request) -> web.Response:
    """Turn auto-training off for a bundle."""
    if not request.app[JOBS].auto.clear(_bundle(request)):
        raise NotFound(f"auto-training is off for {request.match_info['bundle'][:40]!r}")
    return web.json_response({})
