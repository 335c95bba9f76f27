"""Two hub replicas on one PostgreSQL and one S3 bucket are interchangeable.

The second replica starts on an empty data dir with no keys: it takes the TUF repository, the
online keys and the tokens from the database. What one replica publishes the other serves; one
of them leads (timestamp, jobs, rollouts), and when it stops the other takes over.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import urllib3

from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.testing import LiveHub, make_bundle


def _get(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = urllib3.request("GET", url, headers=headers, retries=False)
    assert r.status == 200, (url, r.status, r.data[:200])
    return r.data


def test_replicas_when_sharing_postgres_and_s3_serve_the_same_fleet(
    tmp_path: Path, keys_dir: Path, replica_storage: dict[str, Any]
) -> None:
    common = {"port": 0, "timestamp_check_interval_s": 3600, **replica_storage}
    a = LiveHub(HubConfig(data_dir=tmp_path / "a", keys_dir=keys_dir, **common))
    b = LiveHub(HubConfig(data_dir=tmp_path / "b", **common))  # no keys: from the database
    with a:
        with b:
            assert a.admin_token == b.admin_token and a.enroll_token == b.enroll_token
            leaders = [json.loads(_get(f"{h.url}/healthz"))["leader"] for h in (a, b)]
            assert sorted(leaders) == [False, True]
            admin_a = HubAdminClient(a.url, a.admin_token)
            admin_a.publish_bundle(make_bundle(tmp_path / "bundles", "digits", 1), keys_dir)
            admin_b = HubAdminClient(b.url, b.admin_token)
            admin_b.publish_bundle(make_bundle(tmp_path / "bundles", "digits", 2), keys_dir)
            time.sleep(0.6)  # each replica looks for the others' changes every 0.5 s at most
            for h in (a, b):
                ts = json.loads(_get(f"{h.url}/api/v1/tuf/metadata/timestamp.json", h.admin_token))
                assert ts["signed"]["meta"]["snapshot.json"]["version"] == 2
            assert _get(f"{a.url}/api/v1/tuf/metadata/2.targets.json", a.admin_token) == _get(
                f"{b.url}/api/v1/tuf/metadata/2.targets.json", b.admin_token
            )
            r = urllib3.request(
                "POST",
                f"{a.url}/api/v1/enroll",
                json={"device_id": "cam-1", "enroll_token": a.enroll_token},
            )
            token = r.json()["device_token"]
            admin_b.rollout("digits", 2)
            assert json.loads(_get(f"{b.url}/api/v1/device/desired", token))["version"] == 2
            assert json.loads(_get(f"{a.url}/api/v1/device/desired", token))["version"] == 2
            leader_was_a = leaders[0]
        # b stopped
        if not leader_was_a:
            deadline = time.monotonic() + 15
            while not json.loads(_get(f"{a.url}/healthz"))["leader"]:
                assert time.monotonic() < deadline, "a did not take over"
                time.sleep(0.2)
    with LiveHub(HubConfig(data_dir=tmp_path / "b", **common)) as b2:  # restarts alone: leads
        deadline = time.monotonic() + 15
        while not json.loads(_get(f"{b2.url}/healthz"))["leader"]:
            assert time.monotonic() < deadline, "the lone replica did not lead"
            time.sleep(0.2)
