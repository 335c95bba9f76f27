"""Tokens: named tokens with a role for people and scripts, and device token rotation and
revocation.

- ``POST /admin/tokens`` ``{"name", "role"}`` → ``{"token"}`` (shown once; only its hash is
  kept); ``GET /admin/tokens``; ``DELETE /admin/tokens/{name}`` revokes. Admin only.
- ``POST /admin/devices/{id}/token`` → a new device token (the old one stops at once: for
  re-provisioning a device); ``DELETE /admin/devices/{id}/token`` revokes it (the device is
  refused from its next request until it is enrolled again).
- ``POST /device/token`` → the calling device's new token; its current one stops at once.
"""

from __future__ import annotations

import logging
import secrets
from typing import Literal

from aiohttp import web
from pydantic import Field

from hub.api._common import (
    API,
    DB,
    NAME_PATTERN,
    Body,
    device_id_of,
    hash_token,
    parse_body,
    read_capped,
)

log = logging.getLogger("leanloop.hub.tokens")

routes = web.RouteTableDef()


class TokenRequest(Body):
    name: str = Field(pattern=NAME_PATTERN, description="who or what holds it")
    role: Literal["admin", "annotator", "viewer"]


@routes.post(f"{API}/admin/tokens")
async def create_token(request: web.Request) -> web.Response:
    body = parse_body(TokenRequest, await read_capped(request, 4096, "token request"), "token")
    token = secrets.token_urlsafe(32)
    db = request.app[DB]
    await db.call(db.add_api_token, body.name, body.role, hash_token(token))
    log.info("token %r (%s) created", body.name, body.role)
    return web.json_response({"name": body.name, "role": body.role, "token": token}, status=201)


@routes.get(f"{API}/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    db = request.app[DB]
    return web.json_response(
        [
            {"name": t.name, "role": t.role, "created": t.created, "revoked": t.revoked}
            for t in await db.call(db.api_tokens)
        ]
    )


@routes.delete(f"{API}/admin/tokens/{{name}}")
async def revoke_token(request: web.Request) -> web.Response:
    db = request.app[DB]
    await db.call(db.revoke_api_token, request.match_info["name"])
    log.info("token %r revoked", request.match_info["name"])
    return web.json_response({})


@routes.post(f"{API}/admin/devices/{{device_id}}/token")
async def reissue_device_token(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(32)
    db = request.app[DB]
    await db.call(db.set_device_token, request.match_info["device_id"], hash_token(token))
    log.info("device %s: new token issued by the admin", request.match_info["device_id"])
    return web.json_response({"device_token": token})


@routes.delete(f"{API}/admin/devices/{{device_id}}/token")
async def revoke_device_token(request: web.Request) -> web.Response:
    db = request.app[DB]
    await db.call(db.set_device_token, request.match_info["device_id"], None)
    log.info("device %s: token revoked", request.match_info["device_id"])
    return web.json_response({})


@routes.post(f"{API}/device/token")
async def rotate_own_token(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(32)
    db = request.app[DB]
    await db.call(db.set_device_token, device_id_of(request), hash_token(token))
    return web.json_response({"device_token": token})
