"""The hub's HTTP API (``/api/v1``): one aiohttp app built by :func:`create_app`.

The hub is the meeting point of the loop. Devices enroll with the fleet secret and get their own
token; they ask which bundle they should run, fetch signed TUF metadata and targets, report a
heartbeat, and upload samples. The admin uploads bundle files as blobs, posts targets metadata
signed offline, rolls a bundle version out to devices or a cohort, annotates the ranked sample
queue, and starts training jobs whose artifact is the next bundle source.

Structure: this module is wiring only. ``create_app`` opens typed ``web.AppKey`` state in
``cleanup_ctx`` (storage — SQLite or PostgreSQL, a blob folder or bucket —, the TUF repository and
tokens, shared with other replicas through the database; the leader election; the timestamp
re-signing timer, the job runner and the rollout ticker, which act on the leader), adds the
metrics middleware (:mod:`hub.metrics`, outermost) and the two of :mod:`hub.middlewares` (errors,
then auth by path prefix and role), then :mod:`hub.fastpath`'s (read-your-writes around the
caches of the devices' hot routes) and the route table of each area in :mod:`hub.api` (one module
per area: devices, uploads, tuf, fleet, shadow, samples, jobs, rollouts, tokens, ops). Every body
is size-capped before it is read. :func:`run` serves HTTPS when the config names a certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from hub import web as web_page
from hub.api import ROUTE_TABLES, labelstudio
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
    SHARED,
    UNAUTH_SLOTS,
    UPLOAD_WRITERS,
    UPLOADS,
    hash_token,
)
from hub.config import HubConfig
from hub.connections import request_done_middleware, serve_forever
from hub.fastpath import FASTPATH, FastPath, fastpath_middleware
from hub.jobs import JobRunner
from hub.leader import Leader
from hub.metrics import METRICS, HubMetrics, loop_lag_ctx, metrics_middleware
from hub.middlewares import auth_middleware, error_middleware
from hub.replicas import START_LOCK_KEY, SharedFiles, cluster_lock
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


def _open_shared_state(app: web.Application) -> None:
    """Tokens and the TUF repository: from the data dir, created on first start. With replicas,
    pulled from the database first and pushed back after, under a cluster-wide lock (see
    :mod:`hub.replicas`). Blocking (runs in a thread)."""
    cfg = app[CONFIG]
    data = cfg.data_dir
    shared = SharedFiles(app[DB], data) if cfg.database_url is not None else None
    with cluster_lock(cfg.database_url, START_LOCK_KEY):
        if shared is not None:
            shared.pull()
        app[ADMIN_TOKEN] = _token_file(data / "admin.token")
        app[ENROLL_TOKEN] = _token_file(data / "enroll.token")
        app[REPO] = TufRepository.open(
            data,
            app[BLOBS].size,
            cfg.keys_dir,
            timestamp_expiry=timedelta(seconds=cfg.timestamp_expiry_s),
            snapshot_expiry=timedelta(seconds=cfg.snapshot_expiry_s),
        )
        if shared is not None:
            shared.push()
            app[SHARED] = shared


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    data = cfg.data_dir
    data.mkdir(parents=True, exist_ok=True)
    blobs: Blobs
    if cfg.s3 is not None:
        s3 = S3BlobStore(cfg.s3, data / "blobs-tmp")
        await asyncio.to_thread(s3.check)
        blobs = s3
    else:
        blobs = BlobStore(data / "blobs")
    app[BLOBS] = blobs
    database = open_database(cfg.database_url, data, cfg.db_threads)
    app[DB] = await asyncio.to_thread(HubDB, database)  # migrations run here
    await asyncio.to_thread(_open_shared_state, app)
    app[UPLOADS] = PartialUploads(data / "uploads")
    if cfg.database_url is not None:  # partial uploads live in the database (hub.api.uploads)
        await app[DB].call(app[DB].drop_stale_upload_parts, 7 * 86400)
    app[FASTPATH] = FastPath(app[DB], cfg.cache_check_s, cfg.heartbeat_flush_s)
    await app[FASTPATH].start()
    yield
    await app[FASTPATH].stop()
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
                await tick_all(app[DB], fast=app[FASTPATH])
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
                    if SHARED in app:
                        await asyncio.to_thread(app[SHARED].push)
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
        app[DB], app[BLOBS], cfg.data_dir / "jobs", cfg.trainer_command, cfg.job_timeout_s,
        concurrency=cfg.job_concurrency,
    )  # fmt: skip
    app[JOBS] = runner
    await runner.start(recover=app[LEADER].is_leader)
    yield
    await runner.stop()


def create_app(config: HubConfig) -> web.Application:
    """Build the hub app; storage and the TUF repository open when it starts."""
    cap = max(
        config.max_targets_bytes,
        config.max_meta_bytes * 2 + config.max_image_bytes + MULTIPART_OVERHEAD,
    )
    app = web.Application(
        client_max_size=cap,
        middlewares=[
            request_done_middleware,  # hub.connections: heads of later requests get a deadline
            metrics_middleware,
            error_middleware,
            auth_middleware,
            fastpath_middleware,  # hub.fastpath: read-your-writes around the device caches
        ],
    )
    app[METRICS] = HubMetrics()
    app[CONFIG] = config
    app[PUBLISH_LOCK] = asyncio.Lock()
    app[UPLOAD_WRITERS] = {}
    app[UNAUTH_SLOTS] = asyncio.Semaphore(config.max_unauthenticated)
    app.cleanup_ctx.extend(
        [loop_lag_ctx, _storage_ctx, _leader_ctx, _timestamp_ctx, _jobs_ctx, _rollouts_ctx]
    )
    for table in (*ROUTE_TABLES, *web_page.ROUTE_TABLES):
        app.add_routes(table)
    web_page.add_static(app)
    labelstudio.setup(app)
    return app


# How each connection is served: a refused request's unread body is drained for at most 2 s
# (aiohttp's default is 10 s), so a client that trickles one cannot keep its connection; an
# idle keep-alive connection is closed after 75 s (web.run_app's default). Request heads have
# their own deadline (config header_timeout_s, hub.connections).
SERVER_ARGS: dict[str, Any] = {"lingering_time": 2.0, "keepalive_timeout": 75.0}


def ssl_context(config: HubConfig) -> ssl.SSLContext | None:
    """The server TLS context of ``tls_cert_file``/``tls_key_file`` (None: plain HTTP)."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return ctx


def run(config: HubConfig) -> None:
    """Serve the hub until SIGINT/SIGTERM (HTTPS when the config names a certificate)."""
    app = create_app(config)
    asyncio.run(
        serve_forever(
            app,
            config.host,
            config.port,
            config.header_timeout_s,
            ssl_context(config),
            on_close=app[METRICS].slow_heads.inc,
            access_log=None,  # hub.metrics logs each request at debug level
            **SERVER_ARGS,
        )
    )
