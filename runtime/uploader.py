"""The uploader: send the most valuable stored samples to the hub, and forget them only then.

Devices sit on poor links, so each upload **cycle** (:meth:`Uploader.run_once`) is small and
safe to interrupt:

1. an optional ``gate`` (an upload window, "the source has been idle for a while") is asked
   first; a closed gate skips the cycle;
2. up to ``batch`` pending records are read from the store, highest priority first;
3. each is sent through a :class:`SampleSink` (the device's hub client does an HTTP PUT, which
   is idempotent by sample id), and **released** from the store only after the sink
   acknowledged it ("stored" or "duplicate");
4. the first failure ends the cycle — the failed sample and the rest stay in the store for the
   next cycle; the optional per-cycle byte budget ends it too, without skipping ahead of a
   higher-priority sample. A sample larger than the whole budget could never go, so it is
   passed over (counted in ``oversize``) instead of blocking every cycle behind it.

A crash between the hub's acknowledgement and the release re-sends one sample next time; the
hub answers "duplicate" and the store releases it then. A record that received feedback while
it was in flight is not released (its priority changed), so the newer version goes next cycle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.errors import HubError
from runtime.store.lmdb_store import SampleStore

__all__ = ["SampleSink", "UploadResult", "Uploader"]

log = logging.getLogger("leanloop.uploader")

_ACKS = ("stored", "duplicate")


class SampleSink(Protocol):
    """Where samples go (the hub client implements it)."""

    def put_sample(self, meta: dict[str, Any], image: bytes) -> str:
        """Upload one sample, idempotent by ``meta["id"]``; returns "stored" or "duplicate".

        Raises HubError when the hub refuses or cannot be reached.
        """
        ...


@dataclass(frozen=True)
class UploadResult:
    """What one cycle did."""

    sent: int  # samples acknowledged (and released)
    bytes: int  # image + meta JSON bytes of those samples
    failed: int  # 0 or 1: the cycle stopped at a failed send
    duplicates: int = 0  # acknowledged as already present on the hub
    oversize: int = 0  # passed over: larger than the whole byte budget
    gated: bool = False  # True: the gate was closed, nothing was tried


class Uploader:
    """Sends stored samples, best first, within a batch size and a byte budget per cycle."""

    def __init__(
        self,
        store: SampleStore,
        sink: SampleSink,
        batch: int = 32,
        byte_budget_per_cycle: int | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if byte_budget_per_cycle is not None and byte_budget_per_cycle < 1:
            raise ValueError(f"byte_budget_per_cycle must be >= 1, got {byte_budget_per_cycle}")
        self.store = store
        self.sink = sink
        self.batch = batch
        self.byte_budget = byte_budget_per_cycle
        self.gate = gate
        self._oversize_seen = 0  # widens the next read so oversize samples do not eat the batch

    def run_once(self) -> UploadResult:
        """One upload cycle. Raises StoreError if the store fails (nothing is lost then)."""
        if self.gate is not None and not self.gate():
            return UploadResult(0, 0, 0, gated=True)
        sent = sent_bytes = duplicates = oversize = failed = 0
        for record in self.store.top(self.batch + self._oversize_seen, state="pending"):
            if sent >= self.batch:
                break
            meta = record.to_meta()
            size = len(record.image) + len(json.dumps(meta).encode())
            if self.byte_budget is not None:
                if size > self.byte_budget:
                    oversize += 1
                    log.warning(
                        "sample %s (%d bytes) exceeds the per-cycle byte budget %d; passed over",
                        record.id,
                        size,
                        self.byte_budget,
                    )
                    continue
                if sent_bytes + size > self.byte_budget:
                    break
            try:
                status = self.sink.put_sample(meta, record.image)
            except HubError as e:
                failed = 1
                log.warning("upload of %s failed, retrying next cycle: %s", record.id, e)
                break
            if status not in _ACKS:
                failed = 1
                log.warning("upload of %s: unexpected answer %r; retrying", record.id, status)
                break
            self.store.release([record.id], expected_priority={record.id: record.priority})
            sent += 1
            sent_bytes += size
            duplicates += status == "duplicate"
        self._oversize_seen = oversize
        return UploadResult(sent, sent_bytes, failed, duplicates=duplicates, oversize=oversize)
