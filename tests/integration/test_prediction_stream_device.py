"""A real device process streams every prediction's metadata to the hub, and `leanloop metrics`
shows it per cohort and version within an upload cycle."""

from __future__ import annotations

import json
import time
from typing import Any

from loopkit import Loop
from typer.testing import CliRunner

from hub.testing import LiveHub
from leanloop.cli import app


def metrics(hub: LiveHub) -> dict[str, Any]:
    res = CliRunner().invoke(
        app,
        ["metrics", "--hub", hub.url, "--by", "cohort,version", "--window", "1h", "--json"],
        env={"LEANLOOP_ADMIN_TOKEN": hub.admin_token},
    )
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout))


def test_device_streams_predictions_and_metrics_show_them_per_version(loop: Loop) -> None:
    loop.publish(1)
    dev = loop.start_device()  # enrolled without a cohort: its group is "-"
    dev.wait("v1", lambda st: (st.get("active") or {}).get("version") == 1)
    dev.feed(6)
    deadline = time.monotonic() + 60
    groups: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = metrics(loop.hub)["groups"]
        if groups and groups[0]["current"]["frames"] >= 6:
            break
        time.sleep(0.3)
    assert [g["group"] for g in groups] == [{"cohort": "-", "version": "1"}]
    cur = groups[0]["current"]
    assert cur["frames"] == 6 and cur["error_rate"] == 0.0
    assert cur["latency_p95_ms"] is not None and cur["latency_p95_ms"] > 0
    assert groups[0]["previous"]["frames"] == 0
    st = dev.wait("stream drained", lambda st: (st.get("upload") or {}).get("predictions"))
    assert st["upload"]["predictions"]["shed"] == 0
    shown = CliRunner().invoke(
        app, ["metrics", "--hub", loop.hub.url, "--window", "1h"],
        env={"LEANLOOP_ADMIN_TOKEN": loop.hub.admin_token},
    )  # fmt: skip
    assert shown.exit_code == 0 and "6 [0]" in shown.stdout  # frames, previous window
