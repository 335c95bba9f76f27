"""Comparative, responsive metrics: per cohort / version / device, this window beside the last.

From what the hub already holds — the prediction stream (every frame's metadata), the feedback
people gave on samples, and the devices' latest shadow telemetry — :func:`compare` groups rows
by the requested keys and a time window (``[now - w, now)``, and the previous ``[now - 2w,
now - w)``) and computes for each group:

- ``frames``, ``error_rate`` (frames the pipeline could not process), ``event_rate`` (frames
  whose best label is an event class), ``latency_p50_ms``/``latency_p95_ms``;
- ``feedback``, ``correction_rate`` (corrections / feedback) and ``accuracy_where_corrected``
  (1 - correction rate: the accuracy on the frames people reviewed);
- ``shadow_agreement`` (cohort level, from the devices' latest shadow reports).

The inputs are plain row dicts so this is pure; the hub route, the CLI and
:func:`prometheus_collector` share it. A metric is up to date as soon as the devices' next
upload cycle lands, since the rows are read at request time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["GROUP_KEYS", "compare", "prometheus_collector"]

GROUP_KEYS = ("cohort", "version", "device", "bundle")


def _key(row: dict[str, Any], by: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(row.get("device_id" if k == "device" else k) or "-") for k in by)


def _window_stats(
    preds: list[dict[str, Any]], feedback: list[dict[str, Any]], events: set[str]
) -> dict[str, Any]:
    n = len(preds)
    lat = np.array(
        [p["latency_ms"] for p in preds if p.get("latency_ms") is not None and not p.get("error")]
    )
    fb = len(feedback)
    corrected = sum(1 for f in feedback if f["kind"] == "correct")
    return {
        "frames": n,
        "error_rate": (sum(1 for p in preds if p.get("error")) / n) if n else None,
        "event_rate": (
            sum(1 for p in preds if p.get("label") in events) / n if n and events else None
        ),
        "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None,
        "feedback": fb,
        "correction_rate": corrected / fb if fb else None,
        "accuracy_where_corrected": 1 - corrected / fb if fb else None,
    }  # fmt: skip


def compare(
    predictions: Iterable[dict[str, Any]],
    feedback: Iterable[dict[str, Any]],
    by: Sequence[str],
    window_s: float,
    now: float,
    event_classes: Iterable[str] = (),
    shadow: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One row per group: ``{"group": {...}, "current": {...}, "previous": {...}}``.

    ``predictions`` rows have ``time, device_id, cohort, bundle, version, label, latency_ms,
    error``; ``feedback`` rows ``time, device_id, cohort, bundle, version, kind``; ``shadow``
    rows ``cohort, agreement, frames``. Raises ValueError for an unknown group key.
    """
    bad = [k for k in by if k not in GROUP_KEYS]
    if bad or not by:
        raise ValueError(f"group by one or more of {', '.join(GROUP_KEYS)} (got {', '.join(by)})")
    events = set(event_classes)
    bounds = {"current": (now - window_s, now), "previous": (now - 2 * window_s, now - window_s)}
    groups: dict[tuple[str, ...], dict[str, dict[str, list[dict[str, Any]]]]] = {}

    def put(kind: str, row: dict[str, Any]) -> None:
        for name, (lo, hi) in bounds.items():
            if lo <= float(row["time"]) < hi:
                g = groups.setdefault(_key(row, by), {n: {"p": [], "f": []} for n in bounds})
                g[name][kind].append(row)

    for p in predictions:
        put("p", p)
    for f in feedback:
        put("f", f)
    agreement: dict[str, list[tuple[float, float]]] = {}
    for s in shadow:
        if s.get("agreement") is not None:
            agreement.setdefault(str(s.get("cohort") or "-"), []).append(
                (float(s["agreement"]), float(s.get("frames") or 1))
            )
    out = []
    for key in sorted(groups):
        g = groups[key]
        group = dict(zip(by, key, strict=True))
        row: dict[str, Any] = {
            "group": group,
            "current": _window_stats(g["current"]["p"], g["current"]["f"], events),
            "previous": _window_stats(g["previous"]["p"], g["previous"]["f"], events),
        }
        if "cohort" in group and group["cohort"] in agreement:
            pairs = agreement[group["cohort"]]
            row["shadow_agreement"] = sum(a * w for a, w in pairs) / sum(w for _, w in pairs)
        out.append(row)
    return out


def prometheus_collector(rows_fn: Any) -> Any:
    """A prometheus-client collector that yields :func:`compare`'s rows as gauges on scrape.

    ``rows_fn()`` returns the rows of :func:`compare` (the hub's /metrics mounts it:
    ``REGISTRY.register(prometheus_collector(lambda: ...))``). Each metric is a gauge
    ``leanloop_<metric>{<group keys>, period="current|previous"}``.
    """
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Rows(Collector):
        def collect(self) -> Iterable[Any]:
            rows = rows_fn()
            if not rows:
                return
            labels = [*rows[0]["group"], "period"]
            names = [k for k in rows[0]["current"]]
            fams = {
                n: GaugeMetricFamily(f"leanloop_{n}", f"leanloop fleet metric {n}", labels=labels)
                for n in names
            }
            for r in rows:
                for period in ("current", "previous"):
                    for n in names:
                        v = r[period].get(n)
                        if v is not None:
                            fams[n].add_metric([*r["group"].values(), period], float(v))
            yield from fams.values()

    return _Rows()
