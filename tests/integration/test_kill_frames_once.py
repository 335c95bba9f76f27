"""#11 §3: after ``kill -9``, frames read again from the source are not stored again. The
device (every frame a sample: ``store.max_rate: 0``) is killed mid-stream and restarted; every
frame is served, and the store holds at most one record per frame."""

from __future__ import annotations

import collections
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loopkit import committed, publish

from runtime.operator import list_samples


def test_store_has_one_record_per_frame_when_device_is_killed_midstream(
    start_device: Any, admin: Any, keys: Path, make_bundle: Any, tmp_path: Path
) -> None:
    opens = datetime.now() + timedelta(hours=2)
    inbox = tmp_path / "devices" / "cam-1" / "inbox"  # loopkit's Device layout
    dev = start_device(
        source={"path": str(inbox), "pattern": "*.png", "poll_interval_s": 0.02, "fps_limit": 25},
        upload={"interval_s": 0.3, "windows": [f"{opens:%H:%M}-{opens:%H:59}"]},  # stay here
        status_interval_s=0.1,
    )
    assert dev.inbox == inbox
    publish(admin, keys, make_bundle(1, [(0.5, 0.5, 0.4, 0.4)]), 1)
    dev.wait("v1 committed", committed(1))
    names = dev.feed(80)
    st = dev.wait("halfway", lambda s: s["counters"]["frames"] >= 30, timeout=60)
    assert st["counters"]["frames"] < 80, "all frames served before the kill: nothing to test"
    dev.proc.send_signal(signal.SIGKILL)
    dev.proc.wait(10)
    dev.restart()
    dev.wait("every frame served", lambda s: set(names) <= set(dev.results()), timeout=60)
    dev.stop()
    rows = list_samples(dev.state, 1000, 64 << 20)
    per_frame = collections.Counter(r["frame_id"] for r in rows)
    twice = {f: n for f, n in per_frame.items() if n > 1}
    assert not twice, f"frames stored twice after kill -9: {twice}"
    assert len(per_frame) >= 60  # nearly every frame is a sample (max_rate 0)
