"""Run a candidate bundle beside production without ever touching production's path.

The frame loop calls :meth:`ShadowRunner.offer` after it has written production's result. That
is a ``put_nowait`` of references (the encoded frame bytes and production's prediction) into a
small bounded queue: when the candidate falls behind, the frame is **shed and counted**, never
waited for. Production's prediction is not changed; comparisons work on it read-only and the
store gets a copy.

One feeder thread owns the worker process (:mod:`runtime.shadow.worker`, started with
``python -m`` and niced): it waits for the worker's ``ready`` (load + health check, at most
``load_timeout_s``), then sends one frame at a time and waits for its answer at most
``frame_timeout_s``. What can go wrong disables the candidate, kills its process (SIGKILL)
and records a one-line reason; production goes on untouched:

- the worker does not load or fails its health check (``load_error``, or no ``ready`` in time);
- it exits or is killed (a crash: EOF on its pipe; the exit code or signal is reported);
- it does not answer a frame in time (a hang);
- more than ``max_error_rate`` of its answers are errors, after ``error_min_frames`` answers.

Each answer is handed to ``on_result(frame_id, data, production, candidate)`` on the feeder
thread (comparison and bookkeeping live in :mod:`runtime.shadow.manager`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from runtime.pipeline.prediction import Prediction
from runtime.shadow._wire import WireClosed, WireTimeout, read_message, write_job

__all__ = ["RunnerState", "ShadowRunner"]

log = logging.getLogger("leanloop.shadow")

RunnerState = Literal["starting", "running", "disabled", "stopped"]
OnResult = Callable[[str, bytes, Prediction, Prediction], None]
_Job = tuple[str, bytes, Prediction]
_NEUTRAL_CWD = "/"  # the worker must not start in the state folder (issue 12)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ShadowRunner:
    """One candidate bundle in one worker process, fed through a bounded, shedding queue."""

    def __init__(
        self,
        bundle_dir: Path,
        on_result: OnResult,
        *,
        backend: str | Sequence[str] = "onnxruntime",
        threads: int = 1,
        nice: int = 10,
        queue_size: int = 4,
        frame_timeout_s: float = 5.0,
        load_timeout_s: float = 60.0,
        max_error_rate: float = 0.2,
        error_min_frames: int = 20,
        on_disable: Callable[[str], None] | None = None,
        max_duty: float = 1.0,
    ) -> None:
        if not 0.0 < max_duty <= 1.0:
            raise ValueError(f"max_duty must be in (0, 1], got {max_duty}")
        self.bundle_dir = Path(bundle_dir)
        self.max_duty = max_duty
        self.on_result = on_result
        self.on_disable = on_disable
        self.backend = backend if isinstance(backend, str) else ",".join(backend)
        self.threads = threads
        self.nice = nice
        self.frame_timeout_s = frame_timeout_s
        self.load_timeout_s = load_timeout_s
        self.max_error_rate = max_error_rate
        self.error_min_frames = error_min_frames
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.state: RunnerState = "starting"
        self.reason: str | None = None
        # Written by the frame loop only.
        self.offered = 0
        self.shed = 0
        # Written by the feeder thread only.
        self.answered = 0
        self.errors = 0

    # ---- the frame loop's side ----------------------------------------------------------

    def offer(self, frame_id: str, data: bytes, prediction: Prediction) -> bool:
        """Queue a frame for the candidate without blocking; False if it was shed."""
        self.offered += 1
        if self.state not in ("starting", "running"):
            self.shed += 1
            return False
        try:
            self._queue.put_nowait((frame_id, data, prediction))
        except queue.Full:
            self.shed += 1
            return False
        return True

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker process and the feeder thread (returns at once)."""
        # Isolated (-I: no cwd, script folder, PYTHONPATH or user site on sys.path) and started
        # in "/": nothing in the state folder or the bundle can shadow a module by name.
        cmd = [
            sys.executable,
            "-I",
            "-m",
            "runtime.shadow.worker",
            "--bundle",
            str(Path(self.bundle_dir).resolve()),
            "--backend",
            self.backend,
            "--threads",
            str(self.threads),
            "--nice",
            str(self.nice),
        ]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, self.threads)))
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            cwd=_NEUTRAL_CWD,
        )
        self._thread = threading.Thread(target=self._feed, name="shadow-feed", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = 3.0) -> None:
        """Stop feeding and end the worker (gracefully, then SIGKILL)."""
        self._stop.set()
        if self.state in ("starting", "running"):
            self.state = "stopped"
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._kill(grace=timeout)

    def _kill(self, grace: float = 0.0) -> None:
        p = self._proc
        if p is None:
            return
        if p.poll() is None and grace > 0 and p.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                p.stdin.close()  # EOF: the worker returns
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(grace)
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                with contextlib.suppress(OSError, ValueError):
                    f.close()

    def disable(self, reason: str) -> None:
        """Turn the candidate off for good: kill the worker, drop what is queued."""
        if self.state == "disabled":
            return
        self.state = "disabled"
        self.reason = reason
        self._stop.set()
        self._kill()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        log.error("shadow candidate disabled: %s", reason)
        if self.on_disable is not None:
            self.on_disable(reason)

    # ---- the feeder thread --------------------------------------------------------------

    def _crashed(self) -> str:
        p = self._proc
        assert p is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(1.0)
        return f"worker crashed ({_exit_reason(p.poll())})"

    def _feed(self) -> None:
        p = self._proc
        assert p is not None and p.stdin is not None and p.stdout is not None
        win, rout = p.stdin.fileno(), p.stdout.fileno()
        try:
            msg = read_message(rout, time.monotonic() + self.load_timeout_s)
        except WireTimeout:
            self.disable(f"worker did not load the candidate within {self.load_timeout_s:g} s")
            return
        except (WireClosed, ValueError, OSError):
            if not self._stop.is_set():
                self.disable(f"{self._crashed()} while loading")
            return
        if msg.get("type") != "ready":
            self.disable(f"candidate does not load: {msg.get('error', msg)}")
            return
        if self.state == "starting":
            self.state = "running"
        seq = 0
        while not self._stop.is_set():
            try:
                frame_id, data, prod = self._queue.get(timeout=0.2)
            except queue.Empty:
                if p.poll() is not None and not self._stop.is_set():
                    self.disable(self._crashed())
                    return
                continue
            seq += 1
            started = time.monotonic()
            deadline = started + self.frame_timeout_s
            try:
                write_job(win, {"seq": seq, "frame_id": frame_id}, data, deadline)
                while True:
                    msg = read_message(rout, deadline)
                    if msg.get("type") == "result" and msg.get("seq") == seq:
                        break
            except WireTimeout:
                self.disable(
                    f"worker hung: no answer for frame {frame_id} within {self.frame_timeout_s:g} s"
                )
                return
            except (WireClosed, ValueError, OSError):
                if not self._stop.is_set():
                    self.disable(f"{self._crashed()} on frame {frame_id}")
                return
            self._answer(frame_id, data, prod, msg)
            if self.max_duty < 1.0:
                # Duty-cycle cap: after a frame that kept the candidate busy for t, rest
                # t * (1/duty - 1), so it is busy at most ``max_duty`` of the time. On cores
                # shared with production (SMT siblings, a busy second core) niceness alone
                # does not stop the candidate from slowing production; meanwhile the bounded
                # queue sheds.
                busy = time.monotonic() - started
                self._stop.wait(busy * (1.0 / self.max_duty - 1.0))

    def _answer(self, frame_id: str, data: bytes, prod: Prediction, msg: dict[str, Any]) -> None:
        try:
            cand = Prediction.from_dict(msg["prediction"])
        except (KeyError, TypeError, ValueError) as e:
            cand = Prediction(frame_id=frame_id, error=f"unreadable answer: {e}")
        self.answered += 1
        if cand.error is not None:
            self.errors += 1
            if (
                self.answered >= self.error_min_frames
                and self.errors / self.answered > self.max_error_rate
            ):
                self.disable(
                    f"error rate {self.errors / self.answered:.0%} over {self.answered} frames "
                    f"(last: {cand.error})"
                )
            return
        try:
            self.on_result(frame_id, data, prod, cand)
        except Exception:  # bookkeeping must not kill the feeder
            log.exception("shadow: comparing frame %s failed", frame_id)

    def counters(self) -> dict[str, int]:
        return {
            "offered": self.offered,
            "shed": self.shed,
            "answered": self.answered,
            "errors": self.errors,
            "queued": self._queue.qsize(),
        }
