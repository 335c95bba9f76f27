"""The whole loop on a bad network: a real hub, N real devices behind shaped links.

``python -m hil.fleet [--devices 3] [--kbit 256] [--delay-ms 250] [--drop 0.05] [--outage-s 5]
[--json]`` (as root; a summary, or the whole report with ``--json``)

What runs (every part a real process, every byte through a real socket):

1. the hub: ``leanloop hub serve`` on loopback, fresh TUF keys;
2. per device, a network namespace joined to the host by a veth pair shaped with ``tc tbf``
   (:mod:`hil.netns`), and a :class:`~hil.faultproxy.FaultProxy` on the host end adding the
   latency, jitter, dropped connections and stalls the kernel cannot (no ``sch_netem`` here);
   the device's hub URL is that proxy, so its only way to the hub is the shaped link;
3. ``leanloop device run`` inside each namespace, on a folder source.

The loop, timed phase by phase: devices **enrol** and **install v1** (TUF metadata and the
bundle's files through the link); frames are fed and every stored sample is **uploaded**; an
operator **corrects** one sample per device with ``leanloop feedback correct`` (through the
device's control socket) and the correction reaches the hub; **v2** (a fine-tuned head) is
published while more frames arrive, and every device installs it through signed deltas.

The report: time per phase and to converge, bytes on the wire both ways (the kernel's
counters of each veth: headers, retransmissions and TUF metadata included) beside the bytes
the proxies relayed (the application's), bytes the devices downloaded per bundle and how many
files came by delta, the proxy's faults, frames fed vs served, and samples stored on the
devices vs received by the hub (lost = stored − received).
``tests/hil/test_fleet.py`` runs a short fleet; ``python -m bench --only hil`` the long one
against an unshaped run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import urllib3
import yaml

from hil.faultproxy import FaultProxy
from hil.netns import LinkShape, ShapedLink

if TYPE_CHECKING:
    from hub.client import HubAdminClient

__all__ = ["FleetSettings", "run_fleet"]


@dataclass(frozen=True)
class FleetSettings:
    """One fleet run: the network each device sits behind and the work it does."""

    devices: int = 3
    shape: LinkShape | None = field(default_factory=LinkShape)  # None: no tc shaping
    delay_s: float = 0.25  # each way (500 ms round trips)
    jitter_s: float = 0.05
    drop_rate: float = 0.05  # share of connections reset at a random point
    stall_rate: float = 0.0  # share of relayed chunks preceded by a freeze of stall_s
    stall_s: float = 0.0
    outage_s: float = 0.0  # every link down this long while v2 downloads (then back)
    frames: int = 4  # per device, before and again during the v2 update
    hidden: int = 16  # classifier width (bundle size: ~50 KB at 16)
    timeout_s: float = 180.0  # per phase
    seed: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "leanloop.cli", *args]


class _Hub:
    """``leanloop hub serve`` as a child process."""

    def __init__(self, work: Path, keys: Path) -> None:
        self.port = _free_port()
        self.data = work / "hub"
        self.log = open(work / "hub.log", "wb")  # noqa: SIM115  (closed in stop)
        argv = _cli("hub", "serve", "--data", str(self.data), "--port", str(self.port),
                    "--keys", str(keys))  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self._wait_healthy(work / "hub.log")
        except BaseException:
            self.stop()
            raise
        self.admin_token = (self.data / "admin.token").read_text().strip()
        self.enroll_token = (self.data / "enroll.token").read_text().strip()

    def _wait_healthy(self, log: Path) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: {log.read_text()[-2000:]}")
            try:
                if urllib3.request("GET", self.url + "/healthz", timeout=2.0).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hub did not answer /healthz within 60 s")
            time.sleep(0.2)

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Device:
    """A real ``leanloop device run`` in its namespace, its link and its fault proxy."""

    def __init__(
        self, i: int, work: Path, hub: _Hub, root: Path, s: FleetSettings, link: ShapedLink
    ) -> None:
        self.id = f"hil-{i}"
        self.link = link
        self.proxy = FaultProxy(
            "127.0.0.1", hub.port, listen_host=link.host_ip, delay_up_s=s.delay_s,
            delay_down_s=s.delay_s, jitter_s=s.jitter_s, drop_rate=s.drop_rate,
            stall_rate=s.stall_rate, stall_s=s.stall_s, seed=s.seed * 1000 + i,
        ).start()  # fmt: skip
        self.dir = work / self.id
        self.inbox, self.state = self.dir / "inbox", self.dir / "state"
        self.inbox.mkdir(parents=True)
        cfg = {
            "device_id": self.id,
            "state_dir": str(self.state),
            "root": str(root),
            "hub": {
                "url": self.proxy.url,
                "enroll_token": hub.enroll_token,
                "poll_interval_s": 0.5,
                "timeout_s": 20.0,
            },
            "source": {"path": str(self.inbox), "pattern": "*.png", "poll_interval_s": 0.1},
            "upload": {"interval_s": 0.5},
            "update": {"trial_frames": 2, "trial_s": 1.0},
            "download": {
                "backoff_base_s": 0.2,
                "backoff_max_s": 2.0,
                "read_timeout_s": 20.0,
                "max_attempts": 20,
            },
            "store": {"max_rate": 0},  # every frame a candidate: each stored one must arrive
            "status_interval_s": 0.5,
        }
        self.config = self.dir / "device.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.fed = 0
        self.log = open(self.dir / "device.log", "wb")  # noqa: SIM115  (closed in stop)
        argv = [*link.prefix, *_cli("device", "run", "--config", str(self.config))]
        try:
            self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        except OSError:
            self.log.close()
            self.proxy.stop()
            raise

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def feed(self, n: int, frame: Any) -> None:
        for _ in range(n):
            name = f"f{self.fed:05d}.png"
            cv2.imwrite(str(self.inbox / f".{name}"), frame)
            os.replace(self.inbox / f".{name}", self.inbox / name)
            self.fed += 1

    def served(self) -> int:
        p = self.state / "results.jsonl"
        return len(p.read_text().splitlines()) if p.exists() else 0

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()
        self.proxy.stop()


def _committed(version: int) -> Callable[[dict[str, Any]], bool]:
    return lambda st: (
        (st.get("active") or {}).get("version") == version
        and (st["active"].get("status") == "committed")
    )


def _wait(what: str, cond: Callable[[], bool], devices: list[_Device], timeout: float) -> float:
    """Wait for ``cond``; the seconds it took. Raises RuntimeError with the devices' logs."""
    t0 = time.monotonic()
    while not cond():
        for d in devices:
            if d.proc.poll() is not None:
                tail = (d.dir / "device.log").read_text()[-2000:]
                raise RuntimeError(f"{d.id} exited ({d.proc.returncode}) before {what}: {tail}")
        if time.monotonic() - t0 > timeout:
            states = {d.id: d.status() for d in devices}
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}: {states}")
        time.sleep(0.2)
    return round(time.monotonic() - t0, 2)


