"""Uploader: best first, in resumable parts, released only after the hub's acknowledgement,
inside the windows, under the daily and per-cycle budgets and the rate cap (injected clocks)."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError, HubError
from runtime.feedback_stats import FeedbackLedger
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id
from runtime.uploader import (
    REQUEST_OVERHEAD,
    PartAnswer,
    SampleSink,
    TokenBucket,
    Uploader,
    UploadPolicy,
    decode_payload,
    encode_payload,
    parse_window,
)

_ids = itertools.count(1_700_000_000_000_000_000, 1000)


def record(priority: float, size: int = 500) -> SampleRecord:
    return SampleRecord(
        id=new_sample_id(next(_ids)),
        device_id="dev",
        created=1.0,
        frame_id="f",
        bundle="digits",
        bundle_version=1,
        ontology_version=1,
        image=bytes([int(priority * 100) % 256]) * size,
        image_format="jpeg",
        prediction={"frame_id": "f", "stages": {"clf": {"kind": "c", "items": [{"label": "1"}]}}},
        scores={"margin": priority},
        priority=priority,
    )


def payload_size(r: SampleRecord) -> int:
    return len(encode_payload(r.to_meta(), r.image))


class SpyStore(SampleStore):
    """The real store, recording every id it was asked to release."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.released: list[str] = []

    def release(
        self, ids: Iterable[str], *, expected_priority: Mapping[str, float] | None = None
    ) -> int:
        ids = list(ids)
        n = super().release(ids, expected_priority=expected_priority)
        if n:
            self.released.extend(ids)
        return n


class FakeHub:
    """Implements SampleSink like the hub: keeps received bytes, idempotent by sample id.

    ``cut_on``: part calls (1-based) that the "link" cuts after ``keep`` of their bytes.
    """

    def __init__(self, store: SampleStore, cut_on: Iterable[int] = (), keep: float = 0.5) -> None:
        self.store = store
        self.cut_on = set(cut_on)
        self.keep = keep
        self.part_calls = 0
        self.status_calls = 0
        self.body_bytes = 0  # bytes that reached the hub, cut parts included
        self.samples: dict[str, dict[str, Any]] = {}
        self.partial: dict[tuple[str, str], bytearray] = {}
        self.order: list[str] = []
        self.feedback: dict[str, dict[str, Any]] = {}

    def upload_status(self, sample_id: str, sha256: str) -> PartAnswer:
        self.status_calls += 1
        if sample_id in self.samples:
            return PartAnswer("stored", 0)
        return PartAnswer("partial", len(self.partial.get((sample_id, sha256), b"")))

    def upload_part(
        self,
        sample_id: str,
        sha256: str,
        length: int,
        offset: int,
        data: bytes,
        pace: Callable[[int], None] | None = None,
    ) -> PartAnswer:
        self.part_calls += 1
        # Not released before the acknowledgement: the record is still in the store now.
        assert self.store.get(sample_id) is not None
        for i in range(0, len(data), 16384):
            if pace is not None:
                pace(min(16384, len(data) - i))
        if sample_id in self.samples:
            return PartAnswer("duplicate", length)
        buf = self.partial.setdefault((sample_id, sha256), bytearray())
        assert offset <= len(buf)
        del buf[offset:]
        if self.part_calls in self.cut_on:
            kept = data[: int(len(data) * self.keep)]
            buf += kept
            self.body_bytes += len(kept)
            raise HubError(f"sample {sample_id}: connection reset")
        buf += data
        self.body_bytes += len(data)
        if len(buf) < length:
            return PartAnswer("partial", len(buf))
        assert hashlib.sha256(buf).hexdigest() == sha256
        meta, image = decode_payload(bytes(buf))
        assert len(image) == meta["image_size"]
        del self.partial[(sample_id, sha256)]
        self.samples[sample_id] = meta
        self.order.append(sample_id)
        return PartAnswer("stored", length)

    def put_feedback(self, sample_id: str, feedback: dict[str, Any]) -> str:
        assert sample_id in self.samples
        self.feedback[sample_id] = feedback
        return "stored"


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def mono(self) -> float:
        return (self.t - datetime(2026, 1, 1, tzinfo=UTC)).total_seconds()

    def sleep(self, s: float) -> None:
        self.t += timedelta(seconds=s)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpyStore]:
    s = SpyStore(tmp_path / "samples", max_bytes=8 << 20)
    yield s
    s.close()


