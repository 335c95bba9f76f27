"""``type: webhook`` — POST each result as JSON to a URL, off the frame path.

The frame loop only puts the result in a bounded queue (``queue_size``) with ``put_nowait``;
when it is full the result is **dropped and counted**. A sender thread POSTs one result per
request (``Content-Type: application/json``); a connection error, a timeout or a 5xx/429 is
retried after a backoff that doubles from ``backoff_min_s`` to ``backoff_max_s``, at most
``max_attempts`` times, then the result is dropped and counted as ``failed``; another 4xx
is the receiver refusing it (counted ``refused``, not retried).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from typing import Any, Literal

import urllib3
from pydantic import BaseModel, ConfigDict, Field

from runtime.pipeline.prediction import Prediction
from runtime.sinks.jsonl import result_dict

__all__ = ["WebhookSink", "WebhookSinkSettings"]

log = logging.getLogger("leanloop.sink")


class WebhookSinkSettings(BaseModel):
    """``type: webhook`` — POST each result as JSON."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="where results are POSTed")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout_s: float = Field(default=5.0, gt=0, description="per request")
    queue_size: int = Field(default=1000, ge=1, description="results waiting at most")
    max_attempts: int = Field(default=5, ge=1, description="tries per result")
    backoff_min_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)


_STOP = object()


class WebhookSink:
    def __init__(self, s: WebhookSinkSettings, device_id: str) -> None:
        self.s = s
        self.device_id = device_id
        self._q: queue.Queue[Any] = queue.Queue(maxsize=s.queue_size)
        self._stop = threading.Event()
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=s.timeout_s), retries=False)
        self.counters = {"sent": 0, "dropped": 0, "failed": 0, "refused": 0, "retries": 0}
        self._thread = threading.Thread(target=self._run, name="sink-webhook", daemon=True)
        self._thread.start()

    def write(self, pred: Prediction, ts: float | None = None) -> None:
        try:
            self._q.put_nowait(result_dict(pred, ts, self.device_id))
        except queue.Full:
            self.counters["dropped"] += 1

    def _post(self, body: bytes) -> int | None:
        """The HTTP status, or None on a connection error or timeout."""
        headers = {"Content-Type": "application/json", **self.s.headers}
        try:
            r = self._http.request("POST", self.s.url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            log.debug("webhook %s: %s", self.s.url, e)
            return None
        return r.status

    def _run(self) -> None:
        c = self.counters
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            body = json.dumps(item, separators=(",", ":")).encode()
            delay = self.s.backoff_min_s
            for attempt in range(1, self.s.max_attempts + 1):
                status = self._post(body)
                if status is not None and 200 <= status < 300:
                    c["sent"] += 1
                    break
                if status is not None and 400 <= status < 500 and status != 429:
                    c["refused"] += 1
                    log.warning("webhook %s refused a result: HTTP %d", self.s.url, status)
                    break
                if attempt == self.s.max_attempts or self._stop.is_set():
                    c["failed"] += 1
                    log.warning(
                        "webhook %s: result dropped after %d attempts (%s)",
                        self.s.url,
                        attempt,
                        f"HTTP {status}" if status else "no connection",
                    )
                    break
                c["retries"] += 1
                if self._stop.wait(delay):
                    c["failed"] += 1
                    break
                delay = min(self.s.backoff_max_s, delay * 2)

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "queued": self._q.qsize()}

    def close(self, timeout: float = 2.0) -> None:
        """Stop after what is queued was tried once more, within ``timeout``."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._q.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        self._http.clear()
