"""Operating the hub: /healthz, /metrics, request logs, roles, token rotation and revocation,
idempotent ingest (on both storage backends), TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import urllib3

from hub.api._common import DB
from hub.config import HubConfig, load_hub_config
from hub.testing import API, HubTestSession, LiveHub, sample_form, sample_meta


@pytest.mark.asyncio
async def test_healthz_and_metrics_when_asked_without_a_token(hub: HubTestSession) -> None:
    await hub.enroll("cam-1", cohort="lab")
    resp = await hub.client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "database": True, "blobs": True, "leader": True}
    await hub.client.get(f"{API}/admin/devices")  # 401, counted too
    resp = await hub.client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert 'leanloop_hub_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="/api/v1/admin/devices",status="401"' in text
    assert 'leanloop_hub_devices{cohort="lab"} 1.0' in text
    assert "leanloop_hub_request_seconds_bucket" in text
    assert "leanloop_hub_leader 1.0" in text


@pytest.mark.asyncio
async def test_a_stalled_event_loop_shows_in_the_lag_histogram(hub: HubTestSession) -> None:
    await asyncio.sleep(0.15)  # the probe's timer is pending
    time.sleep(0.4)  # a blocking call on the hub's loop: no request could be served meanwhile
    await asyncio.sleep(0.25)
    text = await (await hub.client.get("/metrics")).text()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("leanloop_hub_event_loop_lag_seconds")
    }
    within = values['leanloop_hub_event_loop_lag_seconds_bucket{le="0.25"}']
    assert values["leanloop_hub_event_loop_lag_seconds_count"] > within >= 1


@pytest.mark.asyncio
async def test_request_log_when_debug_names_method_path_status(
    hub: HubTestSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="leanloop.hub.requests"):
        await hub.client.get("/healthz")
    assert any(
        r.name == "leanloop.hub.requests" and "GET /healthz 200" in r.getMessage()
        for r in caplog.records
    )


async def _token(hub: HubTestSession, name: str, role: str) -> dict[str, str]:
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": name, "role": role}, headers=hub.admin
    )
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


# (role, method, path, expected status)
ROLE_CASES = [
    ("viewer", "GET", "/admin/devices", 200),
    ("viewer", "GET", "/admin/rollouts", 200),
    ("viewer", "GET", "/admin/samples", 200),
    ("viewer", "POST", "/admin/rollouts", 403),
    ("viewer", "POST", "/admin/samples/s1/annotation", 403),
    ("viewer", "GET", "/admin/tokens", 403),
    ("annotator", "GET", "/admin/samples", 200),
    ("annotator", "POST", "/admin/samples/nope/annotation", 404),  # allowed, sample unknown
    ("annotator", "GET", "/admin/feedback", 200),
    ("annotator", "GET", "/admin/devices", 403),
    ("annotator", "POST", "/admin/rollouts", 403),
    ("annotator", "POST", "/admin/tokens", 403),
    ("admin", "GET", "/admin/tokens", 200),
    ("admin", "GET", "/admin/devices", 200),
]


@pytest.mark.asyncio
async def test_roles_when_tokens_are_named_allow_only_their_routes(hub: HubTestSession) -> None:
    tokens = {
        role: await _token(hub, f"{role}-1", role) for role in ("admin", "annotator", "viewer")
    }
    body = {"boxes": [], "annotator": "a"}
    for role, method, path, status in ROLE_CASES:
        kw: dict[str, Any] = {"json": body} if method == "POST" else {}
        resp = await hub.client.request(method, f"{API}{path}", headers=tokens[role], **kw)
        assert resp.status == status, (role, method, path, await resp.text())
    device = await hub.enroll("cam-1")
    assert (await hub.client.get(f"{API}/admin/devices", headers=device)).status == 403
    assert (await hub.client.get(f"{API}/device/desired", headers=tokens["admin"])).status == 403


@pytest.mark.asyncio
async def test_named_token_when_revoked_or_duplicate_is_refused(hub: HubTestSession) -> None:
    viewer = await _token(hub, "dashboard", "viewer")
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": "dashboard", "role": "admin"}, headers=hub.admin
    )
    assert resp.status == 409
    resp = await hub.client.post(
        f"{API}/admin/tokens", json={"name": "x", "role": "root"}, headers=hub.admin
    )
    assert resp.status == 400
    listed = await (await hub.client.get(f"{API}/admin/tokens", headers=hub.admin)).json()
    assert [(t["name"], t["role"], t["revoked"]) for t in listed] == [("dashboard", "viewer", None)]
    assert "token" not in listed[0]
    resp = await hub.client.delete(f"{API}/admin/tokens/dashboard", headers=hub.admin)
    assert resp.status == 200
    assert (await hub.client.get(f"{API}/admin/devices", headers=viewer)).status == 401
    assert (
        await hub.client.delete(f"{API}/admin/tokens/dashboard", headers=hub.admin)
    ).status == 404


@pytest.mark.asyncio
async def test_device_token_when_rotated_or_revoked_is_refused_on_the_next_request(
    hub: HubTestSession,
) -> None:
    old = await hub.enroll("cam-1")
    resp = await hub.client.post(f"{API}/device/token", headers=old)
    new = {"Authorization": f"Bearer {(await resp.json())['device_token']}"}
    assert (await hub.client.get(f"{API}/device/desired", headers=old)).status == 401
    assert (await hub.client.get(f"{API}/device/desired", headers=new)).status == 200
    resp = await hub.client.delete(f"{API}/admin/devices/cam-1/token", headers=hub.admin)
    assert resp.status == 200
    assert (await hub.client.get(f"{API}/device/desired", headers=new)).status == 401
    resp = await hub.client.post(f"{API}/admin/devices/cam-1/token", headers=hub.admin)
    again = {"Authorization": f"Bearer {(await resp.json())['device_token']}"}
    assert (await hub.client.get(f"{API}/device/desired", headers=again)).status == 200
    assert (
        await hub.client.delete(f"{API}/admin/devices/nope/token", headers=hub.admin)
    ).status == 404


@pytest_asyncio.fixture
async def hub_on(
    hub_on_backend: Callable[..., Awaitable[HubTestSession]],
) -> HubTestSession:
    return await hub_on_backend()


@pytest.mark.asyncio
async def test_ingest_when_the_same_upload_comes_5_times_and_concurrently_stores_one(
    hub_on: HubTestSession,
) -> None:
    hub = hub_on
    device = await hub.enroll("cam-1")
    url = f"{API}/device/samples/s-1"

    async def upload() -> str:
        resp = await hub.client.put(
            url, data=sample_form(sample_meta("s-1", "cam-1", 0.7)), headers=device
        )
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["status"])

    sequential = [await upload() for _ in range(5)]
    assert sequential == ["stored"] + ["duplicate"] * 4
    concurrent_url = f"{API}/device/samples/s-2"

    async def upload2() -> str:
        form = sample_form(sample_meta("s-2", "cam-1", 0.5))
        resp = await hub.client.put(concurrent_url, data=form, headers=device)
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["status"])

    together = await asyncio.gather(*(upload2() for _ in range(5)))
    assert sorted(together) == ["duplicate"] * 4 + ["stored"]
    db = hub.client.app[DB]
    assert sorted(s.id for s in db.samples(None, None, None)) == ["s-1", "s-2"]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leanloop-test-hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_when_configured_serves_https_only(tmp_path: Path, keys_dir: Path) -> None:
    cert, key = _self_signed(tmp_path)
    cfg = HubConfig(
        data_dir=tmp_path / "data", keys_dir=keys_dir, port=0, tls_cert_file=cert, tls_key_file=key
    )
    with LiveHub(cfg) as live:
        assert live.url.startswith("https://")
        http = urllib3.PoolManager(ca_certs=str(cert), retries=False)
        resp = http.request("GET", f"{live.url}/healthz")
        assert resp.status == 200 and resp.json()["status"] == "ok"
        untrusted = urllib3.PoolManager(retries=False)
        with pytest.raises(urllib3.exceptions.SSLError):
            untrusted.request("GET", f"{live.url}/healthz")
        plain = live.url.replace("https://", "http://")
        with pytest.raises(urllib3.exceptions.HTTPError):
            urllib3.PoolManager(retries=False).request("GET", f"{plain}/healthz", timeout=3)


def test_hub_config_file_when_bad_says_where(tmp_path: Path) -> None:
    f = tmp_path / "hub.yaml"
    f.write_text("data_dir: /tmp/x\ntls_cert_file: /a.pem\n")
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        load_hub_config(f, {})
    f.write_text("data_dir: /tmp/x\ndatabse_url: postgresql://x\n")
    with pytest.raises(ValueError, match="databse_url: Extra inputs are not permitted"):
        load_hub_config(f, {})
    f.write_text("data_dir: /tmp/x\n")
    assert load_hub_config(f, {"port": 9}).port == 9
