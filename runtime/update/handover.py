"""Where the frame loop and the update thread meet: the hand-over of a bundle and its trial.

The update thread stages and stores; the frame loop serves. They share three things, each
under one lock: the hand-over (:class:`Swap`, put by :meth:`Handover.hand`), the frame loop's
news for the update thread (:class:`FrameEvent`), and the bundles the frame loop no longer
serves (closed on the update thread). Between two frames (:meth:`Handover.between_frames`)
the frame loop swaps a handed bundle in with no I/O (models, pipeline and ontology switch
together) and judges the trial of an update: ``update.trial_frames`` frames (or
``update.trial_s`` seconds) while the old bundle stays loaded, and an error rate above
``update.trial_max_error_rate`` swaps straight back.

Nothing here touches the slots or the install machine: the update thread stores what the
events say (:class:`~runtime.update.installer.Installer`, the only writer of the slots).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from runtime.bundle.loader import LoadedBundle
from runtime.bundle.manifest import Ontology
from runtime.config import UpdateSettings
from runtime.signal_safe import SignalSafeEvent

__all__ = ["FrameEvent", "FrameEventKind", "Handover", "Swap", "SwapKind"]

log = logging.getLogger("leanloop.update")


class SwapKind(enum.StrEnum):
    """Why the frame loop is handed a bundle."""

    UPDATE = "update"  # a new bundle: served on trial, the old one kept loaded
    ROLLBACK = "rollback"  # the previous committed bundle: served at once


@dataclass(frozen=True)
class Swap:
    """A loaded bundle handed to the frame loop, swapped in between two frames."""

    kind: SwapKind
    bundle: LoadedBundle


class FrameEventKind(enum.StrEnum):
    """What the frame loop tells the update thread (which stores it)."""

    UPDATE_SWAPPED = "update_swapped"
    ROLLBACK_SWAPPED = "rollback_swapped"
    TRIAL_PASSED = "trial_passed"
    TRIAL_FAILED = "trial_failed"


@dataclass(frozen=True)
class FrameEvent:
    kind: FrameEventKind
    reason: str = ""


@dataclass
class _Trial:
    """The frame loop's count of a bundle on trial."""

    frames: int = 0
    errors: int = 0
    t0: float = field(default_factory=time.monotonic)


class Handover:
    """The bundles in the frame loop's hands, and what passes between it and the update
    thread (see the module story)."""

    def __init__(self, update: UpdateSettings) -> None:
        self.update = update
        # Set when the update thread has something to store, and by SIGTERM (runtime.signal_safe).
        self.wake = SignalSafeEvent()
        self._lock = threading.Lock()
        self._next: Swap | None = None
        self._events: list[FrameEvent] = []
        self._retired: list[LoadedBundle] = []
        # Frame loop only:
        self.serving: LoadedBundle | None = None
        self._old: LoadedBundle | None = None  # the bundle a trial would fall back to
        # (before, after) ontologies of the last update swap, for on_commit (set before the
        # swap's event is posted, read by the update thread after it):
        self._swapped_ontology: tuple[Ontology, Ontology] | None = None
        self._trial: _Trial | None = None
        self.abort_trial: str | None = None
        """Set on the update thread: the frame loop ends the trial as failed with this reason."""

    # ---- frame loop ----------------------------------------------------------------------

    def between_frames(self) -> LoadedBundle | None:
        """Frame loop, between two frames: swap in a handed-over bundle (no I/O) and judge the
        trial. Returns the bundle to serve the next frame with (None: nothing to serve)."""
        with self._lock:
            nxt, self._next = self._next, None
        if nxt is not None:
            old, self.serving = self.serving, nxt.bundle
            m = nxt.bundle.manifest
            if nxt.kind is SwapKind.UPDATE:
                # The old bundle stays loaded during the trial: a failed trial swaps back.
                self._old = old
                if old is not None:
                    self._swapped_ontology = (old.manifest.ontology, m.ontology)
                self._trial = _Trial()
                log.info("serving %s v%s (trial)", m.name, m.version)
                self._post(FrameEvent(FrameEventKind.UPDATE_SWAPPED))
            else:
                self._retire(old)
                log.info("serving %s v%s (rollback)", m.name, m.version)
                self._post(FrameEvent(FrameEventKind.ROLLBACK_SWAPPED))
        self._judge_trial()
        return self.serving

    def frame_served(self, failed: bool) -> None:
        """Frame loop: count a served frame for the trial (``failed``: the bundle failed it)."""
        t = self._trial
        if t is not None:
            t.frames += 1
            t.errors += int(failed)

    def _judge_trial(self) -> None:
        t = self._trial
        if t is None:
            return
        if self.abort_trial is not None:
            reason, self.abort_trial = self.abort_trial, None
            self._end_trial(False, reason)
            return
        u = self.update
        if t.frames < u.trial_frames and time.monotonic() - t.t0 < u.trial_s:
            return
        rate = t.errors / max(1, t.frames)
        if rate > u.trial_max_error_rate:
            self._end_trial(False, f"error rate {rate:.0%} over {t.frames} frames")
        else:
            self._end_trial(True, "trial passed")

    def _end_trial(self, ok: bool, reason: str) -> None:
        """End the trial in memory; the update thread stores the outcome."""
        self._trial = None
        if ok:
            self._retire(self._old)
            self._old = None
            self._post(FrameEvent(FrameEventKind.TRIAL_PASSED, reason))
            return
        bad, self.serving, self._old = self.serving, self._old, None
        self._retire(bad)
        log.error("trial failed (%s); rolling back", reason)
        self._post(FrameEvent(FrameEventKind.TRIAL_FAILED, reason))

    def _retire(self, bundle: LoadedBundle | None) -> None:
        """Hand a bundle the frame loop no longer uses to the update thread, which closes it."""
        if bundle is not None:
            with self._lock:
                self._retired.append(bundle)

    def _post(self, event: FrameEvent) -> None:
        with self._lock:
            self._events.append(event)
        self.wake.set()

    # ---- update thread -------------------------------------------------------------------

    def hand(self, swap: Swap) -> None:
        """Give the frame loop a loaded bundle to swap in at the next frame boundary."""
        with self._lock:
            self._next = swap
        self.wake.set()

    @property
    def handed(self) -> bool:
        """A bundle is handed over and not swapped in yet."""
        with self._lock:
            return self._next is not None

    def take(self) -> tuple[list[FrameEvent], list[LoadedBundle]]:
        """The frame loop's events since the last call, and the bundles it retired."""
        with self._lock:
            events, self._events = self._events, []
            retired, self._retired = self._retired, []
        return events, retired

    def take_swapped_ontology(self) -> tuple[Ontology, Ontology] | None:
        """(before, after) ontologies of the last update swap, once (for ``on_commit``)."""
        swapped, self._swapped_ontology = self._swapped_ontology, None
        return swapped

    def close(self) -> None:
        """Close the bundles still loaded (after the frame loop stopped)."""
        with self._lock:
            nxt, self._next = self._next, None
            retired, self._retired = self._retired, []
        for b in [self.serving, self._old, nxt.bundle if nxt else None, *retired]:
            if b is not None:
                b.close()
        self.serving = self._old = None
