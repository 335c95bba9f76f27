"""Records the hub refuses for good are quarantined, never block the queue and never cost the
budget twice. The uploader talks to a real hub on loopback through the real HubClient; the
records sit in a real LMDB store and the quarantine is a real folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub
from runtime.hubclient import HubClient
from runtime.outbox import FeedbackOutbox
from runtime.quarantine import Quarantine, QuarantineKind, quarantine_summary
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id
from runtime.uploader import Uploader, UploadPolicy

_ids = itertools.count(1_700_000_000_000_000_000, 1000)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, str]]:
    root = tmp_path_factory.mktemp("qhub")
    init_keys(root / "keys")
    cfg = HubConfig(
        data_dir=root / "hub", port=0, keys_dir=root / "keys", timestamp_check_interval_s=3600
    )
    with LiveHub(cfg) as live:
        body = {"device_id": "cam-1", "enroll_token": live.enroll_token}
        resp = urllib3.request("POST", f"{live.url}/api/v1/enroll", json=body, timeout=5.0)
        assert resp.status == 200, resp.data
        yield live, str(resp.json()["device_token"])


def _record(priority: float, device: str = "cam-1", item: int | None = None) -> SampleRecord:
    fb = None
    if item is not None:
        fb = Feedback("correct", "3", "op", 1.0, 1, item=item)
    return SampleRecord(
        id=new_sample_id(next(_ids)),
        device_id=device,
        created=1.0,
        frame_id="f",
        bundle="digits",
        bundle_version=1,
        ontology_version=1,
        image=bytes([int(priority * 100)]) * 3000,
        image_format="jpeg",
        prediction={"frame_id": "f", "stages": {"clf": {"kind": "c", "items": [{"label": "1"}]}}},
        scores={"margin": priority},
        priority=priority,
        feedback=fb,
    )


def test_uploader_quarantines_refused_samples_and_sends_the_rest_when_hub_says_400(
    hub: tuple[LiveHub, str], tmp_path: Path
) -> None:
    live, token = hub
    store = SampleStore(tmp_path / "samples", max_bytes=8 << 20)
    other_device = _record(0.9, device="cam-2")  # the hub: 400, not this device
    negative_item = _record(0.8, item=-1)  # the shared model: refused before a byte goes
    good = [_record(0.5), _record(0.4)]
    for r in (other_device, negative_item, *good):
        store.put(r)
    quarantine = Quarantine(tmp_path / "quarantine")
    policy = UploadPolicy(daily_budget_bytes=10 << 20, budget_path=tmp_path / "budget.json")
    client = HubClient(live.url, token)
    up = Uploader(store, client, policy=policy, quarantine=quarantine, part_bytes=1024)

    res = up.run_once()
    assert (res.sent, res.quarantined, res.failed) == (2, 2, 0)  # the queue went on
    spent = policy.status()["spent_today_bytes"]
    assert store.top(10, state=None) == []
    again = up.run_once()  # nothing left: the refused sample is not sent (nor charged) again
    assert (again.sent, again.quarantined, again.wire_bytes) == (0, 0, 0)
    assert policy.status()["spent_today_bytes"] == spent

    entries = {e.id: e for e in quarantine.entries()}
    assert set(entries) == {other_device.id, negative_item.id}
    refused = entries[other_device.id]
    assert refused.kind is QuarantineKind.SAMPLE and refused.http_status == 400
    assert "not this device" in refused.reason
    assert refused.image is not None
    assert (tmp_path / "quarantine" / refused.image).read_bytes() == other_device.image
    assert refused.record["device_id"] == "cam-2"
    local = entries[negative_item.id]
    assert local.http_status is None and "feedback.item" in local.reason
    summary = quarantine_summary(tmp_path)
    assert summary["count"] == 2 and summary["samples"] == 2
    assert summary == quarantine.summary()
    # The good ones reached the hub; the refused one did not.
    admin = urllib3.request(
        "GET",
        f"{live.url}/api/v1/admin/samples?limit=100",
        headers={"Authorization": f"Bearer {live.admin_token}"},
    )
    ids = {s["id"] for s in admin.json()}
    assert {g.id for g in good} <= ids and other_device.id not in ids
    store.close()


def test_uploader_quarantines_feedback_the_hub_refuses_and_sends_the_next(
    hub: tuple[LiveHub, str], tmp_path: Path
) -> None:
    live, token = hub
    store = SampleStore(tmp_path / "samples", max_bytes=8 << 20)
    outbox = FeedbackOutbox(tmp_path / "sent")
    unknown = _record(0.7)  # the device sent it once, the hub no longer has it: 404
    bad_item = _record(0.6)
    known = _record(0.5)
    store.put(known)
    client = HubClient(live.url, token)
    quarantine = Quarantine(tmp_path / "quarantine")
    up = Uploader(store, client, quarantine=quarantine, outbox=outbox)
    assert up.run_once().sent == 1  # ``known`` is at the hub now, and remembered as sent
    for r in (unknown, bad_item):
        outbox.remember(r)
    outbox.enqueue(unknown.id, Feedback("confirm", None, "op", 1.0, 1))
    outbox.enqueue(bad_item.id, Feedback("correct", "3", "op", 1.0, 1, item=-2))
    outbox.enqueue(known.id, Feedback("correct", "3", "op", 1.0, 1, item=0))

    res = up.run_once()
    assert (res.feedback_sent, res.quarantined, res.failed) == (1, 2, 0)
    assert outbox.stats()["queued"] == 0
    entries = {e.id: e for e in quarantine.entries()}
    assert entries[unknown.id].http_status == 404
    assert entries[unknown.id].kind is QuarantineKind.FEEDBACK
    assert entries[bad_item.id].http_status is None
    assert entries[bad_item.id].record["feedback"]["item"] == -2
    assert up.run_once().quarantined == 0
    outbox.close()
    store.close()
