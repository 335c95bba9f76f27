"""Admin ontology routes: versions with explicit changes, and the weakness report.

- ``POST /admin/ontologies`` ``{"id", "classes", "version"?}``: start an ontology (409 if known);
- ``GET /admin/ontologies/{id}``: every version, with its changes;
- ``POST /admin/ontologies/{id}/changes`` ``{"changes": [...], "base_version"?}``: the next
  version; every stored sample under the ontology is remapped in the same transaction, and a
  split without a rule sends the samples it touches back to the queue as ``needs_review``;
- ``GET /admin/ontologies/{id}/weakness[?top=N]``: per class, predictions vs annotations vs
  corrections across the fleet, and the most-confused pairs.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import Field

from hub.api._common import API, CONFIG, DB, NAME_PATTERN, Body, parse_body, read_capped
from hub.errors import BadRequest
from hub.ontology import weakness_report

routes = web.RouteTableDef()


class CreateOntology(Body):
    id: str = Field(pattern=NAME_PATTERN)
    classes: list[str] = Field(min_length=1, max_length=10_000)
    version: int = Field(default=1, ge=1)


class ChangeOntology(Body):
    changes: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    base_version: int | None = Field(default=None, ge=1)


@routes.post(f"{API}/admin/ontologies")
async def create_route(request: web.Request) -> web.Response:
    raw = await read_capped(request, request.app[CONFIG].max_meta_bytes, "ontology")
    body = parse_body(CreateOntology, raw, "ontology")
    db = request.app[DB]
    onto = await db.call(db.create_ontology, body.id, body.classes, body.version)
    return web.json_response(onto.to_dict())


@routes.get(f"{API}/admin/ontologies/{{onto_id}}")
async def show_route(request: web.Request) -> web.Response:
    db = request.app[DB]
    onto_id = request.match_info["onto_id"]
    await db.call(db.ontology, onto_id)  # NotFound
    return web.json_response([v.to_dict() for v in await db.call(db.ontology_versions, onto_id)])


@routes.post(f"{API}/admin/ontologies/{{onto_id}}/changes")
async def change_route(request: web.Request) -> web.Response:
    raw = await read_capped(request, request.app[CONFIG].max_meta_bytes, "changes")
    body = parse_body(ChangeOntology, raw, "changes")
    db = request.app[DB]
    result = await db.call(
        db.change_ontology, request.match_info["onto_id"], body.changes, body.base_version
    )
    return web.json_response(result.to_dict())


@routes.get(f"{API}/admin/ontologies/{{onto_id}}/weakness")
async def weakness_route(request: web.Request) -> web.Response:
    db = request.app[DB]
    onto_id = request.match_info["onto_id"]
    try:
        top = int(request.query.get("top", "10"))
    except ValueError:
        raise BadRequest("top must be an integer") from None
    if not 1 <= top <= 1000:
        raise BadRequest("top must be between 1 and 1000")
    onto = await db.call(db.ontology, onto_id)
    rows = await db.call(db.ontology_samples, onto_id)
    samples = [
        (json.loads(r["meta_json"]), json.loads(r["annotation_json"]))
        if r["annotation_json"]
        else (json.loads(r["meta_json"]), None)
        for r in rows
    ]
    ids = {r["id"] for r in rows}
    feedback = [
        (predicted, kind, label) for sample_id, predicted, kind, label in db.ontology_feedback(ids)
    ]
    report = weakness_report(onto.classes, samples, feedback, top)
    return web.json_response({"id": onto_id, "version": onto.version, **report})