def _bundle_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_fleet(settings: FleetSettings, work: Path | None = None) -> dict[str, Any]:
    """Run the loop once; the report (see the module docstring). Raises RuntimeError when
    the loop does not converge (with the devices' state), OSError when links cannot be made."""
    from hil.models import build_fleet_bundles
    from hub.client import HubAdminClient
    from hub.signing import init_keys

    with tempfile.TemporaryDirectory(prefix="leanloop-hil-") as tmp:
        root = Path(work or tmp)
        bundles = build_fleet_bundles(root / "bundles", settings.hidden, settings.seed)
        init_keys(root / "keys")
        hub = _Hub(root, root / "keys")
        links: list[ShapedLink] = []
        devices: list[_Device] = []
        try:
            admin = HubAdminClient(hub.url, hub.admin_token)
            admin.publish_bundle(bundles[1], root / "keys")
            admin.rollout("digits", 1)
            t_start = time.monotonic()
            for i in range(settings.devices):
                links.append(ShapedLink(i, settings.shape).open())
                devices.append(_Device(i, root, hub, root / "keys" / "root.json", settings,
                                       links[-1]))  # fmt: skip
            return _loop(settings, admin, root, bundles, devices, t_start)
        finally:
            for d in devices:
                d.stop()
            for link in links:
                link.close()
            hub.stop()


