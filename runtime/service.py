"""The device service: what ``leanloop device run`` (and systemd) starts.

One process, a few threads:

- the **frame loop** (main thread) is the hot path: source → pipeline → sink, then a copy is
  *offered* to the store writer, whose bounded queue sheds rather than waits;
- the **update loop** enrolls, heartbeats (with pending update reports), asks the hub for the
  desired bundle and walks the install state machine (:mod:`runtime.update.machine`, each state
  stored before it is entered): fetch through TUF into the inactive slot, verify and fsync,
  load, golden health check — all off the frame path — then store the switch and hand the
  loaded bundle to the frame loop, which swaps it in *between two frames* with no I/O (no frame
  is dropped; models + pipeline + ontology switch together);
- the **upload loop** sends the most valuable stored samples when the gate allows;
- the **status loop** writes ``<state>/status.json`` for ``leanloop status``;
- the **control socket** (:mod:`runtime.control`) answers ``status``, ``rollback`` and
  ``feedback`` for the operator commands.

After a swap the new bundle is on *trial* for ``update.trial_frames`` frames (or
``update.trial_s`` seconds) while the old one stays loaded; an error rate above
``update.trial_max_error_rate`` swaps straight back and the update thread stores the rollback.
A crash in any state is handled at the next start by the machine's recovery map. Failures and
rollbacks are reported to the hub with the next heartbeat.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from runtime._atomic import atomic_write_json, fsync_dir
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime._version import __version__
from runtime.backends.base import BackendOptions
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import LoadedBundle, load_bundle, verify_bundle_dir
from runtime.bundle.manifest import Manifest
from runtime.config import DeviceConfig
from runtime.control import ControlServer, socket_path
from runtime.errors import (
    BackendError,
    BundleError,
    ConfigError,
    FrameError,
    HubError,
    LeanloopError,
    PipelineError,
    TrustError,
    UpdateError,
)
from runtime.feedback_stats import LEDGER_NAME, FeedbackLedger, feedback_summary
from runtime.hubclient import HubClient, load_or_enroll
from runtime.outbox import SENT_DIR, FeedbackOutbox
from runtime.pipeline.prediction import Prediction
from runtime.pipeline.preprocess import decode_image
from runtime.shadow.manager import ShadowManager
from runtime.sources import FolderSource, JsonlSink, NullSink
from runtime.store.writer import open_store_and_writer
from runtime.trust import BundleFetcher
from runtime.update import _testhooks
from runtime.update.machine import AT_REST, Event, InstallMachine, InstallState
from runtime.update.slots import SlotName, Slots
from runtime.uploader import Uploader

__all__ = ["DeviceService"]

log = logging.getLogger("leanloop.device")

_OPERATOR = "operator rollback"
_BLOCK = 4096
_SPACE_MARGIN = 2 * _BLOCK
_MAX_REPORTS = 50


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _free_or_none(slots: Slots) -> int | None:
    try:
        return slots.free_bytes()
    except OSError:
        return None


def _fsync_tree(root: Path) -> None:
    """Flush every file of a staged slot and its folders (the slot must survive a power cut)."""
    dirs = [root]
    for p in root.rglob("*"):
        if p.is_dir():
            dirs.append(p)
        else:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in dirs:
        fsync_dir(d)


class _Request:
    """A control-socket request the update thread answers."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None
        self.result = ""
        self.cancelled = False

    def answer(self, error: str | None, result: str) -> None:
        self.error, self.result = error, result
        self.done.set()


