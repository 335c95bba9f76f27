"""The device's Prometheus metrics: text exposition on the control socket and as a textfile.

Two kinds of numbers:

- **latencies**, observed on the frame path: one histogram per pipeline stage and one for the
  whole frame (``leanloop_stage_latency_seconds{stage=...}``,
  ``leanloop_frame_latency_seconds``). Observing is a bucket increment (a few µs);
- **everything else is read from the service's status at scrape time** (counters, store, source,
  update state, uploads, shadow): the service keeps one set of counters and the metrics are a
  view of them, never a second copy that could drift.

Names follow Prometheus conventions: ``leanloop_*_total`` counters, ``_seconds`` and ``_bytes``
units, ``_info`` gauges at 1 carrying labels. ``leanloop device metrics`` prints the exposition
(through the control socket); ``metrics.textfile`` makes the service write it every
``metrics.interval_s`` for node_exporter's textfile collector (atomically: temp file + rename in
the same folder, as the collector requires). Needs ``prometheus-client`` (device extra).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.pipeline.prediction import Prediction

__all__ = ["DeviceMetrics", "write_textfile"]

# Edge inference: from sub-millisecond classifiers to second-long detectors on small CPUs.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# status counters -> (metric name, help); counters the service keeps since start.
_COUNTERS = {
    "frames": ("leanloop_frames_total", "frames through the production pipeline"),
    "frame_errors": ("leanloop_frame_errors_total", "frames that gave an error result"),
    "uploaded": ("leanloop_uploaded_samples_total", "samples the hub acknowledged"),
    "upload_errors": ("leanloop_upload_errors_total", "samples or cycles that failed to upload"),
    "upload_bytes": ("leanloop_upload_bytes_total", "bytes the uploader put on the link"),
    "updates": ("leanloop_updates_total", "bundles swapped in"),
    "rollbacks": ("leanloop_rollbacks_total", "rollbacks (trial failures, operator, load)"),
    "update_errors": ("leanloop_update_errors_total", "updates refused or failed"),
    "download_bytes_received": ("leanloop_download_bytes_total", "bundle bytes downloaded"),
    "download_retries": ("leanloop_download_retries_total", "download attempts after a failure"),
}


class _StatusCollector(Collector):
    """Metric families from ``status()`` at each scrape."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        yield from _from_status(st)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _from_status(st: dict[str, Any]) -> Iterator[Metric]:
    info = GaugeMetricFamily("leanloop_build_info", "runtime version", labels=["version"])
    info.add_metric([str(st.get("runtime_version", ""))], 1)
    yield info
    up = _num(st.get("uptime_s"))
    if up is not None:
        yield GaugeMetricFamily("leanloop_uptime_seconds", "seconds since start", value=up)

    counters = st.get("counters") or {}
    for key, (name, doc) in _COUNTERS.items():
        v = _num(counters.get(key))
        if v is not None:
            yield CounterMetricFamily(name.removesuffix("_total"), doc, value=v)

    # The serving bundle and which engine runs each of its models.
    act = st.get("active") or {}
    b = GaugeMetricFamily(
        "leanloop_bundle_info", "the active bundle", labels=["bundle", "version", "status"]
    )
    if act:
        b.add_metric([str(act.get("bundle")), str(act.get("version")), str(act.get("status"))], 1)
    yield b
    eng = GaugeMetricFamily("leanloop_engine_info", "engine per model", labels=["model", "engine"])
    for model, engine in sorted((st.get("engines") or {}).items()):
        eng.add_metric([str(model), str(engine)], 1)
    yield eng

    # Update state machine and trial.
    state = str(st.get("update_state") or "")
    us = GaugeMetricFamily("leanloop_update_state", "install state (1: current)", labels=["state"])
    us.add_metric([state], 1)
    yield us
    yield GaugeMetricFamily(
        "leanloop_trial", "1 while a new bundle is on trial", value=1.0 if state == "trial" else 0
    )
    dl = st.get("download") or {}
    if dl:
        yield GaugeMetricFamily(
            "leanloop_download_progress_bytes",
            "bytes of the bundle being fetched",
            value=dl["bytes"],
        )
        yield GaugeMetricFamily(
            "leanloop_download_size_bytes", "bytes to fetch for it", value=dl["total_bytes"]
        )

    # Sample store.
    store = st.get("store") or {}
    for key, name, doc in (
        ("bytes", "leanloop_store_bytes", "sample store footprint"),
        ("cap", "leanloop_store_max_bytes", "sample store cap in force"),
        ("count", "leanloop_store_samples", "samples held"),
        ("pending", "leanloop_store_pending_samples", "samples not uploaded yet"),
    ):
        v = _num(store.get(key))
        if v is not None:
            yield GaugeMetricFamily(name, doc, value=v)
    v = _num(store.get("evicted"))
    if v is not None:
        yield CounterMetricFamily("leanloop_store_evictions", "samples evicted for room", value=v)
    writer = st.get("writer") or {}
    for key in ("dropped", "stored", "rejected"):
        v = _num(writer.get(key))
        if v is not None:
            yield CounterMetricFamily(
                f"leanloop_store_writer_{key}", f"frames the store writer {key}", value=v
            )

    # Uploads: the window and records the hub refused for good.
    upload = st.get("upload") or {}
    if upload:
        yield GaugeMetricFamily(
            "leanloop_upload_window_open",
            "1 while uploads may run",
            value=1.0 if upload.get("window_open") else 0.0,
        )
    q = _num(upload.get("quarantined", store.get("quarantined")))
    if q is not None:
        yield GaugeMetricFamily(
            "leanloop_quarantined_records", "records the hub refused, kept aside", value=q
        )

    # Shadow candidate.
    sh = st.get("shadow") or {}
    agree = _num(sh.get("agreement"))
    if agree is not None:
        yield GaugeMetricFamily(
            "leanloop_shadow_agreement_ratio", "candidate agrees with production", value=agree
        )

    # The source.
    src = st.get("source") or {}
    if src:
        labels = ["source", "kind"]
        lv = [str(src.get("name")), str(src.get("kind"))]
        upm = GaugeMetricFamily("leanloop_source_up", "1 while frames flow", labels=labels)
        upm.add_metric(lv, 1.0 if src.get("state") == "streaming" else 0.0)
        yield upm
        for key, doc in (
            ("frames", "frames handed to the pipeline"),
            ("dropped", "frames dropped because the pipeline was busy"),
            ("capped", "frames skipped by the frame-rate cap"),
            ("reconnects", "reconnections after a lost stream"),
            ("errors", "failed opens and reads"),
        ):
            c = CounterMetricFamily(f"leanloop_source_{key}", doc, labels=labels)
            c.add_metric(lv, float(src.get(key) or 0))
            yield c
        age = _num(src.get("last_frame_age_s"))
        if age is not None:
            a = GaugeMetricFamily(
                "leanloop_source_last_frame_age_seconds", "since the last frame", labels=labels
            )
            a.add_metric(lv, age)
            yield a

    # Result sinks beside results.jsonl.
    sinks = st.get("sinks") or {}
    if sinks:
        d = CounterMetricFamily("leanloop_sink_dropped", "results a sink dropped", labels=["sink"])
        for name, s in sorted(sinks.items()):
            d.add_metric([name], float(s.get("dropped", 0)) + float(s.get("failed", 0)))
        yield d


class DeviceMetrics:
    """The device's registry: frame-path histograms plus the status view."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.frame_latency = Histogram(
            "leanloop_frame_latency_seconds",
            "pipeline time per frame",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "leanloop_stage_latency_seconds",
            "time per pipeline stage per frame",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._stages: dict[str, Any] = {}
        self.registry.register(_StatusCollector(status))

    def observe(self, pred: Prediction) -> None:
        """Frame path: one prediction's latencies (skip error results)."""
        if pred.error is not None:
            return
        self.frame_latency.observe(pred.latency_ms / 1000.0)
        for name, stage in pred.stages.items():
            child = self._stages.get(name)
            if child is None:
                child = self._stages[name] = self.stage_latency.labels(name)
            child.observe(stage.latency_ms / 1000.0)

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` for node_exporter: temp file in the same folder, then rename
    (the collector must never read half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
