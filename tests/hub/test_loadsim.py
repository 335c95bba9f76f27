"""The device simulator of the soak benchmark (bench/loadsim.py) against real hubs, briefly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.loadsim import SimConfig, simulate
from hub.api._common import DB
from hub.config import HubConfig
from hub.testing import LiveHub


def test_simulator_when_run_polls_uploads_and_reports_failures(
    tmp_path: Path, keys_dir: Path
) -> None:
    cfg = HubConfig(data_dir=tmp_path / "hub", keys_dir=keys_dir, port=0)
    with LiveHub(cfg) as hub:
        sim = SimConfig(
            hubs=[hub.url], enroll_token=hub.enroll_token, devices=30, duration_s=3.0,
            poll_s=0.5, startup_spread_s=0.5, uploads_per_s=8,
            failure_events_per_device_hour=3600,  # about one per poll: exercised
        )  # fmt: skip
        stats = asyncio.run(simulate(sim))
        s = stats.summary()
        assert s["failed"] == 0 and s["status_5xx"] == 0, s
        assert s["by_kind"]["enroll"]["n"] == 30
        assert s["by_kind"]["heartbeat"]["n"] >= 60 and s["by_kind"]["desired"]["n"] >= 60
        db = hub.app[DB]
        assert len(db.samples(None, None, None)) == s["uploads_stored"] > 5
        assert any(db.device_events(d.id) for d in db.devices())
        assert s["p99_ms"] is not None and s["p50_ms"] <= s["p99_ms"]


def test_simulator_when_one_replica_stops_retries_the_other(
    tmp_path: Path, keys_dir: Path, replica_storage: dict[str, Any]
) -> None:
    common = {"port": 0, "timestamp_check_interval_s": 3600, **replica_storage}
    a = LiveHub(HubConfig(data_dir=tmp_path / "a", keys_dir=keys_dir, **common)).__enter__()
    a_stopped = False
    with LiveHub(HubConfig(data_dir=tmp_path / "b", **common)) as b:
        sim = SimConfig(
            hubs=[a.url, b.url], enroll_token=a.enroll_token, devices=40, duration_s=4.0,
            poll_s=0.5, startup_spread_s=0.3, uploads_per_s=5,
        )  # fmt: skip

        async def run() -> Any:
            nonlocal a_stopped
            task = asyncio.create_task(simulate(sim))
            await asyncio.sleep(2.0)
            await asyncio.to_thread(a.__exit__, None, None, None)  # replica a goes away
            a_stopped = True
            return await task

        try:
            s = asyncio.run(run()).summary()
        finally:
            if not a_stopped:
                a.__exit__(None, None, None)
    assert s["retried"] > 0, s  # devices whose home was a moved to b
    assert s["failed"] == 0, s
