"""The device service: what ``leanloop device run`` (and systemd) starts.

One process, a few threads:

- the **frame loop** (main thread) is the hot path: source → pipeline → sink, then a copy is
  *offered* to the store writer, whose bounded queue sheds rather than waits;
- the **update loop** enrolls, heartbeats (with pending update reports), asks the hub for the
  desired bundle and lets the installer (:mod:`runtime.update.installer`, the only writer of
  the slots) stage it off the frame path and hand it to the frame loop, which swaps it in
  *between two frames* with no I/O (no frame is dropped);
- the **upload loop** sends the most valuable stored samples when the gate allows;
- the **status loop** writes ``<state>/status.json`` for ``leanloop status``;
- the **control socket** (:mod:`runtime.control`) answers ``status``, ``rollback`` and
  ``feedback`` for the operator commands.

Trial, commit and rollback are the installer's; a crash in any install state is handled at the
next start by the machine's recovery map. Failures and rollbacks are reported to the hub with
the next heartbeat. Messages to and from the hub are the typed models of :mod:`runtime.protocol`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime import _svc_testhooks
from runtime._atomic import atomic_write_json
from runtime._version import __version__
from runtime.bundle.loader import LoadedBundle
from runtime.bundle.manifest import Ontology
from runtime.config import DeviceConfig
from runtime.control import ControlServer, socket_path
from runtime.errors import ConfigError, HubError, LeanloopError, StoreError, UpdateError
from runtime.feedback_stats import LEDGER_NAME, FeedbackLedger, feedback_summary
from runtime.hubclient import HubClient, load_or_enroll
from runtime.metrics import DeviceMetrics, write_textfile
from runtime.outbox import SENT_DIR, FeedbackOutbox
from runtime.prediction_stream import PREDICTIONS_DIR, PredictionSpool
from runtime.protocol import Heartbeat
from runtime.quarantine import QUARANTINE_DIR, Quarantine
from runtime.sdnotify import Notifier, Watchdog
from runtime.shadow.manager import ShadowManager
from runtime.signal_safe import SignalSafeEvent
from runtime.sinks import FanoutSink, JsonlSink, NullSink, Sink, open_sink
from runtime.sources import Source, open_source, source_key
from runtime.store.remap import remap_store
from runtime.store.writer import open_store_and_writer
from runtime.trust import BundleFetcher
from runtime.update.installer import Installer
from runtime.uploader import Uploader

__all__ = ["DeviceService"]

log = logging.getLogger("leanloop.device")

_START_TIMEOUT_S = 120.0  # EXTEND_TIMEOUT_USEC while loading at start and while stopping
_SOURCE_READY_S = 10.0  # READY waits this long for a live source's first open


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
        # systemd (Type=notify): start-up may load and recover bundles for a while.
        self.notifier = Notifier()
        self.notifier.extend_timeout(_START_TIMEOUT_S)
        self.watchdog = Watchdog(self.notifier)
        self._reload = SignalSafeEvent()  # set by SIGHUP
        self.state_dir = cfg.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop = SignalSafeEvent()  # set by SIGTERM/SIGINT
        # Slots, install machine, hand-over, trial, commit and rollback.
        self.installer = Installer(cfg)
        self.counters: dict[str, Any] = {
            "frames": 0,
            "frame_errors": 0,
            "uploaded": 0,
            "upload_errors": 0,
            "upload_bytes": 0,
        }
        self.latency = _Latency()
        self._started = time.time()
        self._last_remap: dict[str, Any] | None = None  # status: the last ontology remap
        self.installer.start()

        self.store, self.writer = open_store_and_writer(cfg, self.state_dir / "samples")
        # What the device uploaded, and feedback on it waiting for the hub.
        self.outbox = FeedbackOutbox(self.state_dir / SENT_DIR)
        # What the hub refused for good, kept with the reason (never blocks the queue).
        self.quarantine = Quarantine(self.state_dir / QUARANTINE_DIR)
        # Every prediction's metadata, sent in compressed batches by the uploader.
        self.predictions = PredictionSpool(self.state_dir / PREDICTIONS_DIR)
        self.installer.on_commit = self._remap_store  # a new ontology version remaps the store
        if (committed := self.installer.committed_ontologies()) is not None:
            self._remap_store(*committed)  # finishes a remap a crash interrupted (else no-op)
        self.source: Source = self._open_source()
        sink_path = cfg.sink.path or self.state_dir / "results.jsonl"
        sinks: list[tuple[str, Sink]] = [
            ("results", JsonlSink(sink_path) if cfg.sink.type == "jsonl" else NullSink())
        ]
        sinks += [(f"{s.type}{i}", open_sink(s, cfg.device_id)) for i, s in enumerate(cfg.sinks)]
        self.sink = FanoutSink(sinks)
        self.hub: HubClient | None = None
        self.fetcher: BundleFetcher | None = None
        self.uploader: Uploader | None = None
        # shadow hook 1/4: shadow-mode A/B (runtime/shadow); idle until the hub assigns one.
        self.shadow = ShadowManager(cfg, self.installer, self.writer, self.store)
        self.metrics = DeviceMetrics(self.status)  # histograms + a view of status()
        self._textfile_at = 0.0

    @property
    def bundle(self) -> LoadedBundle | None:
        """The bundle the frame loop serves."""
        return self.installer.serving

    # ---- the hot path ------------------------------------------------------------------

    def _frame_step(self) -> bool:
        bundle = self.installer.between_frames()  # a handed-over bundle swaps in here
        if bundle is None:
            return False
        frame = self.source.next()
        if frame is None:
            return False
        frame_id = frame.id
        # Never raises: a frame that cannot be decoded or run is an error result.
        if frame.image is not None:  # cameras and video files give pixels
            image: np.ndarray | None = frame.image
            pred = bundle.pipeline.run(frame.image, frame_id)
        else:
            image, pred = bundle.pipeline.run_encoded(
                frame.data or b"", frame_id, self.cfg.inference.max_frame_pixels
            )
        self.sink.write(pred, frame.ts)
        if self.cfg.hub.url is not None:
            self.predictions.add(pred)
        self.source.done(frame)
        self.counters["frames"] += 1
        self.metrics.observe(pred)
        if pred.error:
            self.counters["frame_errors"] += 1
        else:
            self.latency.add(pred.latency_ms)
            self.writer.offer(image, pred, frame.ts)  # type: ignore[arg-type]
            if self.shadow.active:  # shadow hook 2/4: non-blocking copy (encoded only then)
                self.shadow.offer(frame_id, frame.encoded(), pred)
        # A frame that does not decode is the frame's fault, not the bundle's.
        self.installer.frame_served(failed=pred.error is not None and image is not None)
        return True

    # ---- background loops --------------------------------------------------------------

    def _connect(self) -> bool:
        hub = self.cfg.hub
        if hub.url is None:
            return False
        if self.hub is None:
            self.hub = HubClient(hub.url, timeout_s=hub.timeout_s, fallback_urls=hub.fallback_urls)
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
                self.state_dir / "tuf",
                self.cfg.root,
                hub.url,
                self.hub.token,
                fallback_urls=hub.fallback_urls,
                downloads_dir=self.state_dir / "downloads",
                download=self.cfg.download,
            )
            self.uploader = Uploader.from_settings(
                self.store,
                self.hub,
                self.cfg.upload,  # windows, daily budget, rate cap, resumable parts
                self.state_dir,
                gate=lambda: self.source.idle_for() >= self.cfg.upload.only_when_idle_s,
                ledger=FeedbackLedger(self.state_dir / LEDGER_NAME),
                outbox=self.outbox,
                quarantine=self.quarantine,
                predictions=self.predictions,
            )
        return True

    def _update_once(self) -> None:
        if not self._connect():
            return
        assert self.hub is not None and self.fetcher is not None
        reports = self.installer.reports
        sent = reports.pending()
        self.hub.heartbeat(Heartbeat.model_validate({**self.status(), "events": sent}))
        reports.sent(sent)
        target = self.hub.desired().target
        if self.fetcher.token != self.hub.token:  # a 401 made the client refresh it
            self.fetcher.set_token(self.hub.token)
        if target is not None:
            self.installer.update_to(*target, self.fetcher)

    def _update_loop(self) -> None:
        next_poll = 0.0
        wake = self.installer.wake
        while not self._stop.is_set():
            wake.clear()
            try:
                self.installer.advance()
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.cfg.hub.poll_interval_s
                    # shadow hook 3/4: stage/run/judge the hub's shadow candidate (before the
                    # update check, so a just-committed promotion is reported before desired
                    # is compared).
                    self.shadow.poll(self.hub, self.fetcher, self.installer.busy)
                    self._update_once()
            except LeanloopError as e:
                self.installer.counters["update_errors"] += 1
                self.installer.last_error = str(e)
                log.warning("update check: %s", e)
            except Exception as e:  # a background loop must survive anything
                log.exception("update loop: unexpected %s", e)
            wake.wait(max(0.0, next_poll - time.monotonic()))

    def _upload_loop(self) -> None:
        while not self._stop.wait(self.cfg.upload.interval_s):
            if self.uploader is None:
                continue
            try:
                res = self.uploader.run_once()
                self.counters["uploaded"] += res.sent
                self.counters["upload_errors"] += res.failed
                self.counters["upload_bytes"] += res.wire_bytes
            except LeanloopError as e:
                self.counters["upload_errors"] += 1
                log.warning("upload: %s", e)
            except Exception as e:
                log.exception("upload loop: unexpected %s", e)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.cfg.status_interval_s):
            try:
                self.write_status()
                self.notifier.status(self.status_line())
                self._write_textfile()
            except Exception as e:
                log.warning("status: %s", e)

    def _remap_store(self, old: Ontology, new: Ontology) -> None:
        """An update committed: remap the store and the outbox to a new ontology version."""
        try:
            report = remap_store(self.store, self.outbox, old, new)
            if report is not None:
                self._last_remap = {"ontology": new.id, **report.to_dict()}
        except StoreError as e:  # the bundle stays committed; records keep their old labels
            log.error("could not remap the sample store to the new ontology: %s", e)

    def _write_textfile(self) -> None:
        m = self.cfg.metrics
        if m.textfile is None or time.monotonic() < self._textfile_at:
            return
        self._textfile_at = time.monotonic() + m.interval_s
        write_textfile(m.textfile, self.metrics.exposition())

    def _engines(self) -> dict[str, str]:
        """Which engine runs each model of the serving bundle."""
        b = self.bundle
        return {str(k): str(v) for k, v in b.engines.items()} if b is not None else {}

    def _shadow_status(self) -> dict[str, Any] | None:
        """The candidate, its status, why (e.g. why it waits) and its agreement so far."""
        brief = self.shadow.brief()
        rep = self.shadow.report
        if rep.candidate is None and not brief["reason"]:
            return None
        return {**brief, "agreement": rep.stats.agreement}

    def status_line(self) -> str:
        """One line for ``systemctl status`` (sd_notify STATUS=)."""
        b = self.bundle
        src = self.source.health()
        serving = f"serving {b.manifest.name} v{b.manifest.version}" if b else "no bundle"
        up = time.time() - self._started
        fps = self.counters["frames"] / up if up > 0 else 0.0
        state = self.installer.status().get("update_state", "?")
        return f"{serving}; {fps:.1f} fps; source {src['name']} {src['state']}; update {state}"

    def _reopen_source(self) -> None:
        """SIGHUP: tell systemd we reload, reopen the source (a replaced camera), READY again."""
        self._reload.clear()
        self.notifier.reloading()
        log.info("reload: reopening source %s", self.source.health()["name"])
        self.source.close()
        self.source = self._open_source()
        self._wait_source()
        self.notifier.ready(self.status_line())

    def _open_source(self) -> Source:
        """Open the source, resuming after the last frame a committed store transaction
        decided (the store keeps that cursor with its records: after a kill -9 no frame the
        store already judged is read, hence stored, again)."""
        src = open_source(self.cfg.source, self.state_dir)
        cursor = self.store.source_cursor(source_key(self.cfg.source))
        if cursor is not None:
            src.resume_after(cursor)
        return src

    def _wait_source(self) -> None:
        """Give a live source's first open up to ``_SOURCE_READY_S`` (READY comes after it);
        a stop request ends the wait at once."""
        wait = getattr(self.source, "wait_ready", None)
        if wait is None:
            return
        deadline = time.monotonic() + _SOURCE_READY_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if wait(min(0.25, max(0.0, deadline - time.monotonic()))):
                return
            if getattr(self.source, "tried", False):
                break  # the first open failed; the source keeps retrying on its own
        log.warning("source %s not open yet; retrying", self.source.health()["name"])

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        up = time.time() - self._started
        inst = self.installer.status()
        counters = {
            **self.counters,
            **self.installer.counters,
            **(self.fetcher.counters if self.fetcher else {}),
        }
        return {
            "device_id": self.cfg.device_id,
            "runtime_version": __version__,
            "pid": os.getpid(),
            "time": time.time(),
            "uptime_s": round(up, 1),
            **inst,
            "counters": counters,
            "fps": round(self.counters["frames"] / up, 2) if up > 0 else 0.0,
            "latency_ms": {"p50": self.latency.pct(0.5), "p99": self.latency.pct(0.99)},
            "store": self.store.stats(),
            "writer": self.writer.stats(),
            "source_idle_s": round(self.source.idle_for(), 2),
            "source": self.source.health(),
            "sinks": self.sink.stats(),
            "engines": self._engines(),
            "download": self.fetcher.progress() if self.fetcher is not None else None,
            "shadow": self._shadow_status(),
            "feedback": feedback_summary(self.store, self.state_dir),
            "upload": self.uploader.status() if self.uploader is not None else None,
            "quarantine": self.quarantine.summary(),
            "ontology_remap": self._last_remap,
        }

    def _feedback(self, req: dict[str, Any]) -> dict[str, Any]:
        """Control socket: confirm or correct a stored sample (through the service's store)."""
        from runtime.operator import give_feedback

        sample_id, label, who, item = (req.get(k) for k in ("id", "label", "who", "item"))
        if not isinstance(sample_id, str) or not sample_id:
            raise ConfigError("feedback: 'id' (a sample id) is required")
        if label is not None and not isinstance(label, str):
            raise ConfigError("feedback: 'label' must be a string")
        if item is not None and (not isinstance(item, int) or isinstance(item, bool)):
            raise ConfigError("feedback: 'item' must be an integer")
        return give_feedback(
            self.state_dir,
            self.cfg.store.max_bytes,
            sample_id,
            label,
            str(who or "operator"),
            item,
            store=self.store,
            outbox=self.outbox,
        )

    def _mark_good(self, req: dict[str, Any]) -> dict[str, Any]:
        """Control socket: let a held-back (or failed) version be installed again."""
        version, bundle = req.get("version"), req.get("bundle")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ConfigError("mark_good: 'version' must be a non-negative integer")
        if bundle is not None and not isinstance(bundle, str):
            raise ConfigError("mark_good: 'bundle' must be a string")
        return {"message": self.installer.request_mark_good(version, bundle)}

    def write_status(self) -> None:
        atomic_write_json(self.state_dir / "status.json", self.status())

    # ---- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self.installer.wake.set()  # the update thread waits on it, not on _stop

    def run(self) -> int:
        """Serve until stopped. Returns the process exit code."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        atomic_write_json(self.state_dir / "service.pid", {"pid": os.getpid()})
        control = ControlServer(
            socket_path(self.state_dir),
            {
                "status": lambda req: self.status(),
                "rollback": lambda req: {"message": self.installer.request_rollback()},
                "feedback": self._feedback,
                "mark_good": self._mark_good,
                "metrics": lambda req: {"text": self.metrics.exposition()},
            },
        )
        control.start()
        threads = [
            threading.Thread(target=self._update_loop, name="update", daemon=True),
            threading.Thread(target=self._upload_loop, name="upload", daemon=True),
            threading.Thread(target=self._status_loop, name="status", daemon=True),
        ]
        for t in threads:
            t.start()
        log.info("device %s started (runtime %s)", self.cfg.device_id, __version__)
        self._wait_source()
        log.info("ready: %s", self.status_line())
        self.notifier.ready(self.status_line())
        try:
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reopen_source()
                try:
                    busy = self._frame_step()
                except Exception:  # nothing a frame does may stop the device
                    self.counters["frame_errors"] += 1
                    log.exception("frame loop: unexpected error; going on")
                    busy = False
                if not busy and (self.bundle is None or not self.source.waits):
                    self._stop.wait(self.cfg.source.poll_interval_s)
                self.watchdog.progress()  # frame-loop progress, not a timer
                _svc_testhooks.maybe_hang(self.counters["frames"], time.time() - self._started)
        finally:
            log.info("stopping")
            self.notifier.stopping()
            self.notifier.extend_timeout(_START_TIMEOUT_S / 4)
            control.close()
            self.source.close()
            self.shadow.close()  # shadow hook 4/4: stop the candidate's worker
            self.writer.close(timeout=5.0)
            for t in threads:
                t.join(timeout=2.0)
            self.write_status()
            self.store.close()
            self.outbox.close()
            with contextlib.suppress(OSError):
                self.predictions.seal()  # what was not sealed yet goes next start
            self.sink.close()
            self.installer.close()
            Path(self.state_dir / "service.pid").unlink(missing_ok=True)
        return 0
