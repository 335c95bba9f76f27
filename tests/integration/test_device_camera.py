"""A real device process on a real camera stream (an HTTP MJPEG server the test starts) with a
bundle from a real hub: results carry the camera's frame ids and capture times, ``status`` shows
the source, engines and uploads, ``leanloop device metrics`` and the node_exporter textfile
expose Prometheus metrics, ``samples list`` prints full ids and feedback takes a unique prefix."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loopkit import committed, publish
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.sources.streamkit import free_port, mjpeg_server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leanloop.cli", *args], capture_output=True, text=True, timeout=60
    )


def _pending(dev: Any) -> list[dict[str, Any]]:
    from runtime.operator import list_samples

    return list_samples(dev.state, 10, 64 << 20)


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_device_serves_camera_stream_and_exposes_status_and_metrics(
    start_device: Any, admin: Any, keys: Path, make_bundle: Any, tmp_path: Path
) -> None:
    port = free_port()
    opens = datetime.now() + timedelta(hours=2)
    closed_window = f"{opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}"
    with mjpeg_server(port, fps=15) as url:
        # In the state folder: the unit's sandbox lets the service write nowhere else.
        prom = tmp_path / "devices" / "cam-1" / "state" / "metrics" / "leanloop.prom"
        dev = start_device(
            source={"type": "mjpeg", "url": url, "name": "gate", "timeout_s": 3},
            metrics={"textfile": str(prom), "interval_s": 0.5},
            upload={"interval_s": 0.3, "windows": [closed_window]},  # samples stay on the device
        )
        publish(admin, keys, make_bundle(1, [(0.5, 0.5, 0.4, 0.4)]), 1)
        dev.wait("v1 committed", committed(1))
        st = dev.wait("20 camera frames", lambda s: s["counters"]["frames"] >= 20)
        src = st["source"]
        assert src["kind"] == "mjpeg" and src["name"] == "gate" and src["state"] == "streaming"
        assert st["engines"] == {"detector": "onnxruntime", "classifier": "onnxruntime"}
        results = dev.results()
        ids = sorted(i for i in results if i.startswith("gate@"))
        assert len(ids) >= 20
        assert all(abs(results[i]["ts"] - int(i.split("@")[1]) / 1e9) < 1e-3 for i in ids)

        plain = _cli("status", "--config", str(dev.config))
        assert plain.returncode == 0, plain.stderr
        assert "gate (mjpeg) streaming" in plain.stdout
        assert "detector: onnxruntime" in plain.stdout
        assert f"window closed (opens {opens:%Y-%m-%dT%H:%M}" in plain.stdout

        out = _cli("device", "metrics", "--config", str(dev.config))
        assert out.returncode == 0, out.stderr
        m = _metrics(out.stdout)
        assert m[("leanloop_frames_total", ())] >= 20
        assert m[("leanloop_source_up", (("kind", "mjpeg"), ("source", "gate")))] == 1
        assert m[("leanloop_stage_latency_seconds_count", (("stage", "detector"),))] >= 20
        states = [k for k, v in m.items() if k[0] == "leanloop_update_state" and v == 1]
        assert states == [("leanloop_update_state", (("state", st["update_state"]),))]
        dev.wait("textfile", lambda s: prom.exists())
        assert ("leanloop_frames_total", ()) in _metrics(prom.read_text())

    # The camera is gone: the device keeps running and says so.
    st = dev.wait("source reconnecting", lambda s: s["source"]["state"] != "streaming")
    assert st["source"]["last_error"] in ("stream lost", "cannot open")

    table = _cli("samples", "list", "--config", str(dev.config))
    ids = [r["id"] for r in _pending(dev)]
    assert ids, "the store kept no sample"
    assert all(i in table.stdout for i in ids)  # full ids, whatever the terminal width
    fb = _cli("feedback", "confirm", ids[0][:-4], "--json", "--config", str(dev.config))
    assert fb.returncode == 0, fb.stderr
    assert json.loads(fb.stdout)["id"] == ids[0]