def test_fake_hub_implements_sample_sink_protocol(store: SpyStore) -> None:
    sink: SampleSink = FakeHub(store)
    assert callable(sink.upload_part)


def test_payload_when_decoded_gives_back_meta_and_image() -> None:
    r = record(0.5)
    r.prediction = {"stages": {"det": {"items": []}, "clf": {"items": []}}}
    meta, image = decode_payload(encode_payload(r.to_meta(), r.image))
    assert (meta, image) == (r.to_meta(), r.image)
    assert list(meta["prediction"]["stages"]) == ["det", "clf"]  # order matters: last = final
    for bad in (b"", b"XXXX\x00\x00\x00\x01{", b"LLU1\x00\x00\x10\x00{}"):
        with pytest.raises(ValueError):
            decode_payload(bad)


def test_uploader_sends_best_first_and_releases_exactly_what_was_acknowledged(
    store: SpyStore,
) -> None:
    recs = [record(p) for p in (0.1, 0.9, 0.5, 0.7, 0.3, 0.8)]
    for r in recs:
        store.put(r)
    hub = FakeHub(store)
    res = Uploader(store, hub, batch=10).run_once()
    assert (res.sent, res.failed) == (6, 0)
    assert hub.order == [r.id for r in sorted(recs, key=lambda r: -r.priority)]
    assert store.released == hub.order
    assert store.top(100) == [] and store.check() == []


def test_uploader_resumes_in_same_cycle_when_link_cuts_a_part(store: SpyStore) -> None:
    big = record(0.9, size=200_000)
    store.put(big)
    hub = FakeHub(store, cut_on={2, 4})
    res = Uploader(store, hub, batch=5, part_bytes=64 * 1024).run_once()
    assert (res.sent, res.failed, res.resumed) == (1, 0, 2)
    assert hub.order == [big.id]
    assert hub.body_bytes == payload_size(big)  # nothing the hub kept was sent twice


def test_uploader_loses_nothing_when_link_stays_down(store: SpyStore) -> None:
    recs = [record(p) for p in (0.9, 0.5, 0.7)]
    for r in recs:
        store.put(r)
    hub = FakeHub(store, cut_on={2, 3, 4}, keep=0.0)  # 3 parts in a row move nothing
    up = Uploader(store, hub, batch=10)
    first = up.run_once()
    assert (first.sent, first.failed, first.stopped) == (1, 1, "error")
    assert store.released == [recs[0].id]
    assert {r.id for r in store.top(100)} == {recs[1].id, recs[2].id}
    second = up.run_once()
    assert (second.sent, second.failed) == (2, 0)
    assert Counter(store.released) == Counter({r.id: 1 for r in recs})  # none twice
    assert set(hub.samples) == {r.id for r in recs}


def test_uploader_continues_sample_next_cycle_when_cycle_budget_cuts_it(store: SpyStore) -> None:
    r = record(0.9, size=100_000)
    store.put(r)
    hub = FakeHub(store)
    up = Uploader(store, hub, batch=5, byte_budget_per_cycle=40_000, part_bytes=16_384)
    results = [up.run_once() for _ in range(4)]
    assert all(x.wire_bytes <= 40_000 for x in results)
    assert [x.stopped for x in results[:2]] == ["cycle_budget", "cycle_budget"]
    assert sum(x.sent for x in results) == 1 and hub.order == [r.id]
    assert hub.body_bytes == payload_size(r)  # resumed at the acked offset, not from 0


def test_uploader_respects_batch_when_many_are_pending(store: SpyStore) -> None:
    for i in range(7):
        store.put(record(i / 10))
    assert Uploader(store, FakeHub(store), batch=3).run_once().sent == 3
    assert store.stats()["count"] == 4


def test_uploader_does_nothing_when_gate_is_closed(store: SpyStore) -> None:
    store.put(record(0.5))
    hub = FakeHub(store)
    open_ = False
    up = Uploader(store, hub, batch=5, gate=lambda: open_)
    res = up.run_once()
    assert res.gated and hub.part_calls == hub.status_calls == 0
    open_ = True
    assert up.run_once().sent == 1


