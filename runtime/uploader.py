"""The uploader: send the most valuable stored samples to the hub, and forget them only then.

Devices sit on poor, metered links, so each upload **cycle** (:meth:`Uploader.run_once`) is
small, policed and safe to interrupt:

1. the gate (e.g. "the source has been idle for a while") and the :class:`UploadPolicy` are
   asked first: outside every upload window, or with the day's byte budget spent, nothing is
   sent at all;
2. feedback given on samples already uploaded (:mod:`runtime.outbox`) goes first, a small
   request each, and leaves the outbox only once the hub acknowledged it; then the sealed
   segments of the prediction stream (:mod:`runtime.prediction_stream`: every prediction's
   metadata, compressed, one request each, charged whole, deleted on the hub's ack);
   then pending records are read from the store, highest priority first; each is encoded as one
   **payload** (:func:`encode_payload`: meta JSON + image) named by the sample id and checked
   by its sha256;
3. the payload goes in **parts** of at most ``part_bytes`` (``PATCH .../upload`` at an offset).
   The hub appends what it receives, even from a request the link cut half-way, so a drop
   costs the headers of one request and one offset query (``GET .../upload``), never the bytes
   that already arrived. Before each part the policy is asked again: the part is shrunk to what
   the day's budget, the cycle's budget and (with a rate cap) the time left in the window allow,
   and the budget is debited — and persisted — *before* the bytes go. A sample larger than
   what is left today is simply continued tomorrow;
4. a record is **released** from the store only after the hub acknowledged the whole payload
   ("stored", or "duplicate": it already had that sample id), and the outbox's index of sent
   samples remembered it (so later feedback on it can still reach the hub). A record that
   carries human feedback is first looked up at the hub: if the hub already has the sample
   (feedback given after an upload, or while it was in flight), only the feedback is sent
   (``PUT .../feedback``), not the image again;
5. a failed part is followed by one offset query and the upload goes on from where the hub
   got; after 3 failed parts in a row that moved nothing (or a failed query) the cycle ends
   and the record stays for the next cycle.

A record the hub refuses for good (a 4xx in :data:`runtime.quarantine.REFUSED_FOR_GOOD`), or one
the device can tell the hub would refuse (it fails :class:`runtime.protocol.SampleMeta` or
:class:`runtime.protocol.FeedbackMessage`, checked before any byte is charged), is moved to the
quarantine (:mod:`runtime.quarantine`) with the reason and the cycle goes on with the next one:
it never blocks the queue and its bytes are never charged twice (a refused part is not probed
and re-sent).

A crash between the hub's acknowledgement and the release re-sends one sample's first part
next time; the hub answers "duplicate" and the store releases it then. A record whose feedback
changed while it was in flight is not released, and its new feedback goes alone next cycle.
(A change between that check and the release, a few microseconds, is not seen unless it moved
the priority: the store has no version to compare against.) The rate cap is a token bucket
consulted before every 16 KiB of a part.

The parts: the payload format is :mod:`runtime.upload_payload`, windows and the daily budget
:mod:`runtime.upload_policy` (both re-exported here); this module is the cycle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from runtime.errors import HubError, StoreError
from runtime.protocol import FeedbackMessage, SampleMeta, validation_reason
from runtime.quarantine import REFUSED_FOR_GOOD, Quarantine, QuarantineKind
from runtime.ratelimit import TokenBucket
from runtime.upload_payload import decode_payload, encode_payload
from runtime.upload_policy import BUDGET_FILE, UploadPolicy, _utc_now, parse_window

if TYPE_CHECKING:
    from runtime.config import UploadSettings
    from runtime.feedback_stats import FeedbackLedger
    from runtime.outbox import FeedbackOutbox
    from runtime.prediction_stream import PredictionSpool
    from runtime.store.lmdb_store import SampleStore
    from runtime.store.record import SampleRecord

__all__ = [
    "BUDGET_FILE",
    "REQUEST_OVERHEAD",
    "PartAnswer",
    "SampleSink",
    "TokenBucket",
    "UploadPolicy",
    "UploadResult",
    "Uploader",
    "decode_payload",
    "encode_payload",
    "parse_window",
]

log = logging.getLogger("leanloop.uploader")

REQUEST_OVERHEAD = 1024
"""Bytes charged to the budget per request on top of its body: request line, headers and the
hub's short JSON answer (measured ~600 on loopback; rounded up so the budget is never passed)."""

