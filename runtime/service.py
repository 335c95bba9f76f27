"""The device service: what ``leanloop device run`` (and systemd) starts.

One process, a few threads:

- the **frame loop** (main thread) is the hot path: source → pipeline → sink, then a copy is
  *offered* to the store writer, whose bounded queue sheds rather than waits;
- the **update loop** enrolls, heartbeats, asks the hub for the desired bundle, fetches it
  through TUF into the inactive slot, loads it and runs its golden health check — all off the
  frame path — and hands the ready bundle to the frame loop, which swaps it in *between two
  frames* (no frame is dropped, models + pipeline + ontology switch together);
- the **upload loop** sends the most valuable stored samples when the gate allows;
- the **status loop** writes ``<state>/status.json`` for ``leanloop status``.

After a swap the new bundle is on *trial* for ``update.trial_frames`` frames; an error rate
above ``update.trial_max_error_rate`` rolls back to the previous committed slot. A crash during
trial rolls back at the next start (see :mod:`runtime.update.slots`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from runtime._atomic import atomic_write_json
from runtime._version import __version__
from runtime.backends.base import BackendOptions
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import LoadedBundle, load_bundle
from runtime.config import DeviceConfig
from runtime.errors import (
    BundleError,
    FrameError,
    HubError,
    LeanloopError,
    TrustError,
    UpdateError,
)
from runtime.hubclient import HubClient, load_or_enroll
from runtime.pipeline.prediction import Prediction
from runtime.pipeline.preprocess import decode_image
from runtime.sources import FolderSource, JsonlSink, NullSink
from runtime.store.writer import open_store_and_writer
from runtime.trust import BundleFetcher
from runtime.update.slots import SlotName, Slots
from runtime.uploader import Uploader

__all__ = ["DeviceService"]

log = logging.getLogger("leanloop.device")


class _Latency:
    """A small ring of recent latencies for p50/p99 in the status."""

    def __init__(self, n: int = 512) -> None:
        self._v: list[float] = []
        self._n = n

    def add(self, ms: float) -> None:
        self._v.append(ms)
        if len(self._v) > self._n:
            del self._v[: len(self._v) - self._n]

    def pct(self, q: float) -> float | None:
        if not self._v:
            return None
        s = sorted(self._v)
        return round(s[min(len(s) - 1, int(q * len(s)))], 3)


class DeviceService:
    """The device runtime. ``run()`` blocks until ``stop()`` or SIGTERM/SIGINT."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg
        self.state_dir = cfg.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.slots = Slots(self.state_dir)
        for line in self.slots.recover():
            log.warning("recovery: %s", line)
        self.options = BackendOptions(threads=cfg.inference.threads)
        self.bundle: LoadedBundle | None = None
        self._next: tuple[SlotName, LoadedBundle] | None = None
        self._trial: dict[str, float] | None = None
        self.counters: dict[str, Any] = {
            "frames": 0,
            "frame_errors": 0,
            "bytes_downloaded": 0,
            "updates": 0,
            "rollbacks": 0,
            "update_errors": 0,
            "uploaded": 0,
            "upload_errors": 0,
        }
        self.last_update_error: str | None = None
        self.update_state = "idle"
        self._failed: dict[tuple[str, int], float] = {}
        self.latency = _Latency()
        self._started = time.time()
        self._load_active()

        self.store, self.writer = open_store_and_writer(cfg, self.state_dir / "samples")
        self.source = FolderSource(
            cfg.source.path, cfg.source.pattern, self.state_dir / "source_cursor.json"
        )
        sink_path = cfg.sink.path or self.state_dir / "results.jsonl"
        self.sink: JsonlSink | NullSink = (
            JsonlSink(sink_path) if cfg.sink.type == "jsonl" else NullSink()
        )
        self.hub: HubClient | None = None
        self.fetcher: BundleFetcher | None = None
        self.uploader: Uploader | None = None

    # ---- bundle activation -------------------------------------------------------------

    def _load_active(self) -> None:
        """Load the active slot at start; fall back to the previous slot if it cannot load."""
        while self.slots.active_dir is not None:
            try:
                self.bundle = load_bundle(
                    self.slots.active_dir, self.cfg.inference.backend, self.options
                )
                info = self.slots.info(self.slots.state.active)  # type: ignore[arg-type]
                if info.status == "trial":
                    self._trial = {"frames": 0, "errors": 0, "t0": time.monotonic()}
                return
            except LeanloopError as e:
                log.error("active bundle does not load: %s", e)
                self.slots.fail_trial(f"does not load at start: {e}")
                self.counters["rollbacks"] += 1
        self.bundle = None

    def _swap_if_ready(self) -> None:
        with self._lock:
            nxt, self._next = self._next, None
        if nxt is None:
            return
        slot, loaded = nxt
        self.slots.activate(slot)  # persisted before the first frame is served from it
        old, self.bundle = self.bundle, loaded
        self._trial = {"frames": 0, "errors": 0, "t0": time.monotonic()}
        self.counters["updates"] += 1
        self.update_state = "trial"
        log.info("serving %s v%s (trial)", loaded.manifest.name, loaded.manifest.version)
        if old is not None:
            old.close()
        if self.cfg.update.trial_frames == 0:
            self._end_trial(ok=True, reason="no trial configured")

    def _end_trial(self, ok: bool, reason: str) -> None:
        self._trial = None
        if ok:
            self.slots.commit()
            self.update_state = "committed"
            return
        bad = self.bundle
        self.slots.fail_trial(reason)
        self.counters["rollbacks"] += 1
        self.update_state = "rolled_back"
        self.last_update_error = f"trial failed: {reason}"
        log.error("trial failed (%s); rolling back", reason)
        self.bundle = None
        if bad is not None:
            bad.close()
        self._load_active()

    # ---- the hot path ------------------------------------------------------------------

    def _judge_trial(self) -> None:
        """End the trial when it has seen enough frames or lasted long enough."""
        t = self._trial
        if t is None:
            return
        enough = t["frames"] >= self.cfg.update.trial_frames
        if not enough and time.monotonic() - t["t0"] < self.cfg.update.trial_s:
            return
        rate = t["errors"] / max(1.0, t["frames"])
        if rate > self.cfg.update.trial_max_error_rate:
            self._end_trial(False, f"error rate {rate:.0%} over {int(t['frames'])} frames")
        else:
            self._end_trial(True, "trial passed")

    def _frame_step(self) -> bool:
        self._swap_if_ready()
        self._judge_trial()
        if self.bundle is None:
            return False
        got = self.source.next()
        if got is None:
            return False
        frame_id, data = got
        pipeline = self.bundle.pipeline
        try:
            image = decode_image(data)
        except FrameError as e:
            image = None
            pred = Prediction(
                frame_id=frame_id,
                error=str(e),
                bundle=self.bundle.manifest.name,
                bundle_version=self.bundle.manifest.version,
            )
        if image is not None:
            pred = pipeline.run(image, frame_id)
        self.sink.write(pred)
        self.source.done()
        self.counters["frames"] += 1
        if pred.error:
            self.counters["frame_errors"] += 1
        else:
            self.latency.add(pred.latency_ms)
            self.writer.offer(image, pred)  # type: ignore[arg-type]
        if self._trial is not None:
            self._trial["frames"] += 1
            self._trial["errors"] += int(pred.error is not None and image is not None)
        if self.cfg.source.fps_limit > 0:
            time.sleep(1.0 / self.cfg.source.fps_limit)
        return True

    # ---- background loops --------------------------------------------------------------

    def _connect(self) -> bool:
        hub = self.cfg.hub
        if hub.url is None:
            return False
        if self.hub is None:
            self.hub = HubClient(hub.url, timeout_s=hub.timeout_s)
        if self.hub.token is None:
            token = hub.enroll_token
            if token is None and hub.enroll_token_file is not None:
                try:
                    token = hub.enroll_token_file.read_text().strip()
                except OSError as e:
                    raise HubError(f"{hub.enroll_token_file}: cannot read: {e}") from e
            load_or_enroll(self.hub, self.state_dir, self.cfg.device_id, token, hub.cohort)
            if self.cfg.root is None:
                raise UpdateError(
                    "no pinned root configured (config key 'root'): cannot verify bundles"
                )
            self.fetcher = BundleFetcher(
                self.state_dir / "tuf", self.cfg.root, hub.url, self.hub.token
            )
            self.uploader = Uploader(
                self.store,
                self.hub,
                batch=self.cfg.upload.batch,
                byte_budget_per_cycle=self.cfg.upload.byte_budget_per_cycle,
                gate=lambda: self.source.idle_for() >= self.cfg.upload.only_when_idle_s,
            )
        return True

    def _update_once(self) -> None:
        if not self._connect():
            return
        assert self.hub is not None and self.fetcher is not None
        self.hub.heartbeat(self.status())
        name, version = self.hub.desired()
        if name is None or version is None:
            return
        if self._trial is not None or self._next is not None:
            return  # one update at a time
        act = self.slots.state.active
        if act is not None:
            info = self.slots.info(act)
            if info.bundle == name and info.version == version:
                return
        retry_at = self._failed.get((name, version))
        if retry_at is not None and time.monotonic() < retry_at:
            return
        try:
            self.slots.check_version(name, version)
        except UpdateError as e:
            self.last_update_error = str(e)
            self._failed[(name, version)] = time.monotonic() + 10 * self.cfg.hub.poll_interval_s
            return
        self._stage(name, version)

    def _stage(self, name: str, version: int) -> None:
        assert self.fetcher is not None
        self.update_state = "downloading"
        slot, dest = self.slots.begin_staging(name, version)
        reuse = [self.slots.active_dir] if self.slots.active_dir else []
        try:
            res = self.fetcher.fetch(
                name, version, dest, reuse_dirs=reuse, backend=self.cfg.inference.backend
            )
            self.counters["bytes_downloaded"] += res.downloaded_bytes
            self.update_state = "verifying"
            loaded = load_bundle(dest, self.cfg.inference.backend, self.options, verify=True)
            try:
                self.update_state = "health_check"
                run_health_check(loaded)
            except LeanloopError:
                loaded.close()
                raise
        except LeanloopError as e:
            deterministic = isinstance(e, BundleError) and not isinstance(e, TrustError)
            self.slots.abort_staging(slot, str(e), bad=deterministic)
            self.counters["update_errors"] += 1
            self.update_state = "failed"
            self.last_update_error = f"{name} v{version} refused: {e}"
            self._failed[(name, version)] = time.monotonic() + 10 * self.cfg.hub.poll_interval_s
            log.error("update refused: %s v%s: %s", name, version, e)
            return
        self.slots.mark_staged(slot)
        self.update_state = "staged"
        self.last_update_error = None
        log.info(
            "staged %s v%s in slot %s (%d fetched, %d reused, %d by delta, %d delta fallbacks, "
            "%d bytes)",
            name,
            version,
            slot,
            res.fetched,
            res.reused,
            res.delta_files,
            res.delta_fallbacks,
            res.downloaded_bytes,
        )
        with self._lock:
            self._next = (slot, loaded)

    def _update_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._update_once()
            except LeanloopError as e:
                self.counters["update_errors"] += 1
                self.last_update_error = str(e)
                log.warning("update check: %s", e)
            except Exception as e:  # a background loop must survive anything
                log.exception("update loop: unexpected %s", e)
            self._stop.wait(self.cfg.hub.poll_interval_s)

    def _upload_loop(self) -> None:
        while not self._stop.wait(self.cfg.upload.interval_s):
            if self.uploader is None:
                continue
            try:
                res = self.uploader.run_once()
                self.counters["uploaded"] += res.sent
                self.counters["upload_errors"] += res.failed
            except LeanloopError as e:
                self.counters["upload_errors"] += 1
                log.warning("upload: %s", e)
            except Exception as e:
                log.exception("upload loop: unexpected %s", e)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.cfg.status_interval_s):
            try:
                self.write_status()
            except Exception as e:
                log.warning("status: %s", e)

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        act = self.slots.state.active
        prev = self.slots.state.previous
        info = self.slots.info(act) if act else None
        pinfo = self.slots.info(prev) if prev else None
        up = time.time() - self._started
        return {
            "device_id": self.cfg.device_id,
            "runtime_version": __version__,
            "pid": os.getpid(),
            "time": time.time(),
            "uptime_s": round(up, 1),
            "active": {
                "slot": act,
                "bundle": info.bundle,
                "version": info.version,
                "status": info.status,
            }
            if info
            else None,
            "previous": {"slot": prev, "bundle": pinfo.bundle, "version": pinfo.version}
            if pinfo
            else None,
            "update_state": self.update_state,
            "last_update_error": self.last_update_error,
            "counters": dict(self.counters),
            "fps": round(self.counters["frames"] / up, 2) if up > 0 else 0.0,
            "latency_ms": {"p50": self.latency.pct(0.5), "p99": self.latency.pct(0.99)},
            "store": self.store.stats(),
            "writer": self.writer.stats(),
            "source_idle_s": round(self.source.idle_for(), 2),
        }

    def write_status(self) -> None:
        atomic_write_json(self.state_dir / "status.json", self.status())

    # ---- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until stopped. Returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, lambda *_: self.stop())
        atomic_write_json(self.state_dir / "service.pid", {"pid": os.getpid()})
        threads = [
            threading.Thread(target=self._update_loop, name="update", daemon=True),
            threading.Thread(target=self._upload_loop, name="upload", daemon=True),
            threading.Thread(target=self._status_loop, name="status", daemon=True),
        ]
        for t in threads:
            t.start()
        log.info("device %s started (runtime %s)", self.cfg.device_id, __version__)
        try:
            while not self._stop.is_set():
                if not self._frame_step():
                    self._stop.wait(self.cfg.source.poll_interval_s)
        finally:
            self.source.persist()
            self.writer.close(timeout=5.0)
            for t in threads:
                t.join(timeout=2.0)
            self.write_status()
            self.store.close()
            self.sink.close()
            if self.bundle is not None:
                self.bundle.close()
            Path(self.state_dir / "service.pid").unlink(missing_ok=True)
        return 0