def _loop(
    s: FleetSettings,
    admin: HubAdminClient,
    root: Path,
    bundles: dict[int, Path],
    devices: list[_Device],
    t_start: float,
) -> dict[str, Any]:
    from hil.models import golden_frame

    phases: dict[str, float] = {}

    def everyone(pred: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
        return lambda: all(pred(d.status()) for d in devices)

    phases["enrol_install_v1"] = _wait("v1 committed", everyone(_committed(1)), devices,
                                       s.timeout_s)  # fmt: skip
    v1_bytes = {d.id: d.status()["counters"].get("bytes_downloaded", 0) for d in devices}
    for d in devices:
        d.feed(s.frames, golden_frame())

    def all_stored_uploaded() -> bool:
        at_hub = _hub_samples(admin)
        for d in devices:
            st = d.status()
            stored = (st.get("writer") or {}).get("stored", 0)
            if d.served() < d.fed or stored < d.fed or at_hub.get(d.id, 0) < stored:
                return False
        return True

    phases["upload_samples"] = _wait("samples at the hub", all_stored_uploaded, devices,
                                     s.timeout_s)  # fmt: skip
    t0 = time.monotonic()
    operators = {}  # one operator per device, at the same time
    entries = admin.samples(limit=10_000)
    for d in devices:
        sample = next(e for e in entries if e.get("device_id") == d.id)
        argv = _cli("feedback", "correct", sample["id"], "--label", "7", "--who", "hil",
                    "--config", str(d.config), "--json")  # fmt: skip
        operators[d.id] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for dev_id, proc in operators.items():
        _out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"feedback correct on {dev_id}: {err.strip()}")

    def corrections_at_hub() -> bool:
        fb = admin.feedback_metrics()["devices"]
        return all(((fb.get(d.id) or {}).get("hub") or {}).get("confusion") for d in devices)

    _wait("corrections at the hub", corrections_at_hub, devices, s.timeout_s)
    phases["feedback"] = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    admin.publish_bundle(bundles[2], root / "keys")
    admin.rollout("digits", 2)
    for d in devices:  # frames keep coming while v2 downloads and swaps in
        d.feed(s.frames, golden_frame(60))
    if s.outage_s:  # the links go away mid-update (and mid-upload) and come back
        all_on_v2 = everyone(_committed(2))
        _wait("v2 under way", lambda: any(d.status().get("download") for d in devices)
              or all_on_v2(), devices, s.timeout_s)  # fmt: skip
        for d in devices:
            d.proxy.link_down()
        time.sleep(s.outage_s)
        for d in devices:
            d.proxy.link_up()
    _wait("v2 committed", everyone(_committed(2)), devices, s.timeout_s)
    _wait("the last samples at the hub", all_stored_uploaded, devices, s.timeout_s)
    phases["install_v2"] = round(time.monotonic() - t0, 2)
    converge_s = round(time.monotonic() - t_start, 2)
    return _report(s, admin, bundles, devices, phases, converge_s, v1_bytes)


def _hub_samples(admin: HubAdminClient) -> dict[str, int]:
    """Samples the hub holds, per device (unique ids)."""
    ids: dict[str, set[str]] = {}
    for e in admin.samples(limit=10_000):
        ids.setdefault(str(e.get("device_id")), set()).add(str(e["id"]))
    return {k: len(v) for k, v in ids.items()}


def _delta_files(log: str) -> int:
    import re

    m = re.search(r"staged digits v2 .*?(\d+) by delta", log)
    return int(m.group(1)) if m else 0


