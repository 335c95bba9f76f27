"""Admin dataset routes: import an archive as a new version, list, export in a format.

``POST /admin/datasets/{name}?format=F`` takes a tar(.gz) of a dataset folder (capped by
``max_dataset_bytes``) and answers the new version, or **400 with every problem**:
``{"error": "<one line>", "problems": [{"where": …, "what": …}, …]}`` (nothing stored).
``GET /admin/datasets[/{name}]`` lists versions; ``GET /admin/datasets/{name}/export?format=F
[&version=N]`` answers a tar.gz of that version written in format F.
"""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import web

from hub.api._common import API, BLOBS, CONFIG, DB, NAME_RE, read_capped
from hub.datasets import DatasetError, export_dataset, read_archive
from hub.errors import BadRequest
from trainer.datasets import FORMATS

routes = web.RouteTableDef()

_MAX_PROBLEMS = 10_000


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise BadRequest(f"dataset name {name[:80]!r} must match [A-Za-z0-9][A-Za-z0-9._-]*")
    return name


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return fmt


def _version(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest("version must be an integer") from None


def _problems(e: DatasetError) -> web.Response:
    return web.json_response(
        {"error": str(e), "problems": [p.to_dict() for p in e.problems[:_MAX_PROBLEMS]]},
        status=400,
    )


@routes.post(f"{API}/admin/datasets/{{name}}")
async def import_route(request: web.Request) -> web.Response:
    """Import a dataset archive as the next version of ``name``."""
    name, fmt = _name(request), _format(request)
    cfg = request.app[CONFIG]
    data = await read_capped(request, cfg.max_dataset_bytes, "dataset archive")
    work = partial(
        read_archive, request.app[BLOBS], cfg.data_dir / "scratch", fmt, data,
        cfg.max_dataset_bytes,
    )  # fmt: skip
    try:
        ds, rows = await asyncio.get_running_loop().run_in_executor(None, work)
    except DatasetError as e:
        return _problems(e)
    db = request.app[DB]
    onto = (ds.ontology_id, ds.ontology_version)
    number = await db.call(
        db.add_dataset_version, name, ds.task, ds.classes, onto, ds.counts(), fmt, rows
    )
    version = await db.call(db.dataset_version, name, number)
    return web.json_response(version.to_dict())


@routes.get(f"{API}/admin/datasets")
async def list_route(request: web.Request) -> web.Response:
    db = request.app[DB]
    return web.json_response([v.to_dict() for v in await db.call(db.dataset_versions)])


@routes.get(f"{API}/admin/datasets/{{name}}")
async def show_route(request: web.Request) -> web.Response:
    db = request.app[DB]
    v = await db.call(db.dataset_version, _name(request), _version(request))
    return web.json_response(v.to_dict())


@routes.get(f"{API}/admin/datasets/{{name}}/export")
async def export_route(request: web.Request) -> web.Response:
    name, fmt, version = _name(request), _format(request), _version(request)
    cfg = request.app[CONFIG]
    db = request.app[DB]
    stored = await db.call(db.dataset_version, name, version)
    rows = await db.call(db.dataset_items, stored.name, stored.version)
    work = partial(export_dataset, request.app[BLOBS], cfg.data_dir / "scratch", stored, rows, fmt)
    try:
        data = await asyncio.get_running_loop().run_in_executor(None, work)
    except DatasetError as e:
        return _problems(e)
    return web.Response(body=data, content_type="application/gzip")