def test_uploader_releases_when_hub_already_has_the_sample(store: SpyStore) -> None:
    r = record(0.5)
    store.put(r)
    hub = FakeHub(store)
    hub.samples[r.id] = r.to_meta()  # e.g. acked before a crash, release never happened
    res = Uploader(store, hub, batch=5).run_once()
    assert (res.sent, res.duplicates) == (1, 1)
    assert hub.part_calls == 0  # the first sample after a start is asked about, not re-sent
    assert store.get(r.id) is None


def test_uploader_sends_only_feedback_when_feedback_came_after_upload(
    store: SpyStore, tmp_path: Path
) -> None:
    r = record(0.5, size=50_000)
    store.put(r)

    class FeedbackMidFlight(FakeHub):
        def upload_part(self, sample_id: str, *a: Any, **kw: Any) -> PartAnswer:
            if self.part_calls == 0:
                self.store.set_feedback(sample_id, Feedback("correct", "4", "op", 1.0, 1))
            return super().upload_part(sample_id, *a, **kw)

    hub = FeedbackMidFlight(store)
    ledger = FeedbackLedger(tmp_path / "ledger.json")
    up = Uploader(store, hub, batch=5, ledger=ledger)
    up._first = False  # not a restart: no status query for the first sample
    assert up.run_once().sent == 1
    kept = store.get(r.id)
    assert kept is not None and kept.feedback is not None  # not lost by the release
    assert store.released == [] and ledger.entries() == []

    received = hub.body_bytes
    res = up.run_once()
    assert (res.sent, res.feedback_only) == (1, 1)
    assert hub.body_bytes == received  # the image did not travel again
    assert hub.feedback[r.id]["label"] == "4"
    assert store.get(r.id) is None
    assert ledger.entries() == [("1", "correct", "4", 1)]


def test_uploader_stops_cycle_when_sink_answers_nonsense(store: SpyStore) -> None:
    store.put(record(0.5, size=1000))

    class Liar(FakeHub):
        def upload_part(self, *a: Any, **kw: Any) -> PartAnswer:
            return PartAnswer("partial", 10**9)

    res = Uploader(store, Liar(store), batch=5).run_once()
    assert (res.sent, res.failed) == (0, 1)
    assert store.stats()["count"] == 1


# ---- policy: windows, budget, rate ---------------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "tz", "utc", "left"),
    [
        ([], "UTC", "12:00", float("inf")),
        (["22:00-06:00"], "UTC", "23:00", 7 * 3600),
        (["22:00-06:00"], "UTC", "05:30", 1800),
        (["22:00-06:00"], "UTC", "06:00", None),
        (["22:00-06:00"], "UTC", "21:59", None),
        (["22:00-06:00"], "Europe/Paris", "21:30", 7.5 * 3600),  # 22:30 in Paris (winter)
        (["22:00-06:00"], "Europe/Paris", "05:30", None),  # 06:30 in Paris
        (["12:00-13:00", "12:30-14:00"], "UTC", "12:45", 1.25 * 3600),  # the longer one
        (["00:00-24:00"], "UTC", "23:59", 60),
    ],
)
def test_window_left_when_clock_is_at_given_time(
    windows: list[str], tz: str, utc: str, left: float | None
) -> None:
    h, m = (int(x) for x in utc.split(":"))
    clock = Clock(datetime(2026, 1, 15, h, m, tzinfo=UTC))
    assert UploadPolicy(windows, tz, now=clock.now).window_left() == left


@pytest.mark.parametrize("text", ["22-06", "25:00-01:00", "10:60-11:00", "08:00-08:00", ""])
def test_parse_window_when_malformed_raises(text: str) -> None:
    with pytest.raises(ValueError, match="upload window"):
        parse_window(text)


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ("upload:\n  windows: ['22:00-6']\n", "upload.windows"),
        ("upload:\n  timezone: Mars/Olympus\n", "unknown time zone"),
        ("upload:\n  rate_bps: 0\n", "upload.rate_bps"),
    ],
)
def test_upload_config_when_invalid_is_one_line_error(
    tmp_path: Path, yaml: str, match: str
) -> None:
    p = tmp_path / "d.yaml"
    p.write_text(yaml)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_daily_budget_when_restarted_is_remembered_and_resets_at_local_midnight(
    tmp_path: Path,
) -> None:
    path = tmp_path / "budget.json"
    clock = Clock(datetime(2026, 1, 15, 22, 0, tzinfo=UTC))  # 23:00 in Paris

    def policy() -> UploadPolicy:
        return UploadPolicy([], "Europe/Paris", 10_000, path, now=clock.now)

    p = policy()
    p.spend(7_000)
    assert policy().budget_left() == 3_000  # a restart remembers
    clock.t = datetime(2026, 1, 15, 22, 59, tzinfo=UTC)  # 23:59 in Paris: same local day
    assert policy().budget_left() == 3_000
    clock.t = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)  # midnight in Paris, not yet in UTC
    assert policy().budget_left() == 10_000
    path.write_text("{not json")
    assert policy().budget_left() == 0  # unreadable: today counts as spent


