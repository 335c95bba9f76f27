"""TUF routes: signed metadata and target blobs for devices; blobs, targets and root for admins."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from hub.api._common import (
    API,
    BLOBS,
    CHUNK,
    CONFIG,
    DB,
    PUBLISH_LOCK,
    REPO,
    SHARED,
    caller_name,
    read_capped,
    read_parts,
)
from hub.errors import (
    BadRequest,
    NotFound,
    TooLarge,
)
from hub.replay.blessing import check_release
from hub.replicas import PUBLISH_LOCK_KEY, cluster_lock_async
from hub.storage import check_sha256
from runtime._limits import MAX_MANIFEST_BYTES
from runtime.bundle.loader import parse_manifest
from runtime.bundle.manifest import MANIFEST_NAME, Manifest
from runtime.errors import BundleError

log = logging.getLogger("leanloop.hub.tuf")

_MANIFEST_TARGET_RE = re.compile(r"^([a-z0-9][a-z0-9._-]{0,63})/([1-9][0-9]{0,9})/manifest\.json$")

routes = web.RouteTableDef()
_STREAM = 1024 * 1024  # bytes read from the blob store per step (one S3 range request)

# -- TUF ----------------------------------------------------------------------------------------


async def fresh_repo(app: web.Application) -> None:
    """With hub replicas: take in what another replica published or re-signed (see
    :mod:`hub.replicas`); a no-op on one hub."""
    shared = app.get(SHARED)
    if shared is not None and await asyncio.to_thread(shared.stale):
        await asyncio.to_thread(shared.pull)
        await asyncio.to_thread(app[REPO].reload)


async def shared_changed(app: web.Application) -> None:
    """With hub replicas: store what this replica changed for the others."""
    shared = app.get(SHARED)
    if shared is not None:
        await asyncio.to_thread(shared.push)


@contextlib.asynccontextmanager
async def publish_lock(app: web.Application) -> AsyncIterator[None]:
    """One publish at a time in this process and, with replicas, across them; fresh state."""
    async with app[PUBLISH_LOCK], cluster_lock_async(app[CONFIG].database_url, PUBLISH_LOCK_KEY):
        await fresh_repo(app)
        yield
        await shared_changed(app)


@routes.get(f"{API}/tuf/metadata/{{file}}")
async def tuf_metadata(request: web.Request) -> web.Response:
    """Signed metadata: ``timestamp.json`` or ``<version>.<role>.json``."""
    await fresh_repo(request.app)
    data = request.app[REPO].metadata_bytes(request.match_info["file"])
    return web.Response(body=data, content_type="application/json")


_RANGE_RE = re.compile(r"^bytes=(\d{1,18})-(\d{0,18})$")  # longer numbers: ignored (200)


def parse_range(
    range_header: str, if_range: str | None, size: int, etag: str
) -> tuple[int, int] | None:
    """The one byte range ``[start, end)`` to send of a ``size``-byte blob, or None for all of it.

    ``Range: bytes=a-[b]`` is honoured only if ``If-Range`` is absent or is the blob's own
    strong ETag (a device resuming a partial of some other content gets the whole blob, 200).
    Any other range form (suffix, several ranges, numbers of over 18 digits) is ignored: the
    whole blob is sent. Raises ValueError when the range starts at or past the end (416).
    """
    m = _RANGE_RE.match(range_header.strip())
    if m is None or (if_range is not None and if_range.strip() != etag):
        return None
    start = int(m[1])
    end = min(size, int(m[2]) + 1) if m[2] else size
    if start >= size or end <= start:
        raise ValueError(f"range {range_header[:40]!r} is outside the {size} bytes")
    return start, end


def _blob_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    try:
        return parse_range(
            request.headers.get("Range", ""), request.headers.get("If-Range"), size, etag
        )
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{size}"}
        ) from None


@routes.get(f"{API}/tuf/targets/{{path:.+}}")
async def tuf_target(request: web.Request) -> web.StreamResponse:
    """A target file by ``<dir>/<sha256>.<name>``, only if that hash is a current target.

    Resumable: the blob's sha256 is its strong, stable ETag, and ``Range`` + ``If-Range`` get a
    206 with the rest of it (aiohttp's FileResponse keys its ETag on mtime and reads If-Range
    only as a date, so blobs are streamed here instead).
    """
    await fresh_repo(request.app)
    sha256, _ = request.app[REPO].target_blob(request.match_info["path"])
    blobs = request.app[BLOBS]
    size = await asyncio.to_thread(blobs.size, sha256)
    if size is None:
        raise NotFound(f"target blob {sha256} is missing from the blob store")
    etag = f'"{sha256}"'
    rng = _blob_range(request, size, etag)
    start, end = rng or (0, size)
    resp = web.StreamResponse(
        status=206 if rng else 200,
        headers={"Content-Type": "application/octet-stream", "ETag": etag},
    )
    resp.headers["Accept-Ranges"] = "bytes"
    if rng:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    resp.content_length = end - start
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    pos = start
    try:
        while pos < end:
            chunk = await asyncio.to_thread(blobs.read_range, sha256, pos, min(end, pos + _STREAM))
            if not chunk:
                break
            await resp.write(chunk)
            pos += len(chunk)
        await resp.write_eof()
    except ConnectionError:
        pass  # the device hung up (a dropped link); it resumes with a Range request
    return resp


@routes.get(f"{API}/admin/tuf/targets")
async def current_targets(request: web.Request) -> web.Response:
    """The current signed targets metadata, for the admin to extend and re-sign."""
    await fresh_repo(request.app)
    data = request.app[REPO].current_targets_bytes()
    if data is None:
        raise NotFound("no targets metadata yet; the first publish signs version 1")
    return web.Response(body=data, content_type="application/json")


@routes.put(f"{API}/admin/blobs/{{sha256}}")
async def put_blob(request: web.Request) -> web.Response:
    """Store raw bytes under their sha256; the hash in the URL must match the content."""
    sha256 = check_sha256(request.match_info["sha256"])
    cap = request.app[CONFIG].max_blob_bytes
    if request.content_length is not None and request.content_length > cap:
        raise TooLarge(f"blob is {request.content_length} bytes; the limit is {cap}")
    writer = request.app[BLOBS].writer()
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            writer.write(chunk)
            if writer.size > cap:
                raise TooLarge(f"blob is over the limit of {cap} bytes")
    except BaseException:
        writer.abort()
        raise
    loop = asyncio.get_running_loop()
    _, stored = await loop.run_in_executor(None, writer.commit, sha256)
    return web.json_response({"stored": stored})


def _new_bundles(
    app: web.Application, targets: dict[str, tuple[str, int]]
) -> list[tuple[Manifest, dict[str, Any]]]:
    """The manifests of bundle versions that the new targets add, each checked.

    A manifest is parsed only after its blob hashed to the signed target hash, and every file
    it lists must be a target of the same bundle version with the same hash.
    """
    known = app[REPO].target_paths()
    found = []
    for path, (sha256, _length) in targets.items():
        m = _MANIFEST_TARGET_RE.match(path)
        if m is None or known.get(path) == (sha256, _length):
            continue
        if _length > MAX_MANIFEST_BYTES:  # checked before reading: parsing cost grows with size
            raise BadRequest(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
        data = app[BLOBS].read(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BadRequest(f"blob of {path} does not hash to its signed sha256")
        try:
            manifest = parse_manifest(data, path)
        except BundleError as e:
            raise BadRequest(f"{path} is not a valid manifest: {e}") from e
        if (manifest.name, str(manifest.version)) != (m.group(1), m.group(2)):
            raise BadRequest(f"{path} describes {manifest.name} version {manifest.version}")
        for rel, entry in manifest.files.items():
            signed = targets.get(manifest.target_name(rel))
            if signed is None or signed[0] != entry.sha256:
                raise BadRequest(f"{path} lists {rel}, which is not a target with the same hash")
        found.append((manifest, json.loads(data)))
    return found


@routes.post(f"{API}/admin/targets")
async def post_targets(request: web.Request) -> web.Response:
    """Accept new targets metadata signed offline; record any new bundle versions."""
    app = request.app
    data = await read_capped(request, app[CONFIG].max_targets_bytes, "targets metadata")
    async with publish_lock(app):
        # Blob lookups (S3 round trips with an object store) run off the event loop.
        md = await asyncio.to_thread(app[REPO].verify_targets, data)
        targets = {p: (t.hashes["sha256"], t.length) for p, t in md.signed.targets.items()}
        bundles = await asyncio.to_thread(_new_bundles, app, targets)
        await app[DB].call(
            check_release,
            app[DB],
            app[CONFIG].require_blessing,
            [(m.name, m.version, targets[m.target_name(MANIFEST_NAME)][0]) for m, _ in bundles],
            "publish",
            request.query.get("force_reason"),
            caller_name(request, request.query.get("who")),
        )
        version = await asyncio.to_thread(app[REPO].accept_targets, data)
        for manifest, raw in bundles:
            await app[DB].call(app[DB].add_bundle, manifest.name, manifest.version, raw)
            log.info("bundle %s version %s published", manifest.name, manifest.version)
    return web.json_response({"version": version})


_ROOT_PARTS = ("root", "targets", "snapshot.key", "timestamp.key")


@routes.post(f"{API}/admin/tuf/root")
async def post_root(request: web.Request) -> web.Response:
    """Accept root version N+1 (root rotation / key revocation), multipart: ``root``, and
    optionally ``targets`` re-signed for it and new online keys ``snapshot.key``,
    ``timestamp.key`` (PEM). See :meth:`hub.repository.TufRepository.accept_root`."""
    app = request.app
    cap = app[CONFIG].max_targets_bytes
    caps = {
        "root": 512 * 1024,
        "targets": cap,
        "snapshot.key": 16 * 1024,
        "timestamp.key": 16 * 1024,
    }
    parts = await read_parts(request, caps, {"root"})
    keys = {n.removesuffix(".key"): parts[n] for n in _ROOT_PARTS[2:] if n in parts}
    async with publish_lock(app):
        version = app[REPO].accept_root(parts["root"], parts.get("targets"), keys or None)
    log.info("serving root version %s", version)
    return web.json_response({"version": version})