def _report(
    s: FleetSettings,
    admin: HubAdminClient,
    bundles: dict[int, Path],
    devices: list[_Device],
    phases: dict[str, float],
    converge_s: float,
    v1_bytes: dict[str, int],
) -> dict[str, Any]:
    at_hub = _hub_samples(admin)
    stored = {d.id: (d.status().get("writer") or {}).get("stored", 0) for d in devices}
    wire = {"down": 0, "up": 0}
    faults = {"connections": 0, "drops": 0, "stalls": 0, "refused": 0}
    relayed = {"down": 0, "up": 0}  # application bytes through the proxies
    for d in devices:
        for k, v in d.link.counters().items():
            wire[k] += v
        for k in faults:
            faults[k] += getattr(d.proxy.stats, k)
        relayed["down"] += d.proxy.stats.bytes_down
        relayed["up"] += d.proxy.stats.bytes_up
    v2_bytes = {
        d.id: d.status()["counters"].get("bytes_downloaded", 0) - v1_bytes[d.id] for d in devices
    }
    return {
        "settings": {**asdict(s), "shape": asdict(s.shape) if s.shape else None},
        "converged": True,
        "converge_s": converge_s,
        "phases_s": phases,
        "wire_bytes": wire,
        "wire_bytes_per_device": {k: v // len(devices) for k, v in wire.items()},
        "relayed_bytes": relayed,
        "bundle_bytes": {v: _bundle_bytes(p) for v, p in bundles.items()},
        "downloaded_v1_bytes": v1_bytes,
        "downloaded_v2_bytes": v2_bytes,
        "v2_files_by_delta": {
            d.id: _delta_files((d.dir / "device.log").read_text()) for d in devices
        },
        "faults": faults,
        "frames": {"fed": sum(d.fed for d in devices), "served": sum(d.served() for d in devices)},
        "samples": {
            "stored": sum(stored.values()),
            "at_hub": sum(at_hub.get(d.id, 0) for d in devices),
            "lost": sum(max(0, stored[d.id] - at_hub.get(d.id, 0)) for d in devices),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.fleet", description=__doc__)
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--kbit", type=int, default=256, help="link rate each way; 0: unshaped")
    p.add_argument("--delay-ms", type=float, default=250.0, help="delay each way")
    p.add_argument("--jitter-ms", type=float, default=50.0)
    p.add_argument("--drop", type=float, default=0.05, help="share of connections reset")
    p.add_argument("--stall", type=float, default=0.0, help="share of chunks after a 1-s stall")
    p.add_argument("--outage-s", type=float, default=0.0, help="links down this long mid-v2")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--hidden", type=int, default=16, help="classifier width (bundle size)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    from hil.netns import netns_unavailable_reason

    if reason := netns_unavailable_reason():
        print(f"error: {reason}", file=sys.stderr)
        return 1
    shape = LinkShape(a.kbit, a.kbit) if a.kbit else None
    s = FleetSettings(devices=a.devices, shape=shape, delay_s=a.delay_ms / 1000,
                      jitter_s=a.jitter_ms / 1000, drop_rate=a.drop, stall_rate=a.stall,
                      stall_s=1.0, outage_s=a.outage_s, frames=a.frames,
                      hidden=a.hidden)  # fmt: skip
    try:
        report = run_fleet(s)
    except RuntimeError as e:  # did not converge: the devices' state is in the message
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    n, smp = a.devices, report["samples"]
    print(f"converged in {report['converge_s']} s: " + ", ".join(
        f"{k} {v} s" for k, v in report["phases_s"].items()))  # fmt: skip
    print(f"wire per device: {report['wire_bytes']['down'] // n} B down, "
          f"{report['wire_bytes']['up'] // n} B up; faults {report['faults']}")  # fmt: skip
    print(f"frames {report['frames']['served']}/{report['frames']['fed']} served; samples "
          f"{smp['at_hub']}/{smp['stored']} at the hub, {smp['lost']} lost")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
