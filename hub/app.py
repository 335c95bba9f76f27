"""The hub's HTTP API (``/api/v1``): one aiohttp app built by :func:`create_app`.

The hub is the meeting point of the loop. Devices enroll with the fleet secret and get their own
token; they ask which bundle they should run, fetch signed TUF metadata and targets, report a
heartbeat, and upload samples. The admin uploads bundle files as blobs, posts targets metadata
signed offline, rolls a bundle version out to devices or a cohort, annotates the ranked sample
queue, and starts training jobs whose artifact is the next bundle source.

Structure: this module is wiring only. ``create_app`` opens typed ``web.AppKey`` state in
``cleanup_ctx`` (storage, TUF repository, tokens; the timestamp re-signing timer; the job runner),
adds the two middlewares of :mod:`hub.middlewares` (errors outermost, then auth by path prefix)
and the route table of each area in :mod:`hub.api` (one module per area: devices, uploads, tuf,
fleet, shadow, samples, jobs). Every body is size-capped before it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.api import ROUTE_TABLES
from hub.api._common import (
    ADMIN_TOKEN,
    BLOBS,
    CONFIG,
    DB,
    ENROLL_TOKEN,
    JOBS,
    LEADER,
    MULTIPART_OVERHEAD,
    PUBLISH_LOCK,
    REPO,
    UNAUTH_SLOTS,
    UPLOAD_WRITERS,
    UPLOADS,
    hash_token,
)
from hub.config import HubConfig
from hub.jobs import JobRunner
from hub.leader import Leader
from hub.middlewares import auth_middleware, error_middleware
from hub.repository import TufRepository
from hub.rollouts.ticker import tick_all
from hub.storage import Blobs, BlobStore, HubDB, PartialUploads, S3BlobStore, open_database
from runtime._atomic import atomic_write_bytes

__all__ = [
    "ADMIN_TOKEN",
    "BLOBS",
    "CONFIG",
    "DB",
    "ENROLL_TOKEN",
    "JOBS",
    "REPO",
    "UPLOADS",
    "HubConfig",
    "create_app",
    "hash_token",
    "run",
]
log = logging.getLogger("leanloop.hub.app")


def _token_file(path: Path) -> str:
    """Read a secret file, creating it (mode 0600) with a fresh random token the first time."""
    if not path.exists():
        atomic_write_bytes(path, secrets.token_urlsafe(32).encode() + b"\n", mode=0o600)
        log.info("created %s", path)
    return path.read_text().strip()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    data = cfg.data_dir
    data.mkdir(parents=True, exist_ok=True)
    app[ADMIN_TOKEN] = _token_file(data / "admin.token")
    app[ENROLL_TOKEN] = _token_file(data / "enroll.token")
    blobs: Blobs
    if cfg.s3 is not None:
        s3 = S3BlobStore(cfg.s3, data / "blobs-tmp")
        await asyncio.to_thread(s3.check)
        blobs = s3
    else:
        blobs = BlobStore(data / "blobs")
    app[BLOBS] = blobs
    app[REPO] = TufRepository.open(
        data,
        app[BLOBS].size,
        cfg.keys_dir,
        timestamp_expiry=timedelta(seconds=cfg.timestamp_expiry_s),
        snapshot_expiry=timedelta(seconds=cfg.snapshot_expiry_s),
    )
    database = open_database(cfg.database_url, data, cfg.db_threads)
    app[DB] = await asyncio.to_thread(HubDB, database)  # migrations run here
    app[UPLOADS] = PartialUploads(data / "uploads")
    yield
    app[DB].close()


async def _leader_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LEADER] = Leader(app[CONFIG].database_url)
    await app[LEADER].start()
    yield
    await app[LEADER].stop()


async def _rollouts_ctx(app: web.Application) -> AsyncIterator[None]:
    async def tick_forever() -> None:
        while True:
            await asyncio.sleep(app[CONFIG].rollout_tick_s)
            if not app[LEADER].is_leader:
                continue
            try:
                await tick_all(app[DB])
            except Exception:  # keep stepping: a stuck rollout is worse than a noisy log
                log.exception("rollout tick failed")

    task = asyncio.create_task(tick_forever(), name="leanloop-rollouts")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _timestamp_ctx(app: web.Application) -> AsyncIterator[None]:
    async def refresh_forever() -> None:
        while True:
            try:
                if app[LEADER].is_leader and app[REPO].refresh_timestamp():
                    log.info("re-signed timestamp, now expiring %s", app[REPO].timestamp_expires)
            except Exception:  # keep trying: a stale timestamp is worse than a noisy log
                log.exception("could not re-sign timestamp")
            await asyncio.sleep(app[CONFIG].timestamp_check_interval_s)

    task = asyncio.create_task(refresh_forever(), name="leanloop-timestamp")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    runner = JobRunner(
        app[DB], app[BLOBS], cfg.data_dir / "jobs", cfg.trainer_command, cfg.job_timeout_s
    )
    app[JOBS] = runner
    await runner.start()
    yield
    await runner.stop()


def create_app(config: HubConfig) -> web.Application:
    """Build the hub app; storage and the TUF repository open when it starts."""
    cap = max(
        config.max_targets_bytes,
        config.max_meta_bytes * 2 + config.max_image_bytes + MULTIPART_OVERHEAD,
    )
    app = web.Application(client_max_size=cap, middlewares=[error_middleware, auth_middleware])
    app[CONFIG] = config
    app[PUBLISH_LOCK] = asyncio.Lock()
    app[UPLOAD_WRITERS] = {}
    app[UNAUTH_SLOTS] = asyncio.Semaphore(config.max_unauthenticated)
    app.cleanup_ctx.extend([_storage_ctx, _leader_ctx, _timestamp_ctx, _jobs_ctx, _rollouts_ctx])
    for table in ROUTE_TABLES:
        app.add_routes(table)
    return app


# How each connection is served: a refused request's unread body is drained for at most 2 s
# (aiohttp's default is 10 s), so a client that trickles one cannot keep its connection.
SERVER_ARGS: dict[str, Any] = {"lingering_time": 2.0}


def run(config: HubConfig) -> None:
    """Serve the hub until interrupted."""
    web.run_app(create_app(config), host=config.host, port=config.port, **SERVER_ARGS)
