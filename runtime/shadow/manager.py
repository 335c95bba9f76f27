"""The device side of shadow-mode A/B: stage, run, compare, judge, promote or drop a candidate.

The hub's desired-bundle answer may carry a ``candidate`` (bundle, version, promotion rule)
next to the production bundle. :class:`ShadowManager` follows it from the service's update
loop (:meth:`poll`, never from the frame path):

1. once production is settled (it runs what the hub wants, no update in flight), the candidate
   is fetched through TUF into the **inactive slot** by the installer, exactly like an update
   (verified, install state ``shadow_staged``) — so a promotion later is an instant swap. Its
   health check runs in the worker, not here: a candidate that crashes must not take the
   service down;
2. a :class:`~runtime.shadow.runner.ShadowRunner` starts the candidate in its own niced worker
   process; the frame loop offers it copies of production frames (:meth:`offer`: non-blocking,
   shed and counted when full);
3. each answer is compared with production's prediction of the same frame
   (:func:`~runtime.shadow.compare.compare`) and added to the report; a frame the models
   disagree on is offered to the sample store as a copy of production's prediction whose
   ``shadow`` field holds the disagreement score;
4. once the rule's ``min_frames`` are compared, :func:`~runtime.shadow.promotion.judge` decides,
   using corrective feedback from the sample store on frames both models saw. ``promote``:
   the worker stops, the candidate is loaded and health-checked here, and handed to the frame
   loop's ordinary swap (:meth:`runtime.update.installer.Installer.promote`): activation →
   trial → commit, or rollback when the trial fails. ``reject``: the worker stops and the
   candidate is dropped. Either way the outcome is kept in ``shadow.json`` (so a restart does
   not judge it again) and sent to the hub.

A crash, hang or error storm of the candidate disables it (see the runner); production is not
touched. ``shadow.json`` and the hub telemetry are refreshed every ``report_interval_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Protocol

from runtime.backends.base import BackendOptions
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import load_bundle
from runtime.config import DeviceConfig
from runtime.errors import BundleError, FrameError, LeanloopError, UpdateError
from runtime.pipeline.prediction import Prediction
from runtime.pipeline.preprocess import decode_image
from runtime.protocol import Desired, ShadowAssignment, ShadowTelemetry
from runtime.shadow.compare import compare
from runtime.shadow.promotion import FeedbackScore, PromotionRule, feedback_accuracy, judge
from runtime.shadow.report import (
    FINAL_STATUSES,
    BundleRef,
    ShadowStatus,
    load_report,
    save_report,
)
from runtime.shadow.runner import ShadowRunner
from runtime.store.lmdb_store import SampleStore
from runtime.store.writer import StoreWriter
from runtime.update.installer import Fetcher, Installer

__all__ = ["ShadowManager"]

log = logging.getLogger("leanloop.shadow")

_LIVE = frozenset({"staging", "starting", "running"})
_FEEDBACK_SCAN = 5000


class _Hub(Protocol):
    last_desired: Desired

    def shadow_report(self, summary: ShadowTelemetry) -> None: ...


class ShadowManager:
    """Owns the shadow candidate of one device service (see the module story)."""

    def __init__(
        self,
        cfg: DeviceConfig,
        installer: Installer,
        writer: StoreWriter | None,
        store: SampleStore | None,
    ) -> None:
        self.settings = cfg.shadow
        self.state_dir = cfg.state_dir
        self.backend = cfg.inference.backend
        self.options = BackendOptions(threads=cfg.inference.threads)
        self.installer = installer
        self.slots = installer.slots  # read only: every write goes through the installer
        self.writer = writer
        self.store = store
        self._lock = threading.RLock()  # poll-level state (update thread)
        self._stats_lock = threading.Lock()  # stats and the report file; held only briefly
        self._runner: ShadowRunner | None = None
        self._handed = False
        self._retry_at = 0.0
        self._last_save = 0.0
        self._last_sent = 0.0
        self._sent_status: str | None = None
        self._dirty = False
        self.report = load_report(self.state_dir)
        self._stored = self.report.counters.get("disagreements_stored", 0)

    # ---- frame loop ---------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while a candidate runs (the frame loop encodes a camera frame only then)."""
        return self._runner is not None

    def offer(self, frame_id: str, data: bytes, prediction: Prediction) -> None:
        """The frame loop's hook: hand a served frame to the candidate; never blocks."""
        runner = self._runner
        if runner is not None:
            runner.offer(frame_id, data, prediction)

    # ---- feeder thread ------------------------------------------------------------------

    def _on_result(self, frame_id: str, data: bytes, prod: Prediction, cand: Prediction) -> None:
        cmp = compare(prod, cand, self.settings.iou_threshold)
        rep = self.report
        with self._stats_lock:
            rep.stats.add(cmp)
            rep.note_seen(frame_id, cmp.candidate_labels)
            self._dirty = True
        if not cmp.agree and self.settings.store_disagreements and self.writer is not None:
            c = rep.candidate
            try:
                image = decode_image(data)
            except FrameError:
                image = None
            if image is not None and c is not None:
                copy = dataclasses.replace(
                    prod, shadow=cmp.shadow_field(c.bundle, c.version)
                )  # production's own object is never changed
                if self.writer.offer(image, copy):
                    self._stored += 1
        if time.monotonic() - self._last_save >= self.settings.report_interval_s:
            self.save()

    def _on_disable(self, reason: str) -> None:
        # Called on the feeder thread; the next poll turns it into the "disabled" status.
        self._dirty = True

    # ---- update loop --------------------------------------------------------------------

    def poll(self, hub: _Hub | None, fetcher: Fetcher | None, busy: bool) -> None:
        """The update loop's hook: follow the hub's candidate one step. Never raises for the
        candidate's faults (they end up in the report)."""
        if hub is None or fetcher is None or not self.settings.enabled:
            return
        try:
            self._poll(hub, fetcher, busy)
        except Exception as e:  # a shadow bug must never stop production updates
            log.exception("shadow: unexpected %s", e)

    def _poll(self, hub: _Hub, fetcher: Fetcher, busy: bool) -> None:
        with self._lock:
            runner = self._runner
            if runner is not None and runner.state == "disabled":
                self._finish("disabled", runner.reason)
            if self.report.status == "promoting":
                self._follow_promotion()
            self._follow(hub.last_desired, fetcher, busy)
            if self.report.status == "running":
                self._judge()
        self.save()
        self._send(hub)

    def _production_settled(self, desired: Desired, busy: bool) -> BundleRef | None:
        act = self.slots.state.active
        if busy or act is None:
            return None
        info = self.slots.info(act)
        if info.status != "committed" or info.bundle is None or info.version is None:
            return None
        if desired.target != (info.bundle, info.version):
            return None
        return BundleRef(bundle=info.bundle, version=info.version, slot=act)

    def _unsettled(self, desired: Desired, busy: bool) -> str:
        """Why production is not settled enough to measure a candidate against (for status)."""
        if busy:
            return "a production update is in flight"
        act = self.slots.state.active
        if act is None:
            return "no production bundle yet"
        info = self.slots.info(act)
        if info.status != "committed":
            return f"production {info.bundle} v{info.version} is {info.status}"
        want = desired.target
        if want is None:
            return "the hub names no production bundle"
        name, version = want
        if self.slots.is_held(name, version):
            return (
                f"the hub desires {name} v{version}, held back by an operator rollback "
                f"(production stays {info.bundle} v{info.version} until leanloop mark-good "
                f"{version} or a newer version)"
            )
        return (
            f"production runs {info.bundle} v{info.version}, the hub desires {name} v{version}: "
            "that update comes first"
        )

    def _follow(self, desired: Desired, fetcher: Fetcher, busy: bool) -> None:
        want: ShadowAssignment | None = desired.candidate
        rep = self.report
        cur = rep.candidate
        same = (
            want is not None
            and cur is not None
            and (cur.bundle, cur.version) == (want.bundle, want.version)
        )
        if rep.status in _LIVE and not same:
            self._finish("cancelled", "the hub withdrew or replaced the candidate")
        if want is None:
            return
        bundle, version, rule = want.bundle, want.version, want.rule
        if same:
            rep.rule = rule  # the admin may change the rule while it runs
            if self._runner is not None and not self._slot_intact():
                self._finish("cancelled", "a production update took the candidate's slot")
                return
        if self._runner is not None or rep.status == "promoting":
            return
        if rep.judged(bundle, version) is not None or time.monotonic() < self._retry_at:
            return
        prod = self._production_settled(desired, busy)
        if prod is None:
            why = f"candidate {bundle} v{version} waits: {self._unsettled(desired, busy)}"
            if (rep.status, rep.reason) != ("idle", why):
                self._set("idle", why)
            return
        self._begin(bundle, version, rule, prod, fetcher, resume=same)

    def _slot_intact(self) -> bool:
        c = self.report.candidate
        if c is None or c.slot is None:
            return False
        info = self.slots.info(c.slot)
        return (info.status, info.bundle, info.version) == ("staged", c.bundle, c.version)

    def _begin(
        self,
        bundle: str,
        version: int,
        rule: PromotionRule,
        prod: BundleRef,
        fetcher: Fetcher,
        resume: bool,
    ) -> None:
        rep = self.report
        old = rep.production
        if old is None or (old.bundle, old.version) != (prod.bundle, prod.version):
            resume = False  # measured against another production bundle: start over
        if not resume:
            rep.stats = type(rep.stats)()
            rep.seen = {}
            rep.counters = {}
            self._stored = 0
            rep.verdict = None
        rep.candidate = BundleRef(bundle=bundle, version=version)
        rep.production = prod
        rep.rule = rule
        rep.started = rep.started if resume and rep.started else time.time()
        self._set("staging", None)
        self.save()
        try:
            self.slots.check_version(bundle, version)  # not newer, or failed here before
        except UpdateError as e:
            self._finish("refused", str(e))
            return
        try:
            slot = self.installer.stage_candidate(bundle, version, fetcher)
        except BundleError as e:  # malformed: the same again next time
            self._finish("refused", str(e))
            return
        except LeanloopError as e:  # network, metadata, not published yet: try again later
            self._retry_at = time.monotonic() + 10 * self.settings.report_interval_s
            self._set("idle", f"staging failed, will retry: {e}")
            return
        rep.candidate.slot = slot
        s = self.settings
        self._runner = ShadowRunner(
            self.slots.dir(slot),
            self._on_result,
            backend=self.backend,
            threads=s.threads,
            nice=s.nice,
            queue_size=s.queue_size,
            frame_timeout_s=s.frame_timeout_s,
            load_timeout_s=s.load_timeout_s,
            max_error_rate=s.max_error_rate,
            error_min_frames=s.error_min_frames,
            on_disable=self._on_disable,
            max_duty=s.max_duty,
        )
        self._set("starting", None)
        self._runner.start()
        log.info("shadow: %s v%s started from slot %s", bundle, version, slot)

    def _judge(self) -> None:
        rep = self.report
        runner = self._runner
        if runner is None or rep.rule is None:
            return
        n = rep.stats.compared
        fb = self._feedback_score() if n >= rep.rule.min_frames else None
        v = judge(rep.rule, n, rep.stats.agreed, fb)
        rep.verdict = v.reason
        if v.outcome == "reject":
            self._finish("rejected", v.reason)
        elif v.outcome == "promote":
            self._promote(v.reason)

    def _promote(self, why: str) -> None:
        rep = self.report
        c = rep.candidate
        assert c is not None and c.slot is not None
        self._stop_runner()
        try:
            loaded = load_bundle(self.slots.dir(c.slot), self.backend, self.options, verify=True)
            try:
                run_health_check(loaded)
            except LeanloopError:
                loaded.close()
                raise
        except LeanloopError as e:
            self._finish("rejected", f"passed the rule but does not load for production: {e}")
            return
        self._handed = True
        self._set("promoting", why)
        log.info("shadow: promoting %s v%s (%s)", c.bundle, c.version, why)
        try:
            self.installer.promote(c.slot, loaded)
        except UpdateError as e:  # an update got in first: measure again once it is done
            loaded.close()
            self._handed = False
            self._set("idle", f"promotion waits: {e}")

    def _follow_promotion(self) -> None:
        c = self.report.candidate
        if c is None or c.slot is None:
            return
        state = self.slots.state
        info = self.slots.info(c.slot)
        ours = (info.bundle, info.version) == (c.bundle, c.version)
        if state.active == c.slot and ours and info.status == "committed":
            self._finish("promoted", "committed after its trial")
        elif c.version in state.bad_versions.get(c.bundle, []):
            self._finish("rolled_back", "promoted, failed its trial; production restored")
        elif not self._handed and ours and info.status == "staged":
            self._set("idle", "restarted before the swap; measuring again")
        elif not ours:
            self._finish("cancelled", "the candidate's slot was reused")

    def _feedback_score(self) -> FeedbackScore | None:
        """Accuracy of both models on frames with human feedback that both saw."""
        rep = self.report
        c, p = rep.candidate, rep.production
        if self.store is None or c is None or p is None:
            return None
        rows: list[tuple[str, str | None, str | None]] = []
        try:
            records = self.store.top(_FEEDBACK_SCAN, state=None)
        except LeanloopError as e:
            log.warning("shadow: cannot read feedback: %s", e)
            return None
        for rec in records:
            fb = rec.feedback
            if fb is None or rec.bundle != p.bundle or rec.bundle_version != p.version:
                continue
            sh = rec.prediction.get("shadow")
            if (
                isinstance(sh, dict)
                and sh.get("candidate") == c.bundle
                and sh.get("candidate_version") == c.version
            ):
                cand_labels = list(sh.get("candidate_labels") or [])
            elif rec.frame_id in rep.seen:
                cand_labels = list(rep.seen[rec.frame_id])
            else:
                continue  # the candidate never saw this frame
            stages = rec.prediction.get("stages") or {}
            items = list(stages.values())[-1]["items"] if stages else []
            i = fb.item or 0
            if i >= len(items):
                continue
            prod_label = str(items[i]["label"])
            truth = fb.label if fb.kind == "correct" and fb.label else prod_label
            rows.append((truth, prod_label, cand_labels[i] if i < len(cand_labels) else None))
        return feedback_accuracy(rows)

    # ---- state ----------------------------------------------------------------------------

    def _set(self, status: ShadowStatus, reason: str | None) -> None:
        self.report.status = status
        self.report.reason = reason
        self._dirty = True

    def _finish(self, outcome: ShadowStatus, reason: str | None) -> None:
        assert outcome in FINAL_STATUSES
        self._stop_runner()
        self._handed = False
        self.report.remember(outcome, reason)
        self._set(outcome, reason)
        log.warning(
            "shadow: %s v%s %s: %s",
            self.report.candidate.bundle if self.report.candidate else "?",
            self.report.candidate.version if self.report.candidate else "?",
            outcome,
            reason,
        )

    def _stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._collect(runner)
            if runner.state != "disabled":
                runner.stop()

    def _collect(self, runner: ShadowRunner) -> None:
        c = runner.counters()
        c.pop("queued", None)
        c["disagreements_stored"] = self._stored
        self.report.counters = c

    def save(self) -> None:
        """Write ``shadow.json`` (atomically)."""
        with self._stats_lock:
            runner = self._runner
            if runner is not None:
                self._collect(runner)
                if self.report.status == "starting" and runner.state == "running":
                    self._set("running", None)
            try:
                save_report(self.state_dir, self.report)
            except OSError as e:
                log.warning("shadow: cannot write the report: %s", e)
            self._last_save = time.monotonic()

    def _send(self, hub: _Hub) -> None:
        rep = self.report
        changed = rep.status != self._sent_status
        due = time.monotonic() - self._last_sent >= self.settings.report_interval_s
        if rep.candidate is None or not (changed or (due and self._dirty)):
            return
        try:
            hub.shadow_report(ShadowTelemetry.model_validate(rep.summary()))
        except LeanloopError as e:
            log.warning("shadow: telemetry not sent: %s", e)
            return
        self._sent_status = rep.status
        self._last_sent = time.monotonic()
        self._dirty = False

    def brief(self) -> dict[str, Any]:
        """For ``status``: the candidate, its status and why."""
        rep = self.report
        c = rep.candidate
        return {
            "status": rep.status,
            "candidate": f"{c.bundle} v{c.version}" if c else None,
            "reason": rep.reason,
        }

    def close(self) -> None:
        """Stop the worker and write the report (service shutdown)."""
        with self._lock:
            self._stop_runner()
        self.save()