_MAX_STALLS = 3  # failed parts in a row that moved nothing end the cycle


# ---- the sink and the uploader ------------------------------------------------------------


@dataclass(frozen=True)
class PartAnswer:
    """What the hub said about an upload: how far it got and whether the sample is stored."""

    status: str  # "partial" | "stored" | "duplicate" (status queries: "partial" | "stored")
    offset: int  # payload bytes the hub holds for this sha256 (0 when it has none)


class SampleSink(Protocol):
    """Where samples go (:class:`runtime.hubclient.HubClient` implements it)."""

    def upload_status(self, sample_id: str, sha256: str) -> PartAnswer:
        """Whether the hub stores the sample, else how many bytes of this payload it holds."""
        ...

    def upload_part(
        self,
        sample_id: str,
        sha256: str,
        length: int,
        offset: int,
        data: bytes,
        pace: Callable[[int], None] | None = None,
    ) -> PartAnswer:
        """Send payload bytes ``[offset, offset + len(data))``; ``pace(n)`` before every slice.

        Raises HubError when the hub refuses or the link drops.
        """
        ...

    def put_feedback(self, sample_id: str, feedback: dict[str, Any]) -> str:
        """Attach feedback to a sample the hub already stores; returns "stored"."""
        ...


@dataclass(frozen=True)
class UploadResult:
    """What one cycle did."""

    sent: int  # samples acknowledged (and released)
    bytes: int  # payload bytes of those samples (meta + image + 8)
    failed: int  # 0 or 1: the cycle stopped at a failed send
    duplicates: int = 0  # acknowledged as already present on the hub
    feedback_only: int = 0  # of ``sent``: the hub had the sample, only feedback went
    feedback_sent: int = 0  # feedback on samples already uploaded, from the outbox
    gated: bool = False  # True: the gate or the policy said no before anything was tried
    stopped: str | None = None  # why the cycle ended early: window|budget|cycle_budget|error
    wire_bytes: int = 0  # bytes charged to the budget this cycle (bodies + request overhead)
    resumed: int = 0  # parts that continued after a drop within this cycle
    quarantined: int = 0  # records refused for good (by the hub or the shared model) and set aside
    predictions_sent: int = 0  # prediction metadata events the hub acknowledged


class _Stop(Exception):
    """End the cycle early; the message is the reason."""


def _refused_for_good(e: HubError) -> bool:
    return e.http_status in REFUSED_FOR_GOOD


