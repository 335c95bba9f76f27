"""runtime.metrics: the exposition parses, names follow Prometheus conventions, values come from
the status the service reports (and latencies from predictions), the textfile is atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.metrics import DeviceMetrics, write_textfile
from runtime.pipeline.prediction import Prediction, StageResult

STATUS: dict[str, Any] = {
    "runtime_version": "0.1.0",
    "uptime_s": 12.5,
    "active": {"slot": "a", "bundle": "digits", "version": 3, "status": "trial"},
    "update_state": "trial",
    "counters": {
        "frames": 40,
        "frame_errors": 2,
        "upload_bytes": 1234,
        "uploaded": 5,
        "download_bytes_received": 999,
        "rollbacks": 1,
    },
    "store": {"bytes": 4096, "cap": 65536, "count": 3, "pending": 2, "evicted": 7},
    "writer": {"dropped": 1, "stored": 3, "rejected": 0},
    "upload": {"window_open": False, "quarantined": 2},
    "engines": {"detector": "onnxruntime", "classifier": "openvino"},
    "download": {"bytes": 10, "total_bytes": 100},
    "shadow": {"agreement": 0.75},
    "source": {
        "kind": "rtsp",
        "name": "gate",
        "state": "reconnecting",
        "frames": 40,
        "dropped": 9,
        "capped": 0,
        "reconnects": 2,
        "errors": 3,
        "last_frame_age_s": 4.5,
    },
    "sinks": {"webhook0": {"dropped": 1, "failed": 2, "sent": 30}},
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _pred(frame_ms: float, stages: dict[str, float]) -> Prediction:
    return Prediction(
        frame_id="f",
        latency_ms=frame_ms,
        stages={n: StageResult(n, "classification", [], ms) for n, ms in stages.items()},
    )


def test_exposition_shows_status_and_latencies_when_scraped() -> None:
    m = DeviceMetrics(lambda: STATUS)
    m.observe(_pred(3.0, {"detector": 2.0, "classifier": 0.8}))
    m.observe(_pred(30.0, {"detector": 20.0, "classifier": 9.0}))
    m.observe(Prediction(frame_id="bad", error="not an image"))  # no latency for errors
    s = _samples(m.exposition())
    assert s[("leanloop_frames_total", ())] == 40
    assert s[("leanloop_frame_errors_total", ())] == 2
    assert s[("leanloop_upload_bytes_total", ())] == 1234
    assert s[("leanloop_download_bytes_total", ())] == 999
    assert s[("leanloop_store_bytes", ())] == 4096
    assert s[("leanloop_store_evictions_total", ())] == 7
    assert s[("leanloop_quarantined_records", ())] == 2
    assert s[("leanloop_update_state", (("state", "trial"),))] == 1
    assert s[("leanloop_trial", ())] == 1
    assert s[("leanloop_shadow_agreement_ratio", ())] == 0.75
    assert s[("leanloop_engine_info", (("engine", "openvino"), ("model", "classifier")))] == 1
    src = (("kind", "rtsp"), ("source", "gate"))
    assert s[("leanloop_source_up", src)] == 0
    assert s[("leanloop_source_dropped_total", src)] == 9
    assert s[("leanloop_source_reconnects_total", src)] == 2
    assert s[("leanloop_sink_dropped_total", (("sink", "webhook0"),))] == 3
    assert s[("leanloop_frame_latency_seconds_count", ())] == 2
    assert s[("leanloop_frame_latency_seconds_sum", ())] == pytest.approx(0.033)
    det = (("stage", "detector"),)
    assert s[("leanloop_stage_latency_seconds_count", det)] == 2
    assert s[("leanloop_stage_latency_seconds_bucket", (("le", "0.0025"), *det))] == 1


def test_metric_names_follow_prometheus_conventions() -> None:
    m = DeviceMetrics(lambda: STATUS)
    m.observe(_pred(3.0, {"detector": 2.0}))
    for fam in text_string_to_metric_families(m.exposition()):
        assert fam.name.startswith("leanloop_")
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples)
        if fam.name.endswith("_created"):
            continue
        if "latency" in fam.name or "age" in fam.name or "uptime" in fam.name:
            assert fam.name.endswith("_seconds")


def test_exposition_works_when_status_is_nearly_empty() -> None:
    m = DeviceMetrics(lambda: {"runtime_version": "x"})
    s = _samples(m.exposition())
    assert s[("leanloop_build_info", (("version", "x"),))] == 1


def test_textfile_is_replaced_whole_when_written(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "prom" / "leanloop.prom"
    write_textfile(path, "a 1\n")
    assert path.read_text() == "a 1\n" and oct(path.stat().st_mode & 0o777) == "0o644"

    def broken(src: Any, dst: Any) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_textfile(path, "a 2\n")
    assert path.read_text() == "a 1\n"
    assert [p.name for p in path.parent.iterdir()] == ["leanloop.prom"]  # no temp file left
