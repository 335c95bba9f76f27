"""Hub API, trust side: blob upload, targets acceptance, metadata and target serving."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tuf.api.metadata import Metadata, Snapshot, Timestamp

from hub.api._common import BLOBS
from hub.signing import init_keys, sign_targets
from hub.testing import API
from hub.testing import HubTestSession as Hub

pytestmark = pytest.mark.asyncio


async def test_put_blob_when_hash_matches_stores_once(hub: Hub) -> None:
    data = b"model bytes"
    sha = hashlib.sha256(data).hexdigest()
    url = f"{API}/admin/blobs/{sha}"
    assert await (await hub.client.put(url, data=data, headers=hub.admin)).json() == {
        "stored": True
    }
    assert await (await hub.client.put(url, data=data, headers=hub.admin)).json() == {
        "stored": False
    }
    assert hub.client.app[BLOBS].read(sha) == data


async def test_put_blob_when_hash_mismatches_is_400_and_keeps_nothing(hub: Hub) -> None:
    sha = hashlib.sha256(b"expected").hexdigest()
    resp = await hub.client.put(f"{API}/admin/blobs/{sha}", data=b"other", headers=hub.admin)
    assert resp.status == 400
    assert "hashes to" in (await resp.json())["error"]
    assert not hub.client.app[BLOBS].has(sha)
    tmp = hub.config.data_dir / ("blobs/tmp" if hub.config.s3 is None else "blobs-tmp")
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("name", ["ABC", "12", "g" * 64, "../" + "a" * 61])
async def test_put_blob_when_name_is_not_a_sha256_is_400_or_404(hub: Hub, name: str) -> None:
    resp = await hub.client.put(f"{API}/admin/blobs/{name}", data=b"x", headers=hub.admin)
    assert resp.status in (400, 404)


async def test_post_targets_when_valid_serves_new_snapshot_timestamp_and_bundle(
    hub: Hub, make_bundle: Any
) -> None:
    assert await hub.current_targets() is None
    assert await hub.publish(make_bundle("digits", 1)) == 1
    assert await hub.publish(make_bundle("digits", 2)) == 2

    get = hub.client.get
    ts_resp = await get(f"{API}/tuf/metadata/timestamp.json", headers=hub.admin)
    ts = Metadata[Timestamp].from_bytes(await ts_resp.read())
    snap_url = f"{API}/tuf/metadata/{ts.signed.snapshot_meta.version}.snapshot.json"
    snap = Metadata[Snapshot].from_bytes(await (await get(snap_url, headers=hub.admin)).read())
    assert snap.signed.meta["targets.json"].version == 2
    targets = await get(f"{API}/tuf/metadata/2.targets.json", headers=hub.admin)
    assert json.loads(await targets.read())["signed"]["version"] == 2
    assert await hub.current_targets() == await targets.read()
    for missing in ("3.targets.json", "2.root.json", "root.json", "..%2Fhub.sqlite3"):
        resp = await get(f"{API}/tuf/metadata/{missing}", headers=hub.admin)
        assert resp.status == 404, missing

    rollout = {"bundle": "digits", "version": 2}
    resp = await hub.client.post(f"{API}/admin/rollouts", json=rollout, headers=hub.admin)
    assert resp.status == 200


async def test_post_targets_when_signed_by_wrong_key_is_400(hub: Hub, tmp_path: Path) -> None:
    other = tmp_path / "other-keys"
    init_keys(other)
    resp = await hub.client.post(
        f"{API}/admin/targets", data=sign_targets(None, {}, other), headers=hub.admin
    )
    assert resp.status == 400
    assert "not signed by the root's targets key" in (await resp.json())["error"]
    assert await hub.current_targets() is None


async def test_post_targets_when_version_is_not_newer_is_409(hub: Hub, make_bundle: Any) -> None:
    await hub.publish(make_bundle("digits", 1))
    stale = sign_targets(None, {}, hub.keys_dir)  # version 1 again
    resp = await hub.client.post(f"{API}/admin/targets", data=stale, headers=hub.admin)
    assert resp.status == 409
    assert "current + 1" in (await resp.json())["error"]


async def test_post_targets_when_target_blob_is_missing_is_400(hub: Hub) -> None:
    sha = hashlib.sha256(b"never uploaded").hexdigest()
    signed = sign_targets(None, {"digits/1/m.onnx": (sha, 14, None)}, hub.keys_dir)
    resp = await hub.client.post(f"{API}/admin/targets", data=signed, headers=hub.admin)
    assert resp.status == 400
    assert "not uploaded" in (await resp.json())["error"]


async def test_post_targets_when_blob_size_differs_from_signed_length_is_400(hub: Hub) -> None:
    sha = await hub.put_blob(b"12345")
    signed = sign_targets(None, {"a/b": (sha, 6, None)}, hub.keys_dir)
    resp = await hub.client.post(f"{API}/admin/targets", data=signed, headers=hub.admin)
    assert resp.status == 400


async def test_post_targets_when_manifest_lists_unsigned_file_is_400(
    hub: Hub, make_bundle: Any
) -> None:
    folder = make_bundle("digits", 1)
    manifest = (folder / "manifest.json").read_bytes()
    signed = sign_targets(
        None,
        {"digits/1/manifest.json": (await hub.put_blob(manifest), len(manifest), None)},
        hub.keys_dir,
    )
    resp = await hub.client.post(f"{API}/admin/targets", data=signed, headers=hub.admin)
    assert resp.status == 400
    assert "not a target" in (await resp.json())["error"]
    assert await hub.current_targets() is None


async def test_post_targets_when_manifest_is_invalid_is_400(hub: Hub) -> None:
    bad = b'{"name": "digits"}'
    signed = sign_targets(
        None, {"digits/1/manifest.json": (await hub.put_blob(bad), len(bad), None)}, hub.keys_dir
    )
    resp = await hub.client.post(f"{API}/admin/targets", data=signed, headers=hub.admin)
    assert resp.status == 400
    assert "not a valid manifest" in (await resp.json())["error"]


async def test_post_targets_when_not_metadata_is_400(hub: Hub) -> None:
    resp = await hub.client.post(f"{API}/admin/targets", data=b"{}", headers=hub.admin)
    assert resp.status == 400


async def test_tuf_target_when_hash_is_current_serves_blob_else_404(
    hub: Hub, make_bundle: Any
) -> None:
    folder = make_bundle("digits", 1)
    await hub.publish(folder)
    device = await hub.enroll("cam-1")
    data = (folder / "model.onnx").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    ok = await hub.client.get(f"{API}/tuf/targets/digits/1/{sha}.model.onnx", headers=device)
    assert ok.status == 200
    assert await ok.read() == data
    stray = await hub.put_blob(b"uploaded but never signed")
    for path in (
        f"digits/1/{stray}.model.onnx",
        "digits/1/model.onnx",
        f"digits/2/{sha}.model.onnx",
    ):
        resp = await hub.client.get(f"{API}/tuf/targets/{path}", headers=device)
        assert resp.status == 404, path


async def test_unknown_route_when_authenticated_is_json_404(hub: Hub) -> None:
    resp = await hub.client.get(f"{API}/admin/nothing", headers=hub.admin)
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_keys_rotate_root_and_push_root_commands_when_run_serve_root_2(
    tmp_path: Path, make_bundle: Any
) -> None:
    from typer.testing import CliRunner

    from hub.cli import keys_app
    from hub.client import HubAdminClient
    from hub.config import HubConfig
    from hub.testing import LiveHub

    runner = CliRunner()
    keys = tmp_path / "own-keys"
    assert runner.invoke(keys_app, ["init", "--out", str(keys)]).exit_code == 0
    cfg = HubConfig(
        data_dir=tmp_path / "hub", keys_dir=keys, port=0, timestamp_check_interval_s=3600
    )
    with LiveHub(cfg) as live:
        admin = HubAdminClient(live.url, live.admin_token)
        admin.publish_bundle(make_bundle("digits", 1), keys)
        bad = runner.invoke(keys_app, ["rotate-root", "--keys", str(keys), "--replace", "mirror"])
        assert bad.exit_code == 1 and "unknown role" in bad.output
        rotated = runner.invoke(
            keys_app, ["rotate-root", "--keys", str(keys), "--replace", "targets"]
        )
        assert rotated.exit_code == 0, rotated.output
        assert "root version 2" in rotated.output
        pushed = runner.invoke(
            keys_app,
            ["push-root", "--keys", str(keys), "--hub", live.url, "--token", live.admin_token],
        )
        assert pushed.exit_code == 0, pushed.output
        assert "root version 2" in pushed.output
        served = urllib3.request(
            "GET",
            f"{live.url}{API}/tuf/metadata/2.root.json",
            headers={"Authorization": f"Bearer {live.admin_token}"},
        )
        assert served.data == (keys / "root.json").read_bytes()
        # The hub's targets were re-signed with the new key, so publishing goes on.
        assert admin.publish_bundle(make_bundle("digits", 2), keys) == 3