def test_uploader_sends_nothing_when_window_is_closed_or_budget_spent(
    store: SpyStore, tmp_path: Path
) -> None:
    for p in (0.9, 0.8, 0.7):
        store.put(record(p, size=20_000))
    clock = Clock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    policy = UploadPolicy(["22:00-06:00"], "UTC", 50_000, tmp_path / "b.json", now=clock.now)
    hub = FakeHub(store)
    up = Uploader(store, hub, batch=10, policy=policy, part_bytes=8192)
    res = up.run_once()
    assert (res.gated, res.stopped) == (True, "window")
    assert hub.part_calls == hub.status_calls == 0
    clock.t = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
    res = up.run_once()
    assert res.stopped == "budget" and res.sent == 2
    requests = hub.part_calls + hub.status_calls
    assert hub.body_bytes + requests * REQUEST_OVERHEAD <= 50_000  # never past the budget
    assert up.run_once().gated and hub.part_calls + hub.status_calls == requests
    clock.t += timedelta(days=1)
    assert up.run_once().sent == 1


def test_uploader_finishes_parts_before_window_ends_when_rate_is_capped(store: SpyStore) -> None:
    store.put(record(0.9, size=500_000))
    clock = Clock(datetime(2026, 1, 15, 5, 59, 30, tzinfo=UTC))  # 30 s before 06:00
    policy = UploadPolicy(["22:00-06:00"], "UTC", now=clock.now)
    bucket = TokenBucket(5_000, 4096, clock=clock.mono, sleep=clock.sleep)
    hub = FakeHub(store)
    res = Uploader(store, hub, batch=1, policy=policy, rate=bucket).run_once()
    assert res.stopped == "window" and res.sent == 0
    assert clock.t <= datetime(2026, 1, 15, 6, 0, tzinfo=UTC)
    assert 100_000 < hub.body_bytes <= 5_000 * 30 + 4096


def test_token_bucket_when_draining_never_exceeds_rate_plus_burst() -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    t0 = clock.mono()
    bucket = TokenBucket(10_000, 8192, clock=clock.mono, sleep=clock.sleep)
    sent = 0
    for _ in range(100):
        bucket.take(4096)
        sent += 4096
        assert sent <= 8192 + 10_000 * (clock.mono() - t0) + 1e-6
    assert clock.mono() - t0 == pytest.approx((sent - 8192) / 10_000)


def test_uploader_from_settings_when_configured_applies_policy(
    store: SpyStore, tmp_path: Path
) -> None:
    p = tmp_path / "d.yaml"
    p.write_text(
        "upload:\n  windows: ['22:00-06:00']\n  timezone: UTC\n  daily_budget_bytes: 5000\n"
        "  rate_bps: 1000\n  part_bytes: 2048\n"
    )
    cfg = load_config(p)
    clock = Clock(datetime(2026, 1, 15, 23, 0, tzinfo=UTC))
    up = Uploader.from_settings(store, FakeHub(store), cfg.upload, tmp_path, now=clock.now)
    assert (up.part_bytes, up.policy.daily_budget) == (2048, 5000)
    assert up.rate is not None and up.rate.rate == 1000
    assert up.status()["window_open"] is True
    assert json.loads(json.dumps(up.status()))["budget_left_bytes"] == 5000


def test_uploader_keeps_record_when_feedback_is_replaced_in_flight(store: SpyStore) -> None:
    r = record(0.5)
    store.put(r)
    store.set_feedback(r.id, Feedback("confirm", None, "op", 1.0, 1))

    class ReplaceMidFlight(FakeHub):
        def upload_part(self, sample_id: str, *a: Any, **kw: Any) -> PartAnswer:
            if self.part_calls == 0:  # same priority as before: only the feedback differs
                self.store.set_feedback(sample_id, Feedback("correct", "4", "op", 2.0, 1))
            return super().upload_part(sample_id, *a, **kw)

    hub = ReplaceMidFlight(store)
    up = Uploader(store, hub, batch=5)
    assert up.run_once().sent == 1 and store.released == []
    assert up.run_once().feedback_only == 1
    assert hub.feedback[r.id]["kind"] == "correct" and store.get(r.id) is None


