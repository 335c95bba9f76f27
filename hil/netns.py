"""Shaped links for device processes: one network namespace and veth pair per device.

A device of the hardware-in-the-loop runs in a network namespace of its own, joined to the
host by a veth pair; its only way to the hub is that pair. The bandwidth is the kernel's:
a ``tc tbf`` qdisc on each end (the host end shapes what the device downloads, the device
end what it uploads). Latency, jitter, drops and stalls come from :mod:`hil.faultproxy`
listening on the host end, because the test machine's kernel has no ``sch_netem``::

    reason = netns_unavailable_reason()      # None, or why the machine cannot (skip with it)
    with ShapedLink(0, LinkShape(rate_kbit=256)) as link:
        subprocess.Popen([*link.prefix, sys.executable, "-m", "leanloop.cli", "device", "run"])
        link.counters()                      # bytes on the wire, both ways, from the kernel

The wire counters are the host end's interface statistics: every byte of every frame,
TCP/IP headers and retransmissions included (what a metered link would bill).
Needs root (``ip netns add``), ``ip`` and ``tc`` (iproute2) and the ``veth`` and ``sch_tbf``
kernel modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LinkShape", "ShapedLink", "netns_unavailable_reason"]


@dataclass(frozen=True)
class LinkShape:
    """A link's bandwidth, each way (``None``: not shaped, the veth's own speed)."""

    down_kbit: int | None = 256  # hub -> device
    up_kbit: int | None = 256  # device -> hub
    queue_ms: int = 2000  # how long a packet may wait in the tbf queue before it is dropped


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {(r.stderr or r.stdout).strip()}")


def _tbf(prefix: list[str], dev: str, kbit: int, queue_ms: int) -> None:
    # burst: at least one full-size frame, and ~20 ms at the rate so tbf is not timer-bound.
    burst = max(3000, kbit * 1000 // 8 // 50)
    _run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit",
          "burst", str(burst), "latency", f"{queue_ms}ms"])  # fmt: skip


class ShapedLink:
    """Namespace ``llhil-<pid>-<index>``; veth ends ``host_ip`` (host) and ``device_ip``."""

    def __init__(self, index: int, shape: LinkShape | None = None) -> None:
        if not 0 <= index < 250:
            raise ValueError("index must be in [0, 250)")
        pid = os.getpid()
        self.index = index
        self.shape = shape
        self.netns = f"llhil-{pid}-{index}"
        tag = f"{pid % 100000}x{index}"
        self.host_dev, self.device_dev = f"llh{tag}", f"lld{tag}"  # <= 15 characters
        net = f"10.{100 + pid % 100}.{index}"
        self.host_ip, self.device_ip = f"{net}.1", f"{net}.2"
        self._up = False

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it inside the device's namespace."""
        return ["ip", "netns", "exec", self.netns]

    def open(self) -> ShapedLink:
        """Create the namespace, the veth pair and the shaping. Raises OSError (cleaned up)."""
        inside = self.prefix
        try:
            _run(["ip", "netns", "add", self.netns])
            self._up = True
            _run(["ip", "link", "add", self.host_dev, "type", "veth", "peer", "name",
                  self.device_dev])  # fmt: skip
            _run(["ip", "link", "set", self.device_dev, "netns", self.netns])
            _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_dev])
            _run(["ip", "link", "set", self.host_dev, "up"])
            _run([*inside, "ip", "addr", "add", f"{self.device_ip}/30", "dev", self.device_dev])
            _run([*inside, "ip", "link", "set", self.device_dev, "up"])
            _run([*inside, "ip", "link", "set", "lo", "up"])
            if self.shape is not None:
                if self.shape.down_kbit:
                    _tbf([], self.host_dev, self.shape.down_kbit, self.shape.queue_ms)
                if self.shape.up_kbit:
                    _tbf(inside, self.device_dev, self.shape.up_kbit, self.shape.queue_ms)
        except OSError:
            self.close()
            raise
        return self

    def counters(self) -> dict[str, int]:
        """Bytes on the wire so far: ``down`` (to the device) and ``up`` (from it)."""
        stats = Path("/sys/class/net") / self.host_dev / "statistics"
        return {
            "down": int((stats / "tx_bytes").read_text()),
            "up": int((stats / "rx_bytes").read_text()),
        }

    def close(self) -> None:
        """Delete the namespace (which takes the veth pair and its qdiscs with it)."""
        if self._up:
            self._up = False
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=30)

    def __enter__(self) -> ShapedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def netns_unavailable_reason() -> str | None:
    """None when this machine can run shaped links, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "shaped links need root (ip netns add, tc qdisc add)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    probe = ShapedLink(249, LinkShape(down_kbit=256, up_kbit=256))
    try:
        probe.open()
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot make a shaped veth link in a network namespace here: {e}"
    finally:
        probe.close()
    return None
