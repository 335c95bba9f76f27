"""The prediction stream: the device spool (shed, seal, disk cap, restart), and the uploader
sending it to a real hub inside the day's budget, resumable and deduplicated."""

from __future__ import annotations

import gzip
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.api._common import DB
from hub.config import HubConfig
from hub.testing import LiveHub
from runtime.hubclient import HubClient
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.prediction_stream import PredictionBatch, PredictionSpool
from runtime.store.lmdb_store import SampleStore
from runtime.uploader import REQUEST_OVERHEAD, Uploader, UploadPolicy


def pred(n: int, error: str | None = None) -> Prediction:
    items = [Item(n % 10, str(n % 10), 0.75)] if error is None else []
    return Prediction(
        frame_id=f"f{n}", stages={"clf": StageResult("clf", "classification", items, 2.0)},
        error=error, bundle="digits", bundle_version=3, ontology_version=1, latency_ms=2.5,
    )  # fmt: skip


def test_spool_seals_compressed_segments_that_survive_a_restart(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path / "p", max_events_per_segment=3)
    for n in range(5):
        spool.add(pred(n, error="cannot decode" if n == 4 else None), now=1000.0 + n)
    assert spool.seal() == 5
    (tmp_path / "p" / "x.tmp").write_bytes(b"torn")
    again = PredictionSpool(tmp_path / "p")  # a restart
    assert not (tmp_path / "p" / "x.tmp").exists()
    segments = again.pending(10)
    assert len(segments) == 2
    events = [e for _, body in segments for e in PredictionBatch.model_validate_json(
        gzip.decompress(body)).events]  # fmt: skip
    assert [(e.label, e.error) for e in events] == [
        ("0", None), ("1", None), ("2", None), ("3", None), (None, "cannot decode"),
    ]  # fmt: skip
    assert events[0].time == 1000.0 and events[0].version == 3 and events[0].items == 1
    assert len({e.id for e in events}) == 5
    again.done(segments[0][0], 3)
    assert again.stats()["segments"] == 1 and again.stats()["sent"] == 3


def test_spool_sheds_on_the_frame_path_and_drops_oldest_over_the_disk_cap(
    tmp_path: Path,
) -> None:
    spool = PredictionSpool(tmp_path / "p", max_pending=3)
    for n in range(5):
        spool.add(pred(n))
    assert spool.stats()["shed"] == 2 and spool.stats()["pending"] == 3
    spool.seal()
    size = spool.pending(1)[0][1].__len__()
    capped = PredictionSpool(tmp_path / "q", max_bytes=int(size * 2.5))
    for round_ in range(4):
        for n in range(3):
            capped.add(pred(n), now=float(round_ * 10 + n))
        capped.seal()
    assert capped.stats()["segments"] == 2 and capped.dropped == 6
    first = PredictionBatch.model_validate_json(gzip.decompress(capped.pending(1)[0][1]))
    assert first.events[0].time == 20.0  # the two oldest segments went


@pytest.fixture
def hub(tmp_path: Path, keys_dir: Path) -> Iterator[LiveHub]:
    cfg = HubConfig(
        data_dir=tmp_path / "hub", keys_dir=keys_dir, port=0, timestamp_check_interval_s=3600
    )
    with LiveHub(cfg) as live:
        yield live


def test_uploader_sends_the_stream_within_the_budget_and_the_hub_keeps_each_once(
    tmp_path: Path, hub: LiveHub
) -> None:
    client = HubClient(hub.url)
    client.token = client.enroll("cam-1", hub.enroll_token, "north")
    spool = PredictionSpool(tmp_path / "p", max_events_per_segment=1000)
    start = time.time() - 3600  # inside the hub's retention (older rows are pruned)
    for n in range(2500):
        spool.add(pred(n), now=start + n)
    spool.seal()
    sizes = [len(body) for _, body in spool.pending(10)]
    assert len(sizes) == 3 and sum(sizes) < 2500 * 30  # compressed: a few bytes a prediction
    clock = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    budget = sizes[0] + sizes[1] + 2 * REQUEST_OVERHEAD + 100  # two segments fit today
    policy = UploadPolicy(None, "UTC", budget, tmp_path / "budget.json", now=lambda: clock)
    store = SampleStore(tmp_path / "samples", max_bytes=1 << 20)
    try:
        up = Uploader(store, client, policy=policy, predictions=spool)
        res = up.run_once()
        assert (res.predictions_sent, res.stopped) == (2000, "budget")
        db = hub.app[DB]
        assert len(db.predictions()) == 2000
        # a crash after the hub stored the last segment but before the device forgot it
        last = spool.pending(1)[0][0]
        kept = tmp_path / "kept"
        shutil.copy(last, kept)
        clock += timedelta(days=1)
        assert up.run_once().predictions_sent == 500
        shutil.copy(kept, last)
        assert up.run_once().predictions_sent == 500  # sent again whole ...
        rows = db.predictions()
        assert len(rows) == 2500  # ... and kept once
        assert {r["cohort"] for r in rows} == {"north"} and rows[0]["label"] == "0"
        assert up.status()["predictions"]["segments"] == 0
    finally:
        store.close()
        client.close()


def _post(hub: LiveHub, token: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{hub.url}/api/v1/device/predictions", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/gzip"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_hub_refuses_bombs_garbage_and_bad_events_with_4xx(hub: LiveHub) -> None:
    token = HubClient(hub.url).enroll("cam-2", hub.enroll_token, None)
    bomb = gzip.compress(b'{"events": [' + b" " * (64 << 20) + b"]}")
    assert _post(hub, token, bomb)[0] == 413
    assert _post(hub, token, b"not gzip")[0] == 400
    bad = gzip.compress(json.dumps({"events": [{"id": "x", "time": 1}]}).encode())
    code, text = _post(hub, token, bad)
    assert code == 400 and "events.0" in text
    assert _post(hub, hub.admin_token, gzip.compress(b'{"events": []}'))[0] == 403
    # past the retention (90 days by default): accepted, and pruned
    old = {"id": "0000000000000001-1", "time": time.time() - 91 * 86400, "bundle": "d",
           "version": 1}  # fmt: skip
    code, text = _post(hub, token, gzip.compress(json.dumps({"events": [old]}).encode()))
    assert code == 200 and json.loads(text)["received"] == 1
    assert hub.app[DB].predictions() == []


def test_hub_metrics_when_scraped_show_the_fleet_per_cohort_beside_the_previous_day(
    hub: LiveHub,
) -> None:
    token = HubClient(hub.url).enroll("cam-3", hub.enroll_token, "north")
    now = time.time()
    events = [
        {"id": f"{n:016x}-00000003", "time": now - 60 - n, "bundle": "digits", "version": 3,
         "label": "7", "latency_ms": 2.0}
        for n in range(5)
    ] + [{"id": "00000000000000ff-00000003", "time": now - 86400 - 60, "bundle": "digits",
          "version": 3, "label": "7", "latency_ms": 2.0}]  # fmt: skip
    code, text = _post(hub, token, gzip.compress(json.dumps({"events": events}).encode()))
    assert code == 200, text
    with urllib.request.urlopen(f"{hub.url}/metrics") as r:
        scrape = r.read().decode()
    assert 'leanloop_frames{cohort="north",period="current",version="3"} 5.0' in scrape or (
        'leanloop_frames{cohort="north",version="3",period="current"} 5.0' in scrape
    ), scrape[-2000:]
    assert 'period="previous"' in scrape
    assert "leanloop_hub_requests_total" in scrape  # the hub's own metrics stay
