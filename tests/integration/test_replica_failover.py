"""Two hub replicas as real processes on one PostgreSQL + S3: a device's work started on one goes
on on the other when the first dies (SIGKILL) — TUF downloads (metadata and targets fall back
to the other configured hub URL) and resumable sample uploads (the parts live in the shared
database, not in the replica's data dir)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from hub.client import HubAdminClient
from hub.testing import make_bundle
from hub.testservers import HubProcess
from runtime.config import DownloadSettings
from runtime.hubclient import HubClient
from runtime.trust import BundleFetcher
from runtime.uploader import encode_payload

# Bigger than what loopback socket buffers hold (the kernel still delivers what a killed hub had
# written), and read slowly enough (~4 s) to kill the hub midway.
SIZE = 20 * 1024 * 1024
RATE = 5 * 1024 * 1024


def _replicas(tmp_path: Path, keys_dir: Path, storage: dict[str, Any]) -> tuple[Any, Any]:
    s3 = storage["s3"]
    common = {
        "database_url": storage["database_url"],
        "s3": s3.model_dump(mode="json") if hasattr(s3, "model_dump") else s3,
    }
    a = HubProcess({"data_dir": tmp_path / "a", "keys_dir": keys_dir, **common}).start()
    try:
        b = HubProcess({"data_dir": tmp_path / "b", **common}).start()
    except BaseException:
        a.stop()
        raise
    return a, b


def _enroll(url: str, enroll_token: str, device_id: str) -> str:
    r = urllib3.request(
        "POST", f"{url}/api/v1/enroll", json={"device_id": device_id, "enroll_token": enroll_token}
    )
    assert r.status == 200, r.data[:200]
    return str(r.json()["device_token"])


def test_bundle_download_when_the_first_replica_dies_midway_finishes_from_the_other(
    tmp_path: Path, keys: Path, replica_storage: dict[str, Any]
) -> None:
    a, b = _replicas(tmp_path, keys, replica_storage)
    try:
        data = os.urandom(SIZE)
        folder = make_bundle(tmp_path / "bundles", "big", 1, **{"big.bin": data})
        HubAdminClient(a.url, a.admin_token).publish_bundle(folder, keys)
        token = _enroll(a.url, a.enroll_token, "cam-1")
        fetcher = BundleFetcher(
            tmp_path / "state" / "tuf",
            keys / "root.json",
            a.url,
            token,
            fallback_urls=[b.url],
            download=DownloadSettings(rate_limit_bps=RATE, backoff_base_s=0.1),
        )
        result: dict[str, Any] = {}

        def fetch() -> None:
            try:
                result["ok"] = fetcher.fetch("big", 1, tmp_path / "slot")
            except BaseException as e:  # handed to the test thread
                result["error"] = e

        t = threading.Thread(target=fetch)
        t.start()
        deadline = time.monotonic() + 30
        while fetcher.counters["download_bytes_received"] < SIZE // 10:
            assert time.monotonic() < deadline and t.is_alive(), result
            time.sleep(0.02)
        a.kill()  # mid-download of big.bin, after its metadata came from a
        t.join(60)
        assert "error" not in result, result.get("error")
        assert (tmp_path / "slot" / "big.bin").read_bytes() == data
        assert fetcher.urls.current == 1  # b finished it, and is asked first from now on
        # Resumed on b, not started again: the partial carries over (same signed bytes, ETag).
        assert fetcher.counters["download_retries"] >= 1
        assert fetcher.counters["download_bytes_received"] < SIZE * 1.25
        # A device that starts now (a is dead, first in its list) gets metadata and targets
        # from b.
        fresh = BundleFetcher(
            tmp_path / "state" / "tuf",
            keys / "root.json",
            a.url,
            token,
            fallback_urls=[b.url],
        )
        again = fresh.fetch("big", 1, tmp_path / "slot2")
        assert (tmp_path / "slot2" / "big.bin").read_bytes() == data
        assert again.fetched == 1 and fresh.urls.current == 1
    finally:
        a.stop()
        b.stop()


def test_resumable_upload_when_started_on_one_replica_finishes_on_the_other(
    tmp_path: Path, keys: Path, replica_storage: dict[str, Any]
) -> None:
    a, b = _replicas(tmp_path, keys, replica_storage)
    try:
        token = _enroll(a.url, a.enroll_token, "cam-1")
        meta = {
            "id": "s-1", "device_id": "cam-1", "created": 1.0, "frame_id": "f1",
            "bundle": "digits", "bundle_version": 1, "ontology_version": 1,
            "image_format": "jpeg", "prediction": {"stages": {}}, "scores": {"margin": 0.5},
            "priority": 0.5,
        }  # fmt: skip
        payload = encode_payload(meta, b"\xff\xd8" + os.urandom(200_000) + b"\xff\xd9")
        sha = hashlib.sha256(payload).hexdigest()
        half = len(payload) // 2
        headers = {
            "Authorization": f"Bearer {token}",
            "Upload-Length": str(len(payload)),
            "Upload-Sha256": sha,
        }
        url = "/api/v1/device/samples/s-1/upload"
        r = urllib3.request(
            "PATCH", a.url + url, body=payload[:half], headers={**headers, "Upload-Offset": "0"}
        )
        assert r.status == 200 and r.json() == {"status": "partial", "offset": half}, r.data
        a.kill()
        # The device asks the other replica how far it got, and sends the rest there.
        r = urllib3.request("GET", f"{b.url}{url}?sha256={sha}", headers=headers)
        assert r.json() == {"status": "partial", "offset": half}, r.data
        r = urllib3.request(
            "PATCH",
            b.url + url,
            body=payload[half:],
            headers={**headers, "Upload-Offset": str(half)},
        )
        assert r.status == 200 and r.json()["status"] == "stored", r.data
        admin = HubAdminClient(b.url, b.admin_token)
        assert [s["id"] for s in admin.samples()] == ["s-1"]
        # The device's own client does the same through its fallback URL.
        client = HubClient(a.url, token, fallback_urls=[b.url])
        assert client.desired().bundle is None
    finally:
        a.stop()
        b.stop()


@pytest.fixture(autouse=True)
def _quiet_urllib3() -> None:
    import logging

    logging.getLogger("urllib3").setLevel(logging.ERROR)