class _Reports:
    """Update outcomes (failures, rollbacks) waiting to reach the hub with the next heartbeat.

    Kept in ``<state>/reports.json`` (atomic) so a rollback decided at start-up after a crash
    is still reported; each has an id so the hub ignores a report sent twice. Bounded: the
    oldest are dropped past ``_MAX_REPORTS``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            data = json.loads(read_bounded(path, MAX_STATE_BYTES))
            self._items: list[dict[str, Any]] = [d for d in data if isinstance(d, dict)]
        except (OSError, ValueError, TypeError):
            self._items = []

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._items.append({"id": uuid.uuid4().hex, "time": time.time(), **event})
            del self._items[:-_MAX_REPORTS]
            atomic_write_json(self.path, self._items)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def sent(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        ids = {d["id"] for d in items}
        with self._lock:
            self._items = [d for d in self._items if d["id"] not in ids]
            atomic_write_json(self.path, self._items)


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
        self.machine = InstallMachine(self.slots, cfg.update.max_crash_restarts)
        self.reports = _Reports(self.state_dir / "reports.json")
        self.options = BackendOptions(threads=cfg.inference.threads)
        self.bundle: LoadedBundle | None = None
        # Handed from the update thread to the frame loop: ("update" | "rollback", bundle).
        self._next: tuple[str, LoadedBundle] | None = None
        self._old: LoadedBundle | None = None  # the bundle a trial would fall back to
        self._trial: dict[str, float] | None = None
        self._abort_trial: str | None = None
        self._frame_events: list[tuple[str, str]] = []
        self._retired: list[LoadedBundle] = []
        self._wake = threading.Event()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._rollback_req: _Request | None = None
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
        self._failed: dict[tuple[str, int], float] = {}
        self.latency = _Latency()
        self._started = time.time()
        got = self.machine.recover()
        if got is not None:
            self.last_update_error = got.message
            if got.rolled_back or got.crash_loop:
                self.counters["rollbacks"] += int(got.rolled_back)
                cause = "crash_loop" if got.crash_loop else f"crash_in_{got.interrupted.value}"
                self._report(
                    "rolled_back" if got.rolled_back else "update_failed",
                    cause,
                    got.bundle,
                    got.version,
                    got.message,
                )
        for line in self.slots.recover():
            log.warning("recovery: %s", line)
        self._load_active()

        self.store, self.writer = open_store_and_writer(cfg, self.state_dir / "samples")
        # What the device uploaded, and feedback on it waiting for the hub.
        self.outbox = FeedbackOutbox(self.state_dir / SENT_DIR)
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
        # shadow hook 1/5: shadow-mode A/B (runtime/shadow); idle until the hub assigns one.
        self.shadow = ShadowManager(cfg, self.slots, self.writer, self.store, self._handoff)

    # ---- bundle activation -------------------------------------------------------------

    def _load_active(self) -> None:
        """Load the active slot at start; fall back to the previous slot if it cannot load."""
        while self.slots.active_dir is not None:
            try:
                self.bundle = load_bundle(
                    self.slots.active_dir, self.cfg.inference.backend, self.options
                )
                return
            except LeanloopError as e:
                log.error("active bundle does not load: %s", e)
                act = self.slots.state.active
                info = self.slots.info(act)  # type: ignore[arg-type]
                reason = f"does not load at start: {e}"
                self.machine.begin_rollback(reason, require_previous=False)
                self.machine.finish_rollback()
                self.counters["rollbacks"] += 1
                self._report("rolled_back", "load_failed", info.bundle, info.version, reason)
        self.bundle = None

    def _handoff(self, slot: SlotName, loaded: LoadedBundle) -> None:
        """shadow hook 2/5: a promoted shadow candidate takes the normal install path.

        The candidate is already staged in the inactive ``slot`` (fetched and verified through
        TUF) and loaded and health-checked by the shadow manager, on this (update) thread. The
        install machine records each of those steps as done, stores the switch, and the frame
        loop swaps at the next frame: trial → commit, or rollback, like any update. Raises
        UpdateError when an update is already in progress.
        """
        m = self.machine
        info = self.slots.info(slot)
        if info.bundle is None or info.version is None:
            raise UpdateError(f"shadow candidate slot {slot} holds no staged bundle")
        m.start(info.bundle, info.version, slot, apply=lambda: None)
        for ev in (Event.FETCHED, Event.VERIFIED, Event.LOADED):
            m.fire(ev)
        m.fire(Event.HEALTHY, apply=lambda: self.slots.mark_staged_nosave(slot))
        m.fire(Event.HANDED_OVER, apply=lambda: self.slots.activate_nosave(slot))
        with self._lock:
            self._next = ("update", loaded)

    def _swap_if_ready(self) -> None:
        """Between two frames: switch to a bundle the update thread prepared (no I/O here)."""
        with self._lock:
            nxt, self._next = self._next, None
        if nxt is None:
            return
        kind, loaded = nxt
        old, self.bundle = self.bundle, loaded
        if kind == "update":
            # The old bundle stays loaded during the trial: a failed trial swaps straight back.
            self._old = old
            self._trial = {"frames": 0, "errors": 0, "t0": time.monotonic()}
            log.info("serving %s v%s (trial)", loaded.manifest.name, loaded.manifest.version)
        else:
            self._retire(old)
            log.info("serving %s v%s (rollback)", loaded.manifest.name, loaded.manifest.version)
        self._post(kind + "_swapped", "")

    def _retire(self, bundle: LoadedBundle | None) -> None:
        """Hand a bundle the frame loop no longer uses to the update thread, which closes it."""
        if bundle is not None:
            with self._lock:
                self._retired.append(bundle)

    def _post(self, kind: str, reason: str) -> None:
        with self._lock:
            self._frame_events.append((kind, reason))
        self._wake.set()

    def _end_trial(self, ok: bool, reason: str) -> None:
        """Frame loop: end the trial in memory; the update thread stores the outcome."""
        self._trial = None
        if ok:
            self._retire(self._old)
            self._old = None
            self._post("trial_passed", reason)
            return
        bad, self.bundle, self._old = self.bundle, self._old, None
        self._retire(bad)
        log.error("trial failed (%s); rolling back", reason)
        self._post("trial_failed", reason)

    # ---- the hot path ------------------------------------------------------------------

    def _judge_trial(self) -> None:
        """End the trial when it has seen enough frames or lasted long enough."""
        t = self._trial
        if t is None:
            return
        if self._abort_trial is not None:
            reason, self._abort_trial = self._abort_trial, None
            self._end_trial(False, reason)
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
            self.shadow.offer(frame_id, data, pred)  # shadow hook 3/5: non-blocking copy
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
                self.state_dir / "tuf",
                self.cfg.root,
                hub.url,
                self.hub.token,
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
            )
        return True

    def _update_once(self) -> None:
        if not self._connect():
            return
        assert self.hub is not None and self.fetcher is not None
        status = self.status()
        sent = self.reports.pending()
        status["events"] = sent
        self.hub.heartbeat(status)
        self.reports.sent(sent)
        name, version = self.hub.desired()
        if self.fetcher.token != self.hub.token:  # a 401 made the client refresh it
            self.fetcher.set_token(self.hub.token)
        if name is None or version is None:
            return
        if self.machine.state not in AT_REST:
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

    def _check_space(self, manifest: Manifest, skipped: set[str]) -> None:
        """Refuse before writing when the slot folder cannot hold the planned files."""
        if not _testhooks.space_check_enabled():
            return
        # Files take whole blocks; the manifest and the skip list take one or two more.
        sizes = [f.size for rel, f in manifest.files.items() if rel not in skipped]
        need = sum(-(-n // _BLOCK) * _BLOCK for n in sizes) + _SPACE_MARGIN
        free = self.slots.free_bytes()
        if need > free:
            raise UpdateError(
                f"not enough space for {manifest.name} v{manifest.version}: needs "
                f"{need} bytes, {free} free in {self.slots.root / 'slots'}"
            )

    def _stage(self, name: str, version: int) -> None:
        """Fetch, verify, load and health-check ``name`` ``version`` in the inactive slot, then
        store the switch and hand the loaded bundle to the frame loop. Each step is an install
        state stored before it starts; any failure wipes the inactive slot (the active one was
        never touched) and ends in ``failed``."""
        assert self.fetcher is not None
        m = self.machine
        slot = self.slots.inactive()
        m.start(name, version, slot, lambda: self.slots.begin_staging_nosave(name, version))
        loaded: LoadedBundle | None = None
        cause = "download"
        try:
            dest = self.slots.prepare_dir(slot)
            reuse = [self.slots.active_dir] if self.slots.active_dir else []
            res = self.fetcher.fetch(
                name,
                version,
                dest,
                reuse_dirs=reuse,
                backend=self.cfg.inference.backend,
                check_plan=self._check_space,
            )
            self.counters["bytes_downloaded"] += res.downloaded_bytes
            m.fire(Event.FETCHED)
            cause = "verify"
            verify_bundle_dir(dest)
            _fsync_tree(dest)
            m.fire(Event.VERIFIED)
            cause = "load_failed"
            loaded = load_bundle(dest, self.cfg.inference.backend, self.options, verify=False)
            m.fire(Event.LOADED)
            cause = "health_check_failed"
            run_health_check(loaded)
            m.fire(Event.HEALTHY, apply=lambda: self.slots.mark_staged_nosave(slot))
        except Exception as e:  # any failure must end the update in ``failed``
            if loaded is not None:
                loaded.close()
            if not isinstance(e, LeanloopError | OSError):
                log.exception("staging: unexpected %s", type(e).__name__)
                e = UpdateError(f"unexpected {type(e).__name__} while staging: {_one_line(e)}")
            if isinstance(e, OSError):
                what = "disk full" if e.errno == errno.ENOSPC else "cannot write"
                e = UpdateError(f"{what} while staging in {self.slots.dir(slot)}: {e.strerror}")
                cause = "disk_full" if "disk full" in str(e) else "write_failed"
            deterministic = isinstance(e, BundleError | BackendError | PipelineError) and not (
                isinstance(e, TrustError)
            )
            reason = f"{name} v{version} refused: {_one_line(e)}"
            m.fire(
                Event.FAIL,
                apply=lambda: self.slots.discard_nosave(slot, bad=deterministic),
                reason=reason,
            )
            self.counters["update_errors"] += 1
            self.last_update_error = reason
            self._failed[(name, version)] = time.monotonic() + 10 * self.cfg.hub.poll_interval_s
            self._report("update_failed", cause, name, version, reason)
            log.error("update refused: %s", reason)
            return
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
        # Store the switch (slot active, on trial) first; the frame loop swaps at the next frame.
        m.fire(Event.HANDED_OVER, apply=lambda: self.slots.activate_nosave(slot))
        with self._lock:
            self._next = ("update", loaded)

    def _advance(self) -> None:
        """Update thread: store what the frame loop did, close retired bundles, serve requests."""
        with self._lock:
            events, self._frame_events = self._frame_events, []
            retired, self._retired = self._retired, []
        m = self.machine
        for kind, reason in events:
            if kind == "update_swapped":
                m.fire(Event.SWAPPED)
                self.counters["updates"] += 1
            elif kind == "trial_passed":
                m.fire(Event.TRIAL_PASSED)
                m.fire(Event.COMMIT_DONE, apply=self.slots.commit_nosave)
                log.info("committed %s v%s", m.record.bundle, m.record.version)
                if self._rollback_req is not None:  # asked during the trial, which passed first
                    req, self._rollback_req, self._abort_trial = self._rollback_req, None, None
                    self._start_operator_rollback(req)
            elif kind == "trial_failed":
                rec = m.record
                m.fire(Event.TRIAL_FAILED, reason=f"trial failed: {reason}")
                m.finish_rollback()
                self.counters["rollbacks"] += 1
                self.last_update_error = f"{rec.bundle} v{rec.version} trial failed: {reason}"
                operator = reason == _OPERATOR
                self._report(
                    "rolled_back",
                    "operator" if operator else "trial_failed",
                    rec.bundle,
                    rec.version,
                    self.last_update_error,
                )
                self._answer_rollback(None)
            elif kind == "rollback_swapped":
                self._answer_rollback(None)
        for b in retired:
            b.close()
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                break
            self._start_operator_rollback(req)

    def _answer_rollback(self, error: str | None) -> None:
        req, self._rollback_req = self._rollback_req, None
        if req is None:
            return
        act = self.slots.state.active
        info = self.slots.info(act) if act else None
        req.answer(
            error,
            f"rolled back to {info.bundle} v{info.version} (slot {act})" if info else "",
        )

    def _start_operator_rollback(self, req: _Request) -> None:
        if req.cancelled:
            return
        if self._rollback_req is not None:
            req.answer("a rollback is already in progress", "")
            return
        m = self.machine
        if m.state is InstallState.TRIAL:
            self._rollback_req = req
            self._abort_trial = _OPERATOR
            return
        try:
            prev = m.begin_rollback(_OPERATOR)
        except UpdateError as e:
            req.answer(str(e), "")
            return
        assert prev is not None
        rec = m.record
        try:
            loaded = load_bundle(self.slots.dir(prev), self.cfg.inference.backend, self.options)
        except LeanloopError as e:
            m.fire(Event.FAIL, reason=f"previous bundle does not load: {_one_line(e)}")
            req.answer(f"cannot roll back: the previous bundle does not load: {e}", "")
            return
        m.finish_rollback()
        self.counters["rollbacks"] += 1
        self._report("rolled_back", "operator", rec.bundle, rec.version, _OPERATOR)
        self._rollback_req = req
        with self._lock:
            self._next = ("rollback", loaded)
        self._wake.set()

    def request_rollback(self, timeout: float = 30.0) -> str:
        """Control socket: roll back between two frames. Raises UpdateError."""
        state = self.machine.state
        if state not in AT_REST and state is not InstallState.TRIAL:
            raise UpdateError(
                f"an update is in progress ({state.value}); try again when it is done"
            )
        req = _Request()
        self._requests.put(req)
        self._wake.set()
        if not req.done.wait(timeout):
            req.cancelled = True  # the update thread drops it if it has not started it yet
            raise UpdateError(f"rollback did not finish within {timeout:.0f} s")
        if req.error:
            raise UpdateError(req.error)
        return req.result

    def _report(
        self, kind: str, cause: str, bundle: str | None, version: int | None, reason: str
    ) -> None:
        self.reports.add(
            {"kind": kind, "cause": cause, "bundle": bundle, "version": version, "reason": reason}
        )

    def _update_loop(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._advance()
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.cfg.hub.poll_interval_s
                    # shadow hook 4/5: stage/run/judge the hub's shadow candidate (before the
                    # update check, so a just-committed promotion is reported before desired
                    # is compared).
                    busy = self.machine.state not in AT_REST or self._next is not None
                    self.shadow.poll(self.hub, self.fetcher, busy)
                    self._update_once()
            except LeanloopError as e:
                self.counters["update_errors"] += 1
                self.last_update_error = str(e)
                log.warning("update check: %s", e)
            except Exception as e:  # a background loop must survive anything
                log.exception("update loop: unexpected %s", e)
            self._wake.wait(max(0.0, next_poll - time.monotonic()))

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
            "update_state": self.machine.state.value,
            "install": {
                "state": self.machine.state.value,
                "bundle": self.machine.record.bundle,
                "version": self.machine.record.version,
                "crashes": self.machine.record.crashes,
                "reason": self.machine.record.reason,
            },
            "slots_free_bytes": _free_or_none(self.slots),
            "pending_reports": len(self.reports.pending()),
            "last_update_error": self.last_update_error,
            "counters": {**self.counters, **(self.fetcher.counters if self.fetcher else {})},
            "fps": round(self.counters["frames"] / up, 2) if up > 0 else 0.0,
            "latency_ms": {"p50": self.latency.pct(0.5), "p99": self.latency.pct(0.99)},
            "store": self.store.stats(),
            "writer": self.writer.stats(),
            "source_idle_s": round(self.source.idle_for(), 2),
            "feedback": feedback_summary(self.store, self.state_dir),
            "upload": self.uploader.status() if self.uploader is not None else None,
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
        control = ControlServer(
            socket_path(self.state_dir),
            {
                "status": lambda req: self.status(),
                "rollback": lambda req: {"message": self.request_rollback()},
                "feedback": self._feedback,
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
        try:
            while not self._stop.is_set():
                if not self._frame_step():
                    self._stop.wait(self.cfg.source.poll_interval_s)
        finally:
            control.close()
            self.source.persist()
            self.shadow.close()  # shadow hook 5/5: stop the candidate's worker
            self.writer.close(timeout=5.0)
            for t in threads:
                t.join(timeout=2.0)
            self.write_status()
            self.store.close()
            self.outbox.close()
            self.sink.close()
            for b in (self.bundle, self._old):
                if b is not None:
                    b.close()
            Path(self.state_dir / "service.pid").unlink(missing_ok=True)
        return 0
