"""A real hub on a loopback port, driven by python-tuf's ngclient and the sync admin client."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from hub.client import HubAdminClient
from hub.errors import AuthError, BadRequest, Conflict, NotFound
from hub.testing import LiveHub


class BearerFetcher(FetcherInterface):
    """urllib3 fetcher that sends a device token (the device side has its own)."""

    def __init__(self, token: str) -> None:
        self._http = urllib3.PoolManager(
            headers={"Authorization": f"Bearer {token}"}, retries=False
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        resp = self._http.request("GET", url, preload_content=False, timeout=10.0)
        if resp.status >= 400:
            resp.close()
            raise DownloadHTTPError(f"HTTP {resp.status} for {url}", resp.status)
        return resp.stream(64 * 1024)


def _enroll(live: LiveHub, device_id: str, cohort: str | None = None) -> str:
    body = {"device_id": device_id, "enroll_token": live.enroll_token, "cohort": cohort}
    resp = urllib3.request("POST", f"{live.url}/api/v1/enroll", json=body, timeout=5.0)
    assert resp.status == 200, resp.data
    return str(resp.json()["device_token"])


def _updater(live: LiveHub, token: str, root: bytes, tmp: Path) -> Updater:
    (tmp / "meta").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(tmp / "meta"),
        metadata_base_url=f"{live.url}/api/v1/tuf/metadata/",
        target_dir=str(tmp / "targets"),
        target_base_url=f"{live.url}/api/v1/tuf/targets/",
        fetcher=BearerFetcher(token),
        bootstrap=root,
    )


def test_ngclient_updater_when_bundle_published_downloads_and_verifies_targets(
    live_hub: LiveHub, keys_dir: Path, make_bundle: Any, tmp_path: Path
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    folder = make_bundle("digits", 1)
    assert admin.publish_bundle(folder, keys_dir) == 1
    token = _enroll(live_hub, "cam-1")
    root = (keys_dir / "root.json").read_bytes()

    updater = _updater(live_hub, token, root, tmp_path / "dev")
    updater.refresh()
    info = updater.get_targetinfo("digits/1/manifest.json")
    assert info is not None
    assert info.custom == {"bundle": "digits", "version": 1}
    manifest = json.loads(Path(updater.download_target(info)).read_bytes())
    for rel, entry in manifest["files"].items():
        target = updater.get_targetinfo(f"digits/1/{rel}")
        assert target is not None
        data = Path(updater.download_target(target)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert data == (folder / rel).read_bytes()

    # A second publish is seen by a fresh refresh; the first bundle stays a target.
    assert admin.publish_bundle(make_bundle("digits", 2, **{"model.onnx": b"v2"}), keys_dir) == 2
    again = _updater(live_hub, token, root, tmp_path / "dev")
    again.refresh()
    assert again.get_targetinfo("digits/2/model.onnx") is not None
    assert again.get_targetinfo("digits/1/model.onnx") is not None


def test_ngclient_updater_when_nothing_published_fails_to_refresh(
    live_hub: LiveHub, keys_dir: Path, tmp_path: Path
) -> None:
    token = _enroll(live_hub, "cam-1")
    updater = _updater(live_hub, token, (keys_dir / "root.json").read_bytes(), tmp_path)
    with pytest.raises(DownloadHTTPError):
        updater.refresh()


def test_admin_client_when_fleet_and_samples_flow_round_trips(
    live_hub: LiveHub, keys_dir: Path, make_bundle: Any
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    _enroll(live_hub, "cam-1", "lab")
    _enroll(live_hub, "cam-2", "field")
    admin.publish_bundle(make_bundle("digits", 1), keys_dir)
    assert admin.rollout("digits", 1, cohort="lab") == 1
    assert admin.rollout("digits", 1, devices=["cam-2"]) == 1
    wanted = {d["device_id"]: d["desired"] for d in admin.devices()}
    assert wanted == {
        "cam-1": {"bundle": "digits", "version": 1},
        "cam-2": {"bundle": "digits", "version": 1},
    }

    sid = admin.import_sample({"bundle": "digits", "priority": 0.3}, b"jpeg-1", [])
    top = admin.import_sample(
        {"bundle": "digits", "priority": 0.8, "id": "seed-2"}, b"jpeg-2", [[0, 0, 5, 5, "3"]]
    )
    assert top == "seed-2"
    ranked = admin.samples("digits", "annotated", 10)
    assert [s["id"] for s in ranked] == ["seed-2", sid]
    assert ranked[0]["annotation"] == {"boxes": [[0, 0, 5, 5, "3"]], "annotator": "import"}
    assert admin.sample_image(sid) == b"jpeg-1"
    admin.annotate(sid, [[1, 1, 2, 2, "4"]], "me")
    assert admin.samples("digits", "annotated", 1)[0]["id"] == "seed-2"

    with pytest.raises(NotFound):
        admin.rollout("digits", 7)
    with pytest.raises(BadRequest):
        admin.samples(state="weird")
    with pytest.raises(AuthError):
        HubAdminClient(live_hub.url, "wrong").devices()


def test_admin_client_when_publishing_same_bundle_version_twice_with_other_files_conflicts(
    live_hub: LiveHub, keys_dir: Path, make_bundle: Any, tmp_path: Path
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    admin.publish_bundle(make_bundle("digits", 1), keys_dir)
    changed = make_bundle("digits", 1, **{"model.onnx": b"changed"})
    with pytest.raises(Conflict):
        admin.publish_bundle(changed, keys_dir)


def test_admin_client_when_training_job_runs_downloads_artifact(
    live_hub: LiveHub, tmp_path: Path
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    admin.import_sample({"bundle": "digits", "id": "s1"}, b"img", [[0, 0, 1, 1, "1"]])
    job = admin.start_train("digits", 2)
    deadline = time.monotonic() + 20
    while admin.job(job)["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert admin.job(job)["state"] == "done", admin.job(job)
    out = admin.job_artifact(job, tmp_path / "src")
    assert (out / "pipeline.yaml").exists()
    assert (out / "models" / "m.onnx").read_bytes() == b"onnx"
