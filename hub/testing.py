"""Test kit for code that talks to a hub: a live hub on loopback, bundle folders, sample metas.

Used by the hub's own tests and meant for the device side's integration tests too (a fake hub
is the real app, not a mock): :class:`LiveHub` serves ``create_app`` from a background thread
for synchronous clients (python-tuf's ``Updater``, :class:`hub.client.HubAdminClient`);
:class:`HubTestSession` wraps aiohttp's ``TestClient`` with the admin/device calls tests need;
:func:`make_bundle` writes a bundle folder with a valid ``manifest.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from hub.app import ADMIN_TOKEN, ENROLL_TOKEN, SERVER_ARGS, create_app, ssl_context
from hub.config import HubConfig
from hub.connections import HeadGuard, start_serving
from hub.metrics import METRICS
from hub.signing import TargetAddition, sign_targets
from runtime.bundle.manifest import MANIFEST_NAME

__all__ = ["API", "HubTestSession", "LiveHub", "make_bundle", "sample_form", "sample_meta"]

API = "/api/v1"


def make_bundle(root: Path, name: str = "digits", version: int = 1, **files: bytes) -> Path:
    """Write ``<root>/<name>-<version>/`` with ``files`` (default: a fake model) + manifest."""
    folder = root / f"{name}-{version}"
    files = files or {"model.onnx": b"fake onnx model " * 100, "pipeline.yaml": b"stages: []\n"}
    entries = {}
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = {
        "format": "leanloop.bundle/1",
        "name": name,
        "version": version,
        "created": "2025-01-01T00:00:00Z",
        "ontology": {"id": "digits", "version": 1, "classes": [str(i) for i in range(10)]},
        "models": {},
        "files": entries,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return folder


def sample_meta(
    sample_id: str, device_id: str, priority: float, bundle: str = "digits"
) -> dict[str, Any]:
    """The meta a device's uploader sends (``SampleRecord.to_meta`` shape)."""
    return {
        "id": sample_id,
        "device_id": device_id,
        "created": 1700000000.0,
        "frame_id": "f1",
        "bundle": bundle,
        "bundle_version": 1,
        "ontology_version": 1,
        "image_format": "jpeg",
        "prediction": {"stages": {}},
        "scores": {"margin": priority},
        "priority": priority,
    }


def sample_form(meta: dict[str, Any], image: bytes = b"\xff\xd8jpeg\xff\xd9") -> FormData:
    """A device sample upload body: ``meta`` JSON + ``image``."""
    form = FormData()
    form.add_field("meta", json.dumps(meta), content_type="application/json")
    form.add_field("image", image, filename="i.jpg", content_type="image/jpeg")
    return form


@dataclass
class HubTestSession:
    """A started hub app behind aiohttp's test client, with its tokens and a few calls."""

    client: TestClient[web.Request, web.Application]
    config: HubConfig
    keys_dir: Path
    enrolled: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> auth header

    @property
    def admin_token(self) -> str:
        return self.client.app[ADMIN_TOKEN]

    @property
    def enroll_token(self) -> str:
        return self.client.app[ENROLL_TOKEN]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def enroll(self, device_id: str, cohort: str | None = None) -> dict[str, str]:
        """Enroll a device (once per session: an enrolled id keeps its token); its auth header."""
        known = self.enrolled
        if device_id in known:
            return known[device_id]
        body: dict[str, Any] = {"device_id": device_id, "enroll_token": self.enroll_token}
        if cohort is not None:
            body["cohort"] = cohort
        resp = await self.client.post(f"{API}/enroll", json=body)
        assert resp.status == 200, await resp.text()
        known[device_id] = {"Authorization": f"Bearer {(await resp.json())['device_token']}"}
        return known[device_id]

    async def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        resp = await self.client.put(f"{API}/admin/blobs/{sha256}", data=data, headers=self.admin)
        assert resp.status == 200, await resp.text()
        return sha256

    async def current_targets(self) -> bytes | None:
        resp = await self.client.get(f"{API}/admin/tuf/targets", headers=self.admin)
        return await resp.read() if resp.status == 200 else None

    async def publish(self, bundle_dir: Path) -> int:
        """What `bundle publish` does, through the async test client."""
        manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
        prefix = f"{manifest['name']}/{manifest['version']}"
        additions: dict[str, TargetAddition] = {}
        for rel in [*manifest["files"], MANIFEST_NAME]:
            data = (bundle_dir / rel).read_bytes()
            additions[f"{prefix}/{rel}"] = (await self.put_blob(data), len(data), None)
        signed = sign_targets(await self.current_targets(), additions, self.keys_dir)
        resp = await self.client.post(f"{API}/admin/targets", data=signed, headers=self.admin)
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["version"])


class LiveHub:
    """The real app on a loopback port, served from a background thread (for sync clients)."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.app = create_app(config)
        self.guard: HeadGuard | None = None  # counts connections closed for a late head

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app, **SERVER_ARGS)
        try:
            self._loop.run_until_complete(runner.setup())
            server, self.guard = self._loop.run_until_complete(
                start_serving(
                    runner,
                    "127.0.0.1",
                    0,
                    self.config.header_timeout_s,
                    ssl_context(self.config),
                    on_close=self.app[METRICS].slow_heads.inc,
                )
            )
            self.port = server.sockets[0].getsockname()[1]
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> LiveHub:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert_file is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return self.app[ADMIN_TOKEN]

    @property
    def enroll_token(self) -> str:
        return self.app[ENROLL_TOKEN]
