"""Operator helpers of the ``leanloop`` command: the device's metrics and the status rows that
describe its source, engines, uploads and downloads (``leanloop status``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from leanloop._cli_common import DeviceConfig, StateDir
from runtime.errors import LeanloopError

__all__ = ["device_metrics", "status_rows", "watch_download"]


def _bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def status_rows(st: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for ``leanloop status``: source, engines, uploads, download, sinks."""
    rows: list[tuple[str, str]] = []
    src = st.get("source") or {}
    if src:
        line = (
            f"{src.get('name')} ({src.get('kind')}) {src.get('state')}: "
            f"{src.get('frames', 0)} frames, {src.get('dropped', 0)} dropped, "
            f"{src.get('reconnects', 0)} reconnects"
        )
        if src.get("last_frame_age_s") is not None:
            line += f", last frame {src['last_frame_age_s']} s ago"
        if src.get("last_error") and src.get("state") != "streaming":
            line += f" (last error: {src['last_error']})"
        rows.append(("source", line))
    eng = st.get("engines") or {}
    if eng:
        rows.append(("engines", ", ".join(f"{m}: {e}" for m, e in sorted(eng.items()))))
    up = st.get("upload")
    c = st.get("counters") or {}
    if up:
        if up.get("window_open"):
            left = up.get("window_left_s")
            window = "open" + (f" ({left:.0f} s left)" if left is not None else "")
        else:
            window = f"closed (opens {up.get('window_opens_at') or '?'})"
        budget = up.get("budget_left_bytes")
        rows.append(
            (
                "upload",
                f"window {window}; {c.get('uploaded', 0)} sent, "
                f"{c.get('upload_errors', 0)} errors, {_bytes(c.get('upload_bytes', 0))} on the "
                f"link" + (f"; {_bytes(budget)} left today" if budget is not None else ""),
            )
        )
    elif st.get("running"):
        rows.append(("upload", "off (no hub configured)"))
    dl = st.get("download")
    if dl:
        pct = f" ({dl['percent']} %)" if dl.get("percent") is not None else ""
        rows.append(
            (
                "download",
                f"{dl['bundle']} v{dl['version']}: {_bytes(dl['bytes'])} of "
                f"{_bytes(dl['total_bytes'])}{pct}, {_bytes(dl['rate_bps'])}/s",
            )
        )
    for name, s in sorted((st.get("sinks") or {}).items()):
        rows.append((f"sink {name}", ", ".join(f"{k} {v}" for k, v in sorted(s.items()))))
    return rows


def watch_download(
    state_dir: Path, as_json: bool, timeout_s: float, poll_s: float = 0.5, console: Any = None
) -> dict[str, Any]:
    """Follow the bundle download in progress (if any) until it ends, with a bar on a
    terminal (``leanloop status --watch``); the device's status after it.

    The bar ends at 100 % when the download ended without a new update error: reused files
    and deltas make a download finish below its full size (``total_bytes``). A service that
    is not running (or stops) ends the watch at once, without a bar at 100 %. Raises
    LeanloopError when it is still running after ``timeout_s``.
    """
    import time

    from runtime.console import byte_progress
    from runtime.operator import status as device_status

    st = device_status(state_dir)
    dl = st.get("download")
    if not dl or not st.get("running"):  # a stopped service's status file is not live
        return st
    error_before, total = st.get("last_update_error"), int(dl["total_bytes"])
    deadline = time.monotonic() + timeout_s
    with byte_progress(as_json, console) as progress:
        bar = progress.add_task(
            f"download {dl['bundle']} v{dl['version']}", total=total, completed=dl["bytes"]
        )
        while True:
            time.sleep(poll_s)
            st = device_status(state_dir)
            now = st.get("download")
            if not st.get("running"):
                return st
            if not now or (now["bundle"], now["version"]) != (dl["bundle"], dl["version"]):
                break
            progress.update(bar, completed=min(int(now["bytes"]), total))
            if time.monotonic() > deadline:
                raise LeanloopError(
                    f"the download of {dl['bundle']} v{dl['version']} still runs after "
                    f"{timeout_s:g} s ({now['bytes']} of {total} bytes)"
                )
        if st.get("last_update_error") == error_before:
            progress.update(bar, completed=total)
    return st


def device_metrics(
    config: DeviceConfig = None,
    state_dir: StateDir = None,
) -> None:
    """Print the running device's Prometheus metrics (text exposition format)."""
    from runtime.config import load_config
    from runtime.control import request

    sd = state_dir if state_dir is not None else load_config(config).state_dir
    live = request(sd, "metrics")
    if live is None:
        raise LeanloopError(f"no device service is running on {sd} (metrics come from it)")
    typer.echo(str(live["text"]), nl=False)