class Uploader:
    """Sends stored samples, best first, in resumable parts, within the policy's limits."""

    def __init__(
        self,
        store: SampleStore,
        sink: SampleSink,
        batch: int = 32,
        byte_budget_per_cycle: int | None = None,
        gate: Callable[[], bool] | None = None,
        policy: UploadPolicy | None = None,
        part_bytes: int = 64 * 1024,
        rate: TokenBucket | None = None,
        ledger: FeedbackLedger | None = None,
        outbox: FeedbackOutbox | None = None,
        quarantine: Quarantine | None = None,
        predictions: PredictionSpool | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if byte_budget_per_cycle is not None and byte_budget_per_cycle < 1:
            raise ValueError(f"byte_budget_per_cycle must be >= 1, got {byte_budget_per_cycle}")
        if part_bytes < 1:
            raise ValueError(f"part_bytes must be >= 1, got {part_bytes}")
        self.store = store
        self.sink = sink
        self.batch = batch
        self.byte_budget = byte_budget_per_cycle
        self.gate = gate
        self.policy = policy or UploadPolicy()
        self.part_bytes = part_bytes
        self.rate = rate
        self.ledger = ledger
        self.outbox = outbox
        self.quarantine = quarantine
        self.predictions = predictions
        self.feedback_dropped = 0  # outbox entries the hub refused for good (since start)
        self.quarantined = 0  # records quarantined since start
        self._known: dict[str, tuple[str, int]] = {}  # id -> (sha256, offset the hub acked)
        self._probe: set[str] = set()  # ids whose hub offset is unknown (a part failed)
        self._first = True  # after a start, ask the hub about the first sample (a restart)
        self._cycle_spent = 0
        self.last: UploadResult | None = None

    @classmethod
    def from_settings(
        cls,
        store: SampleStore,
        sink: SampleSink,
        settings: UploadSettings,
        state_dir: Path | None,
        gate: Callable[[], bool] | None = None,
        now: Callable[[], datetime] = _utc_now,
        ledger: FeedbackLedger | None = None,
        outbox: FeedbackOutbox | None = None,
        quarantine: Quarantine | None = None,
        predictions: PredictionSpool | None = None,
    ) -> Uploader:
        rate = TokenBucket(settings.rate_bps, settings.burst_bytes) if settings.rate_bps else None
        return cls(
            store,
            sink,
            batch=settings.batch,
            byte_budget_per_cycle=settings.byte_budget_per_cycle,
            gate=gate,
            policy=UploadPolicy.from_settings(settings, state_dir, now),
            part_bytes=settings.part_bytes,
            rate=rate,
            ledger=ledger,
            outbox=outbox,
            quarantine=quarantine,
            predictions=predictions,
        )

    # ---- budget ------------------------------------------------------------------------

    def _allowance(self, want: int, need: int | None = None) -> int:
        """Charge the next request: its overhead plus up to ``want`` body bytes, at least ``need``
        (default: 1 byte of a part, or all of a fixed body: ``need=want``). Returns the body
        bytes allowed. Raises _Stop naming the limit that leaves less than ``need``."""
        if need is None:
            need = min(want, 1)
        left = self.policy.window_left()
        if left is None:
            raise _Stop("window")
        allowed = self.policy.budget_left() - REQUEST_OVERHEAD
        if allowed < need:
            raise _Stop("budget")
        if self.byte_budget is not None:
            allowed = min(allowed, self.byte_budget - self._cycle_spent - REQUEST_OVERHEAD)
            if allowed < need:
                raise _Stop("cycle_budget")
        if self.rate is not None and not math.isinf(left):
            # Start nothing that could not finish, at the capped rate, before the window ends.
            allowed = min(allowed, self.rate.rate * left - REQUEST_OVERHEAD)
            if allowed < need:
                raise _Stop("window")
        n = int(min(want, allowed))
        self._charge(n + REQUEST_OVERHEAD)
        return n

    def _charge(self, n: int) -> None:
        self.policy.spend(n)
        self._cycle_spent += n

    # ---- one sample ----------------------------------------------------------------------

    def _send(self, record: SampleRecord, counts: dict[str, int]) -> str:
        """Upload one record; returns the hub's final status. Raises _Stop or HubError."""
        payload = encode_payload(record.to_meta(), record.image)
        sha = hashlib.sha256(payload).hexdigest()
        offset = 0
        known = self._known.get(record.id)
        if known is not None and known[0] == sha:
            offset = known[1]
        if record.id in self._probe or record.feedback is not None or self._first:
            self._first = False
            self._allowance(0)
            ans = self.sink.upload_status(record.id, sha)
            self._probe.discard(record.id)
            if ans.status == "stored":
                if record.feedback is None:
                    return "duplicate"
                feedback = record.feedback.to_dict()
                body = len(json.dumps({"feedback": feedback}).encode())
                self._allowance(body, need=body)
                self.sink.put_feedback(record.id, feedback)
                counts["feedback_only"] += 1
                return "feedback"
            offset = ans.offset
        handed = [0]  # body bytes of the current part handed to the socket so far

        def pace(k: int) -> None:
            handed[0] += k
            if self.rate is not None:
                self.rate.take(k)

        stalls = 0  # consecutive failed parts that moved nothing
        while True:
            n = self._allowance(min(self.part_bytes, len(payload) - offset))
            handed[0] = 0
            try:
                ans = self.sink.upload_part(
                    record.id, sha, len(payload), offset, payload[offset : offset + n], pace
                )
            except HubError as e:
                # Bytes never handed to the socket never reached the link: give them back.
                self._charge(-(n - min(n, handed[0])))
                if _refused_for_good(e):
                    raise  # the hub read it and said no: sending it again cannot help
                # The link dropped mid-part: the hub kept what arrived. Ask how far it got
                # and go on if that moved; otherwise leave it for the next cycle.
                log.info("part of %s at %d failed (%s); asking the hub", record.id, offset, e)
                self._probe.add(record.id)
                self._allowance(0)
                ans = self.sink.upload_status(record.id, sha)
                self._probe.discard(record.id)
                if ans.status == "stored":
                    return "stored"
                stalls = stalls + 1 if ans.offset <= offset else 0
                if stalls >= _MAX_STALLS:
                    raise
                counts["resumed"] += 1
            if ans.status in ("stored", "duplicate"):
                self._known.pop(record.id, None)
                return ans.status
            if ans.offset > len(payload):
                raise HubError(
                    f"sample {record.id}: hub claims offset {ans.offset} > {len(payload)}"
                )
            offset = ans.offset
            self._known[record.id] = (sha, offset)

    # ---- feedback on samples already uploaded ----------------------------------------------

    def _send_outbox(self, counts: dict[str, int]) -> None:
        """Send queued feedback (:mod:`runtime.outbox`), oldest first, within the limits.

        Raises _Stop at a limit and HubError when the link fails (the entry stays queued); an
        entry the hub refuses for good (403, 404) is dropped with a warning."""
        if self.outbox is None:
            return
        for sample_id, feedback in self.outbox.pending(self.batch):
            try:
                FeedbackMessage.model_validate(feedback)
            except ValidationError as e:  # the hub would refuse it: not a byte spent on it
                self._set_aside_feedback(sample_id, feedback, validation_reason(e, "feedback"))
                counts["quarantined"] += 1
                continue
            body = len(json.dumps({"feedback": feedback}).encode())
            self._allowance(body, need=body)
            try:
                self.sink.put_feedback(sample_id, feedback)
            except HubError as e:
                if _refused_for_good(e):
                    self._set_aside_feedback(sample_id, feedback, str(e), e.http_status)
                    self.feedback_dropped += 1
                    counts["quarantined"] += 1
                    continue
                raise
            self.outbox.done(sample_id, feedback)
            counts["feedback_sent"] += 1

    def _set_aside_feedback(
        self,
        sample_id: str,
        feedback: dict[str, Any],
        reason: str,
        http_status: int | None = None,
    ) -> None:
        """Quarantine a queued feedback and take it out of the outbox."""
        assert self.outbox is not None
        if self.quarantine is not None:
            self.quarantine.add(
                QuarantineKind.FEEDBACK,
                sample_id,
                reason,
                {"sample_id": sample_id, "feedback": feedback},
                http_status=http_status,
            )
        else:
            log.warning("feedback on %s dropped: %s", sample_id, reason)
        self.outbox.drop(sample_id)
        self.quarantined += 1

    def _set_aside_sample(
        self, record: SampleRecord, reason: str, http_status: int | None = None
    ) -> None:
        """Quarantine a stored sample (meta and image) and release it from the store."""
        if self.quarantine is not None:
            self.quarantine.add(
                QuarantineKind.SAMPLE,
                record.id,
                reason,
                record.to_meta(),
                image=record.image,
                http_status=http_status,
            )
        else:
            log.warning("sample %s dropped: %s", record.id, reason)
        self._known.pop(record.id, None)
        self._probe.discard(record.id)
        self.store.release([record.id])
        self.quarantined += 1

    # ---- the prediction stream ---------------------------------------------------------------

    def _send_predictions(self, counts: dict[str, int]) -> None:
        """Seal and send prediction metadata (:mod:`runtime.prediction_stream`), oldest segment
        first, each charged whole before it goes and forgotten only once the hub acked it."""
        post = getattr(self.sink, "post_predictions", None)
        if self.predictions is None or post is None:
            return
        self.predictions.seal()
        for segment, body in self.predictions.pending(self.batch):
            self._allowance(len(body), need=len(body))
            n = int(post(body))
            self.predictions.done(segment, n)
            counts["predictions_sent"] += n

    # ---- one cycle -------------------------------------------------------------------------

    def run_once(self) -> UploadResult:
        """One upload cycle. Raises StoreError if the store fails (nothing is lost then)."""
        if self.gate is not None and not self.gate():
            self.last = UploadResult(0, 0, 0, gated=True)
            return self.last
        if self.policy.window_left() is None:
            self.last = UploadResult(0, 0, 0, gated=True, stopped="window")
            return self.last
        if self.policy.budget_left() <= REQUEST_OVERHEAD:
            self.last = UploadResult(0, 0, 0, gated=True, stopped="budget")
            return self.last
        self._cycle_spent = 0
        counts = {
            "sent": 0,
            "bytes": 0,
            "duplicates": 0,
            "feedback_only": 0,
            "feedback_sent": 0,
            "resumed": 0,
            "quarantined": 0,
            "predictions_sent": 0,
        }
        failed, stopped = 0, None
        try:
            self._send_outbox(counts)
            self._send_predictions(counts)
            records = self.store.top(self.batch, state="pending")
        except _Stop as e:
            stopped, records = str(e), []
        except HubError as e:
            failed, stopped, records = 1, "error", []
            log.warning("feedback/prediction upload failed, retrying next cycle: %s", e)
        for record in records:
            try:
                SampleMeta.model_validate(record.to_meta())
            except ValidationError as e:  # the hub would refuse it: not a byte spent on it
                self._set_aside_sample(record, validation_reason(e, "sample meta"))
                counts["quarantined"] += 1
                continue
            try:
                status = self._send(record, counts)
            except _Stop as e:
                stopped = str(e)
                break
            except HubError as e:
                if _refused_for_good(e):
                    self._set_aside_sample(record, str(e), e.http_status)
                    counts["quarantined"] += 1
                    continue
                failed, stopped = 1, "error"
                log.warning("upload of %s failed, retrying next cycle: %s", record.id, e)
                break
            # Feedback that changed while the sample was in flight (a first feedback changes
            # the priority, a later one only the feedback) keeps the record for the next cycle.
            current = self.store.get(record.id)
            released = 0
            if current is None or current.feedback == record.feedback:
                if self.outbox is not None:
                    self.outbox.remember(record)  # before the release: never in neither place
                released = self.store.release(
                    [record.id], expected_priority={record.id: record.priority}
                )
            if released and self.ledger is not None:
                self.ledger.add(record)
            counts["sent"] += 1
            counts["bytes"] += len(record.image) + len(json.dumps(record.to_meta()).encode())
            counts["duplicates"] += status == "duplicate"
        self.last = UploadResult(
            counts["sent"],
            counts["bytes"],
            failed,
            duplicates=counts["duplicates"],
            feedback_only=counts["feedback_only"],
            feedback_sent=counts["feedback_sent"],
            stopped=stopped,
            wire_bytes=self._cycle_spent,
            resumed=counts["resumed"],
            quarantined=counts["quarantined"],
            predictions_sent=counts["predictions_sent"],
        )
        return self.last

    def status(self) -> dict[str, Any]:
        """For ``status.json``: the policy's state and what the last cycle did."""
        out = self.policy.status()
        if self.last is not None:
            out["last_cycle"] = {
                "sent": self.last.sent,
                "feedback_sent": self.last.feedback_sent,
                "failed": self.last.failed,
                "stopped": self.last.stopped,
                "wire_bytes": self.last.wire_bytes,
                "quarantined": self.last.quarantined,
            }
        out["quarantined_since_start"] = self.quarantined
        if self.quarantine is not None:
            out["quarantined"] = self.quarantine.summary()["count"]  # kept aside, all told
        if self.predictions is not None:
            out["predictions"] = self.predictions.stats()
        if self.outbox is not None:
            try:
                out["feedback_outbox"] = {**self.outbox.stats(), "dropped": self.feedback_dropped}
            except StoreError as e:
                out["feedback_outbox"] = {"error": str(e)}
        return out
