"""A real uploader and a real hub process, through a link that drops every 64 KiB upstream.

The device side is the real ``SampleStore`` (LMDB), ``Uploader`` and ``HubClient``; the hub is
the real app on loopback (:class:`hub.testing.LiveHub`); between them ``hil.faultproxy`` cuts
every connection once 64 KiB went up, and counts every byte it relayed. Samples are larger
and smaller than the cut, with incompressible images. Time is injected, so windows, midnights
and the rate cap are exercised without sleeping.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hil.faultproxy import FaultProxy
from hub.client import HubAdminClient
from hub.testing import LiveHub
from runtime.hubclient import HubClient
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import SampleRecord, new_sample_id
from runtime.uploader import (
    BUDGET_FILE,
    REQUEST_OVERHEAD,
    TokenBucket,
    Uploader,
    UploadPolicy,
)

CUT = 64 * 1024
SIZES = (3_000, 20_000, 60_000, 90_000, 150_000, 300_000)


class Clock:
    """Wall time for the policy and a monotonic time for the rate cap; sleeping advances both."""

    def __init__(self, start: datetime) -> None:
        self.t = start
        self.slept = 0.0

    def now(self) -> datetime:
        return self.t

    def mono(self) -> float:
        return (self.t - datetime(2026, 1, 1, tzinfo=UTC)).total_seconds()

    def sleep(self, s: float) -> None:
        self.slept += s
        self.t += timedelta(seconds=s)


def make_records(n: int, seed: int) -> list[SampleRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        image = rng.randbytes(rng.choice(SIZES))
        priority = rng.random()
        out.append(
            SampleRecord(
                id=new_sample_id(1_700_000_000_000_000_000 + i * 1000),
                device_id="cam-1",
                created=1_700_000_000.0 + i,
                frame_id=f"f{i}",
                bundle="digits",
                bundle_version=1,
                ontology_version=1,
                image=image,
                image_format="jpeg",
                prediction={"frame_id": f"f{i}", "stages": {}},
                scores={"margin": priority},
                priority=priority,
            )
        )
    return out


def sample_bytes(records: list[SampleRecord]) -> int:
    return sum(len(r.image) + len(json.dumps(r.to_meta()).encode()) for r in records)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SampleStore]:
    s = SampleStore(tmp_path / "samples", max_bytes=64 << 20)
    yield s
    s.close()


def enroll(hub: LiveHub) -> str:
    return HubClient(hub.url).enroll("cam-1", hub.enroll_token, None)


def assert_hub_has_exactly(hub: LiveHub, records: list[SampleRecord]) -> None:
    admin = HubAdminClient(hub.url, hub.admin_token)
    rows = admin.samples(limit=10_000)
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in records)  # 0 lost, 0 extra
    for r in records:
        assert hashlib.sha256(admin.sample_image(r.id)).digest() == hashlib.sha256(r.image).digest()
    assert not list((hub.config.data_dir / "uploads").glob("*/*.part"))  # no leftovers


# "fin": the hub receives every byte relayed before the cut (what the 1.1x bound is about);
# "rst": the hub's kernel discards what the hub had not read yet when the reset came, so those
# relayed bytes are lost and sent again: nothing lost or duplicated, but more bytes (measured
# 1.22-1.34x on an idle-ish machine; how much is unread at a reset depends on the hub's load,
# hence the loose bound).
@pytest.mark.parametrize(("cut", "max_ratio"), [("fin", 1.1), ("rst", 2.0)])
def test_upload_when_link_drops_every_64_kib_loses_and_duplicates_nothing(
    live_hub: LiveHub, store: SampleStore, cut: str, max_ratio: float
) -> None:
    records = make_records(30, seed=7)
    for r in records:
        assert store.put(r)
    token = enroll(live_hub)
    clock = Clock(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    with FaultProxy("127.0.0.1", live_hub.port, cut_every=CUT, direction="up", cut=cut) as proxy:
        client = HubClient(proxy.url, token, timeout_s=5.0)
        up = Uploader(store, client, batch=8, policy=UploadPolicy(now=clock.now))
        for _ in range(300):
            if not store.top(1):
                break
            up.run_once()
        client.close()
    assert store.top(1) == [] and store.check() == []
    assert proxy.stats.cuts >= sample_bytes(records) // CUT - 1  # the link really dropped
    assert_hub_has_exactly(live_hub, records)
    wire = proxy.stats.bytes_up + proxy.stats.bytes_down
    ratio = wire / sample_bytes(records)
    print(f"\n{cut}: {proxy.stats.cuts} cuts, {wire} bytes on the wire, {ratio:.3f}x the samples")
    assert wire <= max_ratio * sample_bytes(records), (wire, sample_bytes(records))


def test_upload_when_outside_window_or_past_budget_sends_nothing(
    live_hub: LiveHub, store: SampleStore, tmp_path: Path
) -> None:
    records = make_records(16, seed=3)
    for r in records:
        assert store.put(r)
    token = enroll(live_hub)
    budget = 400_000
    clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))  # 13:00 in Paris: window closed

    def uploader(client: HubClient, rate: TokenBucket | None = None) -> Uploader:
        policy = UploadPolicy(
            ["22:00-06:00"], "Europe/Paris", budget, tmp_path / BUDGET_FILE, now=clock.now
        )
        return Uploader(store, client, batch=100, policy=policy, rate=rate)

    with FaultProxy("127.0.0.1", live_hub.port, cut_every=CUT, direction="up") as proxy:
        client = HubClient(proxy.url, token, timeout_s=5.0)
        up = uploader(client)

        res = up.run_once()  # outside the window
        assert res.gated and res.stopped == "window"
        assert proxy.stats.connections == 0 and proxy.stats.bytes_up == 0

        clock.t = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)  # 23:30 in Paris: open
        for _ in range(50):
            if up.run_once().stopped == "budget":
                break
        day1 = proxy.stats.bytes_up + proxy.stats.bytes_down
        assert 0 < day1 <= budget
        assert 0 < len(store.top(100)) < len(records)  # some went, not all

        up = uploader(client)  # a restart the same night: the spent budget is remembered
        assert up.run_once().stopped == "budget"
        assert proxy.stats.bytes_up + proxy.stats.bytes_down == day1

        # 05:59:50 in Paris with a 10 kB/s cap: parts shrink to what fits before 06:00.
        clock.t = datetime(2026, 3, 2, 4, 59, 50, tzinfo=UTC)
        up = uploader(client, TokenBucket(10_000, 4096, clock=clock.mono, sleep=clock.sleep))
        before = proxy.stats.bytes_up
        for _ in range(20):
            if up.run_once().stopped == "window":
                break
        assert clock.t <= datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # finished by 06:00
        assert 0 < proxy.stats.bytes_up - before <= 10_000 * 10 + 4096 + 4 * REQUEST_OVERHEAD
        sent = proxy.stats.bytes_up
        assert up.run_once().stopped == "window" and proxy.stats.bytes_up == sent
        clock.t = datetime(2026, 3, 2, 5, 0, 1, tzinfo=UTC)  # 06:00:01 in Paris: closed
        assert up.run_once().gated and proxy.stats.bytes_up == sent

        clock.t = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)  # 22:30 in Paris, open again
        up = uploader(client)
        for _ in range(200):
            if not store.top(1):
                break
            if up.run_once().stopped == "budget":
                assert json.loads((tmp_path / BUDGET_FILE).read_text())["used"] <= budget
                clock.t += timedelta(days=1)  # nothing more until the next local day
        client.close()
    assert store.top(1) == []
    assert_hub_has_exactly(live_hub, records)
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["used"] <= budget
