"""The candidate's worker process behind a bounded queue: real bundles, real processes.

Faults are a table: a plug-in that SIGSEGVs, one that sleeps forever, one that raises, and a
bundle that does not load. Each disables the candidate with a one-line reason and kills its
process; the caller's side never waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shadowkit import build, png

from runtime.bundle.loader import LoadedBundle, load_bundle
from runtime.pipeline.prediction import Prediction
from runtime.shadow.compare import ShadowStats, compare
from runtime.shadow.runner import ShadowRunner


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, shadow_classifier: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow_bundles")
    return {
        "production": build(root, shadow_classifier, 1),
        "identical": build(root, shadow_classifier, 2),
        "swapped": build(root, shadow_classifier, 3, swap=("2", "7")),
        "segv": build(root, shadow_classifier, 4, plugin="segv_on_poison"),
        "hang": build(root, shadow_classifier, 5, plugin="hang_on_poison"),
        "raise": build(root, shadow_classifier, 6, plugin="raise_on_poison"),
    }


@pytest.fixture(scope="module")
def production(bundles: dict[str, Path]) -> Iterator[LoadedBundle]:
    loaded = load_bundle(bundles["production"])
    yield loaded
    loaded.close()


class Collect:
    def __init__(self) -> None:
        self.stats = ShadowStats()
        self.lock = threading.Lock()

    def __call__(self, frame_id: str, data: bytes, prod: Prediction, cand: Prediction) -> None:
        with self.lock:
            self.stats.add(compare(prod, cand))


def _wait(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _runner(bundle: Path, on_result: Any, **kw: Any) -> ShadowRunner:
    opts: dict[str, Any] = {"frame_timeout_s": 10.0, "load_timeout_s": 60.0, "nice": 5}
    opts.update(kw)
    return ShadowRunner(bundle, on_result, **opts)


def _feed(runner: ShadowRunner, production: LoadedBundle, frames: list[bytes]) -> None:
    """Offer frames one by one, each once the previous was answered (no shedding)."""
    for i, data in enumerate(frames):
        pred = production.pipeline.run_bytes(data, f"f{i}")
        before = runner.answered
        assert runner.offer(f"f{i}", data, pred)
        _wait(lambda b=before: runner.answered > b or runner.state == "disabled", "an answer")
        if runner.state == "disabled":
            return


@pytest.mark.parametrize(
    ("candidate", "flips"),
    [("identical", {}), ("swapped", {"2": {"7": 4}, "7": {"2": 4}})],
)
def test_runner_compares_when_candidate_is_identical_or_has_two_labels_swapped(
    bundles: dict[str, Path],
    production: LoadedBundle,
    candidate: str,
    flips: dict[str, dict[str, int]],
) -> None:
    got = Collect()
    runner = _runner(bundles[candidate], got)
    runner.start()
    try:
        _wait(lambda: runner.state != "starting", "ready")
        assert runner.state == "running", runner.reason
        _feed(runner, production, [png()] * 4)
        assert runner.state == "running" and runner.errors == 0
    finally:
        runner.stop()
    assert got.stats.compared == 4
    assert got.stats.agreed == (4 if not flips else 0)
    assert got.stats.flips_only() == flips
    assert runner.pid is not None


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("segv", "worker crashed (killed by SIGSEGV) on frame f2"),
        ("hang", "worker hung: no answer for frame f2 within 2 s"),
        ("raise", "error rate 33% over 3 frames"),
    ],
)
def test_runner_disables_candidate_when_worker_crashes_hangs_or_errors(
    bundles: dict[str, Path], production: LoadedBundle, candidate: str, reason: str
) -> None:
    got = Collect()
    disabled: list[str] = []
    runner = _runner(
        bundles[candidate],
        got,
        frame_timeout_s=2.0,
        error_min_frames=3,
        max_error_rate=0.2,
        on_disable=disabled.append,
    )
    runner.start()
    try:
        _wait(lambda: runner.state != "starting", "ready")
        assert runner.state == "running", runner.reason
        _feed(runner, production, [png(), png(), png((255, 200)), png(), png()])
        _wait(lambda: bool(disabled), "disabled")
        assert runner.reason is not None and reason in runner.reason
        assert "\n" not in runner.reason
        assert disabled == [runner.reason]
        assert runner._proc is not None and runner._proc.poll() is not None  # killed
        assert got.stats.compared == 2 and got.stats.agreed == 2
        # After that, offers are shed at once and counted.
        pred = production.pipeline.run_bytes(png(), "late")
        assert runner.offer("late", png(), pred) is False
        assert runner.shed >= 1
    finally:
        runner.stop()


def test_runner_sheds_and_counts_when_queue_is_full(
    bundles: dict[str, Path], production: LoadedBundle
) -> None:
    runner = _runner(bundles["identical"], Collect(), queue_size=4)
    runner.start()  # still loading: nothing is taken from the queue yet
    try:
        data = png()
        pred = production.pipeline.run_bytes(data, "f")
        took = [runner.offer(f"f{i}", data, pred) for i in range(100)]
        assert took.count(True) == 4
        assert (runner.offered, runner.shed) == (100, 96)
        _wait(lambda: runner.answered == 4, "the 4 queued frames answered")
    finally:
        runner.stop()
    assert runner.state == "stopped"


def test_runner_disables_candidate_when_bundle_does_not_load(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundles["identical"], bad)
    (bad / "models" / "classifier.onnx").write_bytes(b"not a model")
    runner = _runner(bad, Collect())
    runner.start()
    try:
        _wait(lambda: runner.state == "disabled", "disabled")
    finally:
        runner.stop()
    assert runner.reason is not None
    assert runner.reason.startswith("candidate does not load:")
    assert "classifier.onnx" in runner.reason
