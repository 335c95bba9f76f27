"""Device identity (issue 12), attack by attack, against the real hub app and real ed25519 keys.

An attacker here is another device: it holds the fleet enrolment secret (every device does)
and its own token, and tries to take over, re-key, replay or move another device.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

import hub.api.identity as identity_api
from hub.app import create_app
from hub.config import HubConfig
from hub.testing import API, LiveHub
from hub.testing import HubTestSession as Hub
from runtime.errors import ConfigError, HubError
from runtime.hubclient import HubClient
from runtime.identity import KEY_NAME, DeviceKey, new_key_message, refresh_message


async def _enroll(
    hub: Hub, device_id: str, key: DeviceKey | None, secret: str | None = None, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"device_id": device_id, "enroll_token": secret or hub.enroll_token}
    if key is not None:
        body["public_key"] = key.public_b64
    body.update(extra)
    resp = await hub.client.post(f"{API}/enroll", json=body)
    return resp.status, await resp.json()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _challenge(hub: Hub, device_id: str) -> str:
    resp = await hub.client.post(f"{API}/device/challenge", json={"device_id": device_id})
    assert resp.status == 200
    return str((await resp.json())["challenge"])


async def _refresh(
    hub: Hub,
    device_id: str,
    signer: DeviceKey,
    challenge: str | None = None,
    new_key: DeviceKey | None = None,
    new_signer: DeviceKey | bool | None = True,
) -> tuple[int, dict[str, Any]]:
    """Answer a challenge; with ``new_key`` move to it, its proof signed by ``new_signer``
    (True: the new key itself; None: no proof sent)."""
    challenge = challenge or await _challenge(hub, device_id)
    new_pub = new_key.public_b64 if new_key is not None else None
    body: dict[str, Any] = {
        "device_id": device_id,
        "challenge": challenge,
        "signature": signer.sign(refresh_message(device_id, challenge, new_pub)),
    }
    if new_key is not None and new_pub is not None:
        body["new_public_key"] = new_pub
        proof_by = new_key if new_signer is True else new_signer
        if isinstance(proof_by, DeviceKey):
            body["new_key_signature"] = proof_by.sign(
                new_key_message(device_id, challenge, new_pub)
            )
    resp = await hub.client.post(f"{API}/device/refresh", json=body)
    return resp.status, await resp.json()


async def _works(hub: Hub, token: str) -> bool:
    resp = await hub.client.get(f"{API}/device/desired", headers=_auth(token))
    return resp.status == 200


async def _devices(hub: Hub) -> dict[str, Any]:
    resp = await hub.client.get(f"{API}/admin/devices", headers=hub.admin)
    return {d["device_id"]: d for d in await resp.json()}


# ---- takeover ---------------------------------------------------------------------------


@pytest.mark.parametrize("victim_has_key", [True, False])
@pytest.mark.asyncio
async def test_fleet_secret_cannot_take_over_an_enrolled_id_when_another_device_tries(
    hub: Hub, victim_has_key: bool
) -> None:
    victim = DeviceKey.generate()
    status, got = await _enroll(hub, "cam-1", victim if victim_has_key else None, cohort="lab")
    assert status == 200
    token = got["device_token"]
    for attacker_key in (DeviceKey.generate(), None):
        status, got = await _enroll(hub, "cam-1", attacker_key, cohort="field")
        assert status == 409 and "device_token" not in got
    assert await _works(hub, token)  # the real device is not locked out
    assert (await _devices(hub))["cam-1"]["cohort"] == "lab"  # nor moved to another cohort


@pytest.mark.asyncio
async def test_refresh_gives_a_new_token_only_to_the_registered_key_when_signed_fresh(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    me, thief = DeviceKey.generate(), DeviceKey.generate()
    assert (await _enroll(hub, "cam-1", me))[0] == 200
    await _enroll(hub, "cam-2", thief)
    # Signed with the wrong key, or a challenge made for another id: the same 401.
    wrong = await _refresh(hub, "cam-1", thief)
    other_id = await _refresh(hub, "cam-1", me, challenge=await _challenge(hub, "cam-2"))
    forged = await _refresh(hub, "cam-1", me, challenge="1.2.3")
    assert wrong == other_id == forged == (401, {"error": identity_api._REFUSED})
    # The device itself: a new token, the old one stops working.
    old = (await _enroll(hub, "cam-9", None))[1]["device_token"]  # a bystander stays valid
    challenge = await _challenge(hub, "cam-1")
    status, got = await _refresh(hub, "cam-1", me, challenge=challenge)
    assert status == 200 and await _works(hub, got["device_token"])
    assert await _works(hub, old)
    # A captured answer cannot be replayed, nor an older challenge used after a newer one.
    older = await _challenge(hub, "cam-1")
    newer = await _challenge(hub, "cam-1")
    assert (await _refresh(hub, "cam-1", me, challenge=challenge))[0] == 401
    assert (await _refresh(hub, "cam-1", me, challenge=newer))[0] == 200
    assert (await _refresh(hub, "cam-1", me, challenge=older))[0] == 401
    # An expired challenge is refused.
    stale = await _challenge(hub, "cam-1")
    monkeypatch.setattr(identity_api, "CHALLENGE_TTL_S", -1.0)
    assert (await _refresh(hub, "cam-1", me, challenge=stale))[0] == 401


@pytest.mark.asyncio
async def test_device_moves_to_a_new_key_only_when_its_current_key_signs_the_move(
    hub: Hub,
) -> None:
    me, new, thief = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    await _enroll(hub, "cam-1", me)
    assert (await _refresh(hub, "cam-1", thief, new_key=thief))[0] == 401
    # The new key must prove itself too: no proof, or a proof by another key, is refused.
    assert (await _refresh(hub, "cam-1", me, new_key=new, new_signer=None))[0] == 401
    assert (await _refresh(hub, "cam-1", me, new_key=new, new_signer=thief))[0] == 401
    assert (await _refresh(hub, "cam-1", new))[0] == 401  # nothing moved
    assert (await _refresh(hub, "cam-1", me, new_key=new))[0] == 200
    assert (await _refresh(hub, "cam-1", me))[0] == 401  # the old key is no longer it
    assert (await _refresh(hub, "cam-1", me, new_key=DeviceKey.generate()))[0] == 401
    assert (await _refresh(hub, "cam-1", new))[0] == 200
    # The admin sees the move in the audit log (and the hub log).
    resp = await hub.client.get(f"{API}/admin/audit", headers=hub.admin)
    moves = [e for e in await resp.json() if e["action"] == "device-key-rotated"]
    assert [m["detail"] for m in moves] == [
        {"device_id": "cam-1", "old_key": me.public_b64, "new_key": new.public_b64}
    ]
    assert moves[0]["who"] == "cam-1"


@pytest.mark.asyncio
async def test_moving_another_devices_key_is_refused_like_a_missing_device(hub: Hub) -> None:
    victim, thief, thief_new = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    await _enroll(hub, "cam-1", victim)
    await _enroll(hub, "cam-2", thief)
    # The thief signs a move of cam-1 with its own keys (both proofs valid for what it holds).
    on_victim = await _refresh(hub, "cam-1", thief, new_key=thief_new)
    on_missing = await _refresh(hub, "nobody", thief, new_key=thief_new)
    assert on_victim == on_missing == (401, {"error": identity_api._REFUSED})
    assert (await _refresh(hub, "cam-1", victim))[0] == 200  # the victim keeps its key
    assert (await _refresh(hub, "cam-1", thief_new))[0] == 401


# ---- admin approve / reset ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_admin_approves_a_pending_key_when_a_device_lost_its_own(hub: Hub) -> None:
    lost, fresh = DeviceKey.generate(), DeviceKey.generate()
    old_token = (await _enroll(hub, "cam-1", lost))[1]["device_token"]
    assert (await _enroll(hub, "cam-1", fresh))[0] == 409  # kept as pending, no token
    assert (await _refresh(hub, "cam-1", fresh))[0] == 401
    url = f"{API}/admin/devices/cam-1/approve"
    assert (await hub.client.post(url, json={}, headers=_auth(old_token))).status == 403
    resp = await hub.client.post(url, json={}, headers=hub.admin)
    assert resp.status == 200 and (await resp.json())["public_key"] == fresh.public_b64
    assert not await _works(hub, old_token)
    assert (await _refresh(hub, "cam-1", lost))[0] == 401
    status, got = await _refresh(hub, "cam-1", fresh)
    assert status == 200 and await _works(hub, got["device_token"])
    resp = await hub.client.post(f"{API}/admin/devices/nope/approve", json={}, headers=hub.admin)
    assert resp.status == 404


@pytest.mark.asyncio
async def test_admin_reset_lets_the_id_enrol_afresh_and_revokes_the_old_token(hub: Hub) -> None:
    old = DeviceKey.generate()
    token = (await _enroll(hub, "cam-1", old, cohort="lab"))[1]["device_token"]
    resp = await hub.client.post(f"{API}/admin/devices/cam-1/reset", headers=hub.admin)
    assert resp.status == 200
    assert not await _works(hub, token)
    assert (await _refresh(hub, "cam-1", old))[0] == 401
    new = DeviceKey.generate()
    status, got = await _enroll(hub, "cam-1", new)
    assert status == 200 and await _works(hub, got["device_token"])
    assert (await _devices(hub))["cam-1"]["cohort"] == "lab"
    assert (await _enroll(hub, "cam-1", DeviceKey.generate()))[0] == 409  # once only


@pytest.mark.asyncio
async def test_device_enrolled_without_a_key_registers_one_once_with_its_token(hub: Hub) -> None:
    token = (await _enroll(hub, "cam-1", None))[1]["device_token"]
    a, b = DeviceKey.generate(), DeviceKey.generate()
    url = f"{API}/device/key"
    assert (
        await hub.client.put(url, json={"public_key": a.public_b64}, headers=_auth(token))
    ).status == 200
    assert (
        await hub.client.put(url, json={"public_key": a.public_b64}, headers=_auth(token))
    ).status == 200
    assert (
        await hub.client.put(url, json={"public_key": b.public_b64}, headers=_auth(token))
    ).status == 409
    assert (await _refresh(hub, "cam-1", a))[0] == 200


# ---- enrolment secrets ----------------------------------------------------------------------


async def _mint(hub: Hub, **body: Any) -> dict[str, Any]:
    resp = await hub.client.post(f"{API}/admin/enroll-secrets", json=body, headers=hub.admin)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


@pytest.mark.asyncio
async def test_minted_secret_enrols_once_then_is_spent(hub: Hub) -> None:
    secret = (await _mint(hub, cohort="lab"))["secret"]
    assert (await _enroll(hub, "cam-1", DeviceKey.generate(), secret))[0] == 200
    assert (await _devices(hub))["cam-1"]["cohort"] == "lab"
    assert (await _enroll(hub, "cam-2", DeviceKey.generate(), secret))[0] == 401
    # A refused enrolment (enrolled id) does not spend a use.
    two = (await _mint(hub, uses=2))["secret"]
    assert (await _enroll(hub, "cam-1", DeviceKey.generate(), two))[0] == 409
    assert (await _enroll(hub, "cam-3", None, two))[0] == 200
    assert (await _enroll(hub, "cam-4", None, two))[0] == 200
    assert (await _enroll(hub, "cam-5", None, two))[0] == 401


@pytest.mark.asyncio
async def test_minted_secret_is_refused_when_it_expired(hub: Hub) -> None:
    secret = (await _mint(hub, ttl_s=0.05))["secret"]
    await asyncio.sleep(0.1)
    assert (await _enroll(hub, "cam-1", None, secret))[0] == 401


@pytest.mark.asyncio
async def test_minted_secret_is_spent_once_when_devices_race_for_its_last_use(hub: Hub) -> None:
    secret = (await _mint(hub))["secret"]
    results = await asyncio.gather(*(_enroll(hub, f"cam-{i}", None, secret) for i in range(8)))
    assert sorted(s for s, _ in results) == [200] + [401] * 7


# ---- the device's key file ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_device_key_is_made_once_0600_and_a_corrupt_one_is_refused(tmp_path: Path) -> None:
    key = DeviceKey.load_or_create(tmp_path)
    path = tmp_path / KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert DeviceKey.load_or_create(tmp_path).public_b64 == key.public_b64
    assert [p.name for p in tmp_path.iterdir()] == [KEY_NAME]  # no temp file left
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        DeviceKey.load_or_create(tmp_path)


@pytest.mark.asyncio
async def test_only_minted_secrets_enrol_when_the_fleet_secret_is_turned_off(
    aiohttp_client: Any, config: HubConfig, keys_dir: Path
) -> None:
    strict = config.model_copy(update={"fleet_enroll_secret": False})
    hub = Hub(await aiohttp_client(create_app(strict)), strict, keys_dir)
    assert (await _enroll(hub, "cam-1", DeviceKey.generate()))[0] == 401
    secret = (await _mint(hub))["secret"]
    assert (await _enroll(hub, "cam-1", DeviceKey.generate(), secret))[0] == 200


def test_identity_cli_mints_approves_and_resets_when_run_against_a_live_hub(
    live_hub: LiveHub,
) -> None:
    from typer.testing import CliRunner

    from leanloop.cli import app

    runner = CliRunner()
    base = ["--hub", live_hub.url, "--token", live_hub.admin_token]
    got = runner.invoke(app, ["identity", "mint-secret", *base, "--uses", "2", "--json"])
    assert got.exit_code == 0, got.output
    secret = json.loads(got.output)["secret"]
    key, fresh = DeviceKey.generate(), DeviceKey.generate()
    client = HubClient(live_hub.url, key=key, device_id="cam-1")
    client.enroll("cam-1", secret, None)
    other = HubClient(live_hub.url, key=fresh, device_id="cam-1")
    with pytest.raises(HubError) as e:
        other.enroll("cam-1", secret, None)  # a new key for an enrolled id: pending
    assert e.value.http_status == 409
    approved = runner.invoke(app, ["identity", "approve", "cam-1", *base])
    assert approved.exit_code == 0 and fresh.public_b64 in approved.output
    assert other.refresh()  # the approved key gets a token
    assert runner.invoke(app, ["identity", "reset", "cam-1", *base]).exit_code == 0
    missing = runner.invoke(app, ["identity", "reset", "nope", *base])
    assert missing.exit_code == 1 and missing.output.startswith("error: ")
    no_token = runner.invoke(app, ["identity", "reset", "cam-1", "--hub", live_hub.url])
    assert no_token.exit_code == 2
