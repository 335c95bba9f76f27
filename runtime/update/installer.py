"""The installer: the only writer of the device's bundle slots.

Every change to ``<state>/slots`` and ``slots.json`` goes through :class:`Installer`, and every
one of them is an install-machine transition (:mod:`runtime.update.machine`: stored before it
is entered, recovered at start-up by one map):

- **update** (:meth:`Installer.update_to`, update thread): fetch through TUF into the inactive
  slot, verify and fsync, load, golden health check — all off the frame path — then store the
  switch and hand the loaded bundle to the frame loop;
- **hand-over and trial** (:meth:`Installer.between_frames`, frame loop): the frame loop swaps
  the handed bundle in *between two frames* with no I/O (models + pipeline + ontology switch
  together); the new bundle is then on trial for ``update.trial_frames`` frames (or
  ``update.trial_s`` seconds) while the old one stays loaded, and an error rate above
  ``update.trial_max_error_rate`` swaps straight back;
- **commit and rollback** (:meth:`Installer.advance`, update thread): what the frame loop did
  arrives as typed :class:`FrameEvent` s and is stored (commit, or rollback with its report);
  the operator's rollback (:meth:`Installer.request_rollback`, control socket) is served here
  too, between two frames;
- **shadow candidates** (:meth:`Installer.stage_candidate`, :meth:`Installer.promote`): the
  shadow manager stages its candidate through the same machine (``downloading → verifying →
  shadow_staged``) and a promotion takes the ordinary hand-over and trial;
- **the operator with the service stopped** (:func:`rollback_offline`,
  :func:`mark_good_offline`, called by :mod:`runtime.operator`): the same transitions on the
  state folder.

The frame loop and the update thread meet in :mod:`runtime.update.handover` (the hand-over,
the frame events, the trial; no slot is written there); the checks around a staged slot folder
(space, hashes, fsync, what a failure means) are :mod:`runtime.update._staging`. Failures and
rollbacks are queued for the hub (:mod:`runtime.update.reports`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from runtime.backends.base import BackendOptions
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import LoadedBundle, load_bundle
from runtime.bundle.manifest import Manifest, Ontology
from runtime.config import DeviceConfig
from runtime.errors import ConfigError, LeanloopError, UpdateError, first_line
from runtime.protocol import ReportKind
from runtime.update._staging import check_space, deterministic, staging_error, verify_staged
from runtime.update.handover import FrameEvent, FrameEventKind, Handover, Swap, SwapKind
from runtime.update.machine import AT_REST, Event, InstallMachine, InstallState
from runtime.update.reports import UpdateReports
from runtime.update.slots import SlotName, Slots

__all__ = [
    "OPERATOR_ROLLBACK",
    "FrameEvent",
    "FrameEventKind",
    "Installer",
    "Swap",
    "SwapKind",
]

log = logging.getLogger("leanloop.update")

OPERATOR_ROLLBACK = "operator rollback"


def mark_good_message(bundle: str, version: int, found: bool) -> str:
    if found:
        return f"{bundle} v{version} marked good: the device installs it when the hub desires it"
    return f"{bundle} v{version} was neither held back nor marked bad here: nothing to do"


def rollback_offline(state_dir: Path) -> str:
    """The operator's rollback with the service stopped (its caller checked): settle an
    interrupted update as a start would, then the same persisted rollback transitions the
    service runs. Returns what it did. Raises UpdateError (nothing to roll back to)."""
    slots = Slots(state_dir)
    machine = InstallMachine(slots)
    machine.recover()  # what the service would do at start: settle an interrupted update first
    slots.recover()
    machine.begin_rollback("operator rollback (service stopped)", by_operator=True)
    slot = machine.finish_rollback()
    assert slot is not None  # begin_rollback checked there is a committed previous slot
    i = slots.info(slot)
    return f"rolled back to {i.bundle} v{i.version} (slot {slot})"


def mark_good_offline(state_dir: Path, version: int, bundle: str | None = None) -> str:
    """The operator's mark-good with the service stopped (its caller checked): ``bundle``
    (default: the active one) ``version`` may be installed again. Raises ConfigError."""
    slots = Slots(state_dir)
    if bundle is None:
        act = slots.state.active
        bundle = slots.info(act).bundle if act else None
        if bundle is None:
            raise ConfigError("no active bundle: say which bundle (--bundle)")
    found = slots.mark_good_nosave(bundle, version)
    if found:
        slots.save(f"operator marked {bundle} v{version} good (service stopped)")
    return mark_good_message(bundle, version, found)


class _RollbackRequest:
    """An operator request (a rollback, or mark-good) the update thread answers."""

    def __init__(self, mark_good: tuple[str, int] | None = None) -> None:
        self.mark_good = mark_good
        self.done = threading.Event()
        self.error: str | None = None
        self.result = ""
        self.cancelled = False

    def answer(self, error: str | None, result: str) -> None:
        self.error, self.result = error, result
        self.done.set()


class Fetcher(Protocol):
    """What the installer needs of :class:`runtime.trust.BundleFetcher`."""

    def fetch(
        self,
        name: str,
        version: int,
        dest: Path,
        reuse_dirs: list[Path] | None = ...,
        backend: Any = ...,
        check_plan: Callable[[Manifest, set[str]], None] | None = ...,
    ) -> Any: ...


class Installer:
    """Slots, install machine, hand-over and trial of one device (see the module story)."""

    def __init__(self, cfg: DeviceConfig) -> None:
        self.cfg = cfg
        self.slots = Slots(cfg.state_dir)
        """Read it freely; write it only through this class."""
        self.machine = InstallMachine(self.slots, cfg.update.max_crash_restarts)
        self.reports = UpdateReports(cfg.state_dir / "reports.json")
        self.options = BackendOptions(threads=cfg.inference.threads)
        self.counters: dict[str, int] = {
            "bytes_downloaded": 0,
            "updates": 0,
            "rollbacks": 0,
            "update_errors": 0,
        }
        self.last_error: str | None = None
        self._frames = Handover(cfg.update)
        self.wake = self._frames.wake  # set when the update thread has something to store
        self._requests: queue.Queue[_RollbackRequest] = queue.Queue()
        self._rollback_req: _RollbackRequest | None = None
        self._failed: dict[tuple[str, int], float] = {}
        self.on_commit: Callable[[Ontology, Ontology], None] | None = None
        """Called on the update thread when an update commits: (old ontology, new ontology)."""

    @property
    def serving(self) -> LoadedBundle | None:
        """The bundle the frame loop serves (frame loop only)."""
        return self._frames.serving

    # ---- start-up ------------------------------------------------------------------------

    def start(self) -> LoadedBundle | None:
        """Recover from whatever the last run left, then load the active slot (falling back to
        the previous one if it cannot load). Returns the bundle to serve."""
        got = self.machine.recover()
        if got is not None:
            self.last_error = got.message
            if got.rolled_back or got.crash_loop:
                self.counters["rollbacks"] += int(got.rolled_back)
                cause = "crash_loop" if got.crash_loop else f"crash_in_{got.interrupted.value}"
                kind = ReportKind.ROLLED_BACK if got.rolled_back else ReportKind.UPDATE_FAILED
                self.reports.add(kind, cause, got.bundle, got.version, got.message)
        rec = self.machine.record
        keep = rec.slot if rec.state is InstallState.SHADOW_STAGED else None
        for line in self.slots.recover(keep=keep):
            log.warning("recovery: %s", line)
        self._frames.serving = self._load_active()
        return self._frames.serving

    def _load_active(self) -> LoadedBundle | None:
        while self.slots.active_dir is not None:
            try:
                return load_bundle(self.slots.active_dir, self.cfg.inference.backend, self.options)
            except LeanloopError as e:
                log.error("active bundle does not load: %s", e)
                info = self.slots.info(self.slots.state.active)  # type: ignore[arg-type]
                reason = f"does not load at start: {e}"
                self.machine.begin_rollback(reason, require_previous=False)
                self.machine.finish_rollback()
                self.counters["rollbacks"] += 1
                self.reports.add(
                    ReportKind.ROLLED_BACK, "load_failed", info.bundle, info.version, reason
                )
        return None

    def committed_ontologies(self) -> tuple[Ontology, Ontology] | None:
        """(previous, active) ontologies when the active bundle is committed and a previous
        committed one is kept: what a start-up remap needs after a crash between the commit
        and the remap (:attr:`on_commit`)."""
        from runtime.bundle.loader import read_manifest

        st = self.slots.state
        if st.active is None or st.previous is None:
            return None
        if st.slots[st.active].status != "committed":
            return None
        try:
            prev = read_manifest(self.slots.dir(st.previous)).ontology
            cur = read_manifest(self.slots.dir(st.active)).ontology
        except LeanloopError:
            return None
        return prev, cur

    # ---- frame loop ----------------------------------------------------------------------

    def between_frames(self) -> LoadedBundle | None:
        """Frame loop, between two frames: swap in a handed-over bundle (no I/O) and judge the
        trial. Returns the bundle to serve the next frame with (None: nothing to serve)."""
        return self._frames.between_frames()

    def frame_served(self, failed: bool) -> None:
        """Frame loop: count a served frame for the trial (``failed``: the bundle failed it)."""
        self._frames.frame_served(failed)

    # ---- update thread -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """An update is in flight (staging, handed over, on trial, rolling back)."""
        return self._frames.handed or self.machine.state not in AT_REST

    def advance(self) -> None:
        """Update thread: store what the frame loop did, close retired bundles, serve
        operator rollbacks."""
        events, retired = self._frames.take()
        m = self.machine
        for ev in events:
            if ev.kind is FrameEventKind.UPDATE_SWAPPED:
                m.fire(Event.SWAPPED)
                self.counters["updates"] += 1
            elif ev.kind is FrameEventKind.TRIAL_PASSED:
                m.fire(Event.TRIAL_PASSED)
                m.fire(Event.COMMIT_DONE, apply=self.slots.commit_nosave)
                log.info("committed %s v%s", m.record.bundle, m.record.version)
                swapped = self._frames.take_swapped_ontology()
                if self.on_commit is not None and swapped is not None:
                    self.on_commit(*swapped)
                if self._rollback_req is not None:  # asked during the trial, which passed first
                    req, self._rollback_req = self._rollback_req, None
                    self._frames.abort_trial = None
                    self._start_operator_rollback(req)
            elif ev.kind is FrameEventKind.TRIAL_FAILED:
                rec = m.record
                rec.by_operator = ev.reason == OPERATOR_ROLLBACK  # stored with the next state
                m.fire(Event.TRIAL_FAILED, reason=f"trial failed: {ev.reason}")
                m.finish_rollback()
                self.counters["rollbacks"] += 1
                self.last_error = f"{rec.bundle} v{rec.version} trial failed: {ev.reason}"
                operator = ev.reason == OPERATOR_ROLLBACK
                self.reports.add(
                    ReportKind.ROLLED_BACK,
                    "operator" if operator else "trial_failed",
                    rec.bundle,
                    rec.version,
                    self.last_error,
                )
                self._answer_rollback(None)
            elif ev.kind is FrameEventKind.ROLLBACK_SWAPPED:
                self._answer_rollback(None)
        for b in retired:
            b.close()
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                break
            self._start_operator_rollback(req)

    def update_to(self, name: str, version: int, fetcher: Fetcher) -> None:
        """Install ``name`` ``version`` unless it is what runs, an update is in flight, it
        failed a moment ago, or the slots refuse it (older, failed here before)."""
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
        if self.slots.is_held(name, version):
            return  # the operator rolled back from it: status says so; mark-good lifts it
        try:
            self.slots.check_version(name, version)
        except UpdateError as e:
            self.last_error = str(e)
            self._back_off(name, version)
            return
        self._stage(name, version, fetcher)

    def _back_off(self, name: str, version: int) -> None:
        self._failed[(name, version)] = time.monotonic() + 10 * self.cfg.hub.poll_interval_s

    def _check_space(self, manifest: Manifest, skipped: set[str]) -> None:
        """Refuse before writing when the slot folder cannot hold the planned files."""
        check_space(manifest, skipped, self.slots.free_bytes, self.slots.root / "slots")

    def _fetch_into(self, fetcher: Fetcher, name: str, version: int, slot: SlotName) -> Any:
        """Fetch (TUF) into ``slot``; fires FETCHED. Returns the fetch result."""
        dest = self.slots.prepare_dir(slot)
        reuse = [self.slots.active_dir] if self.slots.active_dir else []
        res = fetcher.fetch(
            name,
            version,
            dest,
            reuse_dirs=reuse,
            backend=self.cfg.inference.backend,
            check_plan=self._check_space,
        )
        self.counters["bytes_downloaded"] += res.downloaded_bytes
        self.machine.fire(Event.FETCHED)
        return res

    def _verify(self, slot: SlotName) -> None:
        """Every file hashes as the signed manifest says; all of it flushed to disk."""
        verify_staged(self.slots.dir(slot))

    def _stage(self, name: str, version: int, fetcher: Fetcher) -> None:
        """Fetch, verify, load and health-check in the inactive slot, then store the switch
        and hand the loaded bundle to the frame loop. Each step is an install state stored
        before it starts; any failure wipes the inactive slot (the active one was never
        touched) and ends in ``failed``."""
        m = self.machine
        slot = self.slots.inactive()
        m.start(name, version, slot, lambda: self.slots.begin_staging_nosave(name, version))
        loaded: LoadedBundle | None = None
        cause = "download"
        try:
            res = self._fetch_into(fetcher, name, version, slot)
            cause = "verify"
            self._verify(slot)
            m.fire(Event.VERIFIED)
            cause = "load_failed"
            loaded = load_bundle(
                self.slots.dir(slot), self.cfg.inference.backend, self.options, verify=False
            )
            m.fire(Event.LOADED)
            cause = "health_check_failed"
            run_health_check(loaded)
            m.fire(Event.HEALTHY, apply=lambda: self.slots.mark_staged_nosave(slot))
        except Exception as raw:  # any failure must end the update in ``failed``
            if loaded is not None:
                loaded.close()
            e, why = staging_error(raw, self.slots.dir(slot))
            cause = why or cause
            bad = deterministic(e)
            reason = f"{name} v{version} refused: {first_line(e)}"
            m.fire(
                Event.FAIL, apply=lambda: self.slots.discard_nosave(slot, bad=bad), reason=reason
            )
            self.counters["update_errors"] += 1
            self.last_error = reason
            self._back_off(name, version)
            self.reports.add(ReportKind.UPDATE_FAILED, cause, name, version, reason)
            log.error("update refused: %s", reason)
            return
        self.last_error = None
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
        self._frames.hand(Swap(SwapKind.UPDATE, loaded))

    # ---- operator rollback ---------------------------------------------------------------

    def request_rollback(self, timeout: float = 30.0) -> str:
        """Control socket: roll back between two frames. Raises UpdateError."""
        state = self.machine.state
        if state not in AT_REST and state is not InstallState.TRIAL:
            raise UpdateError(
                f"an update is in progress ({state.value}); try again when it is done"
            )
        req = _RollbackRequest()
        self._requests.put(req)
        self.wake.set()
        if not req.done.wait(timeout):
            req.cancelled = True  # the update thread drops it if it has not started it yet
            raise UpdateError(f"rollback did not finish within {timeout:.0f} s")
        if req.error:
            raise UpdateError(req.error)
        return req.result

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

    def _start_operator_rollback(self, req: _RollbackRequest) -> None:
        if req.cancelled:
            return
        if req.mark_good is not None:
            bundle, version = req.mark_good
            found = self.slots.mark_good_nosave(bundle, version)
            if found:
                self.slots.save(f"operator marked {bundle} v{version} good")
                self._failed.pop((bundle, version), None)
            req.answer(None, mark_good_message(bundle, version, found))
            return
        if self._rollback_req is not None:
            req.answer("a rollback is already in progress", "")
            return
        m = self.machine
        if m.state is InstallState.TRIAL:
            self._rollback_req = req
            self._frames.abort_trial = OPERATOR_ROLLBACK
            return
        try:
            prev = m.begin_rollback(OPERATOR_ROLLBACK, by_operator=True)
        except UpdateError as e:
            req.answer(str(e), "")
            return
        assert prev is not None
        rec = m.record
        try:
            loaded = load_bundle(self.slots.dir(prev), self.cfg.inference.backend, self.options)
        except LeanloopError as e:
            m.fire(Event.FAIL, reason=f"previous bundle does not load: {first_line(e)}")
            req.answer(f"cannot roll back: the previous bundle does not load: {e}", "")
            return
        m.finish_rollback()
        self.counters["rollbacks"] += 1
        self.reports.add(
            ReportKind.ROLLED_BACK, "operator", rec.bundle, rec.version, OPERATOR_ROLLBACK
        )
        self._rollback_req = req
        self._frames.hand(Swap(SwapKind.ROLLBACK, loaded))

    def request_mark_good(
        self, version: int, bundle: str | None = None, timeout: float = 30.0
    ) -> str:
        """Control socket: let the device install ``bundle`` (default: the active bundle's
        name) ``version`` again after an operator rollback or a failure. Raises UpdateError."""
        if bundle is None:
            act = self.slots.state.active
            bundle = self.slots.info(act).bundle if act else None
            if bundle is None:
                raise UpdateError("no active bundle: say which bundle (--bundle)")
        req = _RollbackRequest(mark_good=(bundle, version))
        self._requests.put(req)
        self.wake.set()
        if not req.done.wait(timeout):
            req.cancelled = True
            raise UpdateError(f"mark-good did not finish within {timeout:.0f} s")
        if req.error:
            raise UpdateError(req.error)
        return req.result

    # ---- shadow candidates ---------------------------------------------------------------

    def stage_candidate(self, name: str, version: int, fetcher: Fetcher) -> SlotName:
        """Stage a shadow candidate in the inactive slot (fetched and verified through TUF, not
        loaded: the shadow worker loads it in its own process) and store ``shadow_staged``.
        A candidate already staged there (before a restart) is reused.

        Raises UpdateError (an update is in flight, not newer, failed here before, network),
        TrustError, BundleError (malformed: the version is marked bad)."""
        slot = self.slots.inactive()
        info = self.slots.info(slot)
        if (info.status, info.bundle, info.version) == ("staged", name, version):
            return slot
        m = self.machine
        if m.state not in AT_REST:
            raise UpdateError(f"an update is in progress ({m.state.value})")
        m.start(name, version, slot, lambda: self.slots.begin_staging_nosave(name, version))
        try:
            self._fetch_into(fetcher, name, version, slot)
            self._verify(slot)
        except Exception as raw:
            e, _ = staging_error(raw, self.slots.dir(slot))
            bad = deterministic(e)
            m.fire(
                Event.FAIL,
                apply=lambda: self.slots.discard_nosave(slot, bad=bad),
                reason=f"shadow candidate {name} v{version}: {first_line(e)}",
            )
            raise e from raw
        m.fire(Event.PARKED, apply=lambda: self.slots.mark_staged_nosave(slot))
        return slot

    def promote(self, slot: SlotName, loaded: LoadedBundle) -> None:
        """A promoted shadow candidate takes the normal install path.

        The candidate is staged in the inactive ``slot`` and was loaded and health-checked by
        the caller on the update thread. The machine records each of those steps as done,
        stores the switch, and the frame loop swaps at the next frame: trial → commit, or
        rollback, like any update. Raises UpdateError when an update is already in flight.
        """
        m = self.machine
        info = self.slots.info(slot)
        if info.status != "staged" or info.bundle is None or info.version is None:
            raise UpdateError(f"shadow candidate slot {slot} holds no staged bundle")
        m.start(info.bundle, info.version, slot, apply=lambda: None)
        for ev in (Event.FETCHED, Event.VERIFIED, Event.LOADED):
            m.fire(ev)
        m.fire(Event.HEALTHY, apply=lambda: self.slots.mark_staged_nosave(slot))
        m.fire(Event.HANDED_OVER, apply=lambda: self.slots.activate_nosave(slot))
        self._frames.hand(Swap(SwapKind.UPDATE, loaded))

    # ---- status and shutdown -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The install part of ``status.json``."""
        act = self.slots.state.active
        prev = self.slots.state.previous
        info = self.slots.info(act) if act else None
        pinfo = self.slots.info(prev) if prev else None
        rec = self.machine.record
        try:
            free: int | None = self.slots.free_bytes()
        except OSError:
            free = None
        return {
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
            "update_state": rec.state.value,
            "install": {
                "state": rec.state.value,
                "bundle": rec.bundle,
                "version": rec.version,
                "crashes": rec.crashes,
                "reason": rec.reason,
            },
            "slots_free_bytes": free,
            "pending_reports": len(self.reports.pending()),
            "last_update_error": self.last_error,
            "rolled_back_by_operator": rec.state is InstallState.ROLLED_BACK and rec.by_operator,
            "held_back": {b: sorted(v) for b, v in self.slots.state.held.items() if v},
        }

    def close(self) -> None:
        """Close the bundles still loaded (service shutdown, after the frame loop stopped)."""
        self._frames.close()