# ---- feedback on samples already uploaded (the outbox) ----------------------------------------


class RefusingHub(FakeHub):
    """A hub that no longer has some samples (404), and whose link can fail feedback calls."""

    def __init__(self, store: SampleStore, gone: set[str]) -> None:
        super().__init__(store)
        self.gone = gone
        self.link_down = False

    def put_feedback(self, sample_id: str, feedback: dict[str, Any]) -> str:
        if self.link_down:
            raise HubError("hub unreachable: connection refused")
        if sample_id in self.gone:
            raise HubError(f"PUT feedback: HTTP 404: no sample {sample_id}", http_status=404)
        return super().put_feedback(sample_id, feedback)


def test_uploader_remembers_what_it_sends_and_delivers_later_feedback_first(
    store: SpyStore, tmp_path: Path
) -> None:
    from runtime.outbox import FeedbackOutbox

    box = FeedbackOutbox(tmp_path / "sent")
    hub = FakeHub(store)
    up = Uploader(store, hub, batch=10, outbox=box)
    first = record(0.9)
    store.put(first)
    assert up.run_once().sent == 1
    assert store.get(first.id) is None and box.sent(first.id) is not None  # gone, remembered
    box.enqueue(first.id, Feedback("correct", "7", "ana", 5.0, 1))
    store.put(record(0.8))
    res = up.run_once()
    assert (res.feedback_sent, res.sent) == (1, 1)
    assert hub.feedback[first.id]["label"] == "7"
    assert box.pending(10) == []
    assert up.status()["feedback_outbox"] == {"queued": 0, "remembered": 2, "dropped": 0}
    box.close()


def test_uploader_keeps_queued_feedback_when_link_fails_and_drops_what_hub_refuses(
    store: SpyStore, tmp_path: Path
) -> None:
    from runtime.outbox import FeedbackOutbox

    box = FeedbackOutbox(tmp_path / "sent")
    kept, lost = record(0.9), record(0.8)
    for r in (kept, lost):
        box.remember(r)
        box.enqueue(r.id, Feedback("confirm", None, "ana", 5.0, 1))
    hub = RefusingHub(store, gone={lost.id})
    hub.samples[kept.id] = {}
    up = Uploader(store, hub, batch=10, outbox=box)
    hub.link_down = True
    res = up.run_once()
    assert (res.failed, res.stopped, res.feedback_sent) == (1, "error", 0)
    assert len(box.pending(10)) == 2  # nothing lost
    hub.link_down = False
    res = up.run_once()
    assert res.feedback_sent == 1 and up.feedback_dropped == 1
    assert set(hub.feedback) == {kept.id} and box.pending(10) == []
    box.close()


def test_uploader_sends_no_feedback_outside_the_window_or_past_the_budget(
    store: SpyStore, tmp_path: Path
) -> None:
    from runtime.outbox import FeedbackOutbox

    box = FeedbackOutbox(tmp_path / "sent")
    recs = [record(0.5) for _ in range(3)]
    hub = FakeHub(store)
    for r in recs:
        box.remember(r)
        box.enqueue(r.id, Feedback("correct", "2", "ana", 5.0, 1))
        hub.samples[r.id] = {}
    clock = Clock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    body = len(json.dumps({"feedback": box.pending(1)[0][1]}).encode())
    budget = 2 * (body + REQUEST_OVERHEAD) + 10  # room for two feedback requests
    policy = UploadPolicy(["22:00-06:00"], "UTC", budget, tmp_path / "b.json", now=clock.now)
    up = Uploader(store, hub, batch=10, policy=policy, outbox=box)
    assert up.run_once().stopped == "window" and hub.feedback == {}
    clock.t = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
    res = up.run_once()
    assert (res.feedback_sent, res.stopped) == (2, "budget")
    assert len(box.pending(10)) == 1
    clock.t += timedelta(days=1)
    assert up.run_once().feedback_sent == 1 and box.pending(10) == []
    box.close()
