"""Download benchmark: a MobileNet-size target through a link cut every 256 KiB.

``python -m bench.download [--out bench-out] [--size-mb 14] [--cut-kib 256]``

A real hub (``hub.testing.LiveHub`` on loopback, fresh keys) publishes one bundle holding a
file of random bytes the size of the delta benchmark's MobileNetV2-like ONNX export (~14 MB;
random bytes, like weights, do not compress). The device's :class:`runtime.download.Downloader`
fetches it with the device token, through ``hil.faultproxy.FaultProxy``:

* ``direct``: no proxy (loopback speed);
* ``link``: through the proxy shaped to ``--link-mbps`` (a device's link), no cuts: the anchor
  for time;
* ``cut-fin``: the same link, every connection closed after ``--cut-kib`` KiB (FIN);
* ``cut-rst``: the same with a reset, which also makes the kernel discard whatever it had
  received but not yet handed to the client;
* ``cut-rst-fast``: resets on an unshaped loopback link, the worst case for those discarded
  bytes (the proxy outruns the client, so a full socket buffer is lost per cut).

For each: bytes on the wire (server → client, headers included) over the file's bytes, against
the goal of 1.05×, the time, connections and resumes. Printed and written to
``<out>/download.json``; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import urllib3

from hil.faultproxy import FaultProxy
from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub, make_bundle
from runtime.config import DownloadSettings
from runtime.download import Downloader

__all__ = ["main"]

GOAL = 1.05


def _one(
    hub: LiveHub,
    token: str,
    sha256: str,
    size: int,
    work: Path,
    cut: int | None,
    mode: Literal["fin", "rst"] | None,
    rate_bps: float | None,
) -> dict[str, Any]:
    dl = Downloader(work / "downloads", token, DownloadSettings())
    out = work / "out.bin"
    path = f"/api/v1/tuf/targets/bench/1/{sha256}.model.bin"
    if mode is None:
        t0 = time.perf_counter()
        dl.fetch(hub.url + path, size, sha256, out)
        elapsed = time.perf_counter() - t0
        wire, connections = None, 1
    else:
        with FaultProxy("127.0.0.1", hub.port, cut_every=cut, cut=mode, rate_bps=rate_bps) as proxy:
            t0 = time.perf_counter()
            dl.fetch(proxy.url + path, size, sha256, out)
            elapsed = time.perf_counter() - t0
            wire, connections = proxy.stats.bytes_down, proxy.stats.connections
    out.unlink()
    return {
        "wire_bytes": wire,
        "wire_ratio": round(wire / size, 4) if wire is not None else None,
        "body_bytes": dl.stats.bytes_received,
        "time_s": round(elapsed, 3),
        "connections": connections,
        "resumes": dl.stats.resumes,
        "restarts": dl.stats.restarts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.download", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--size-mb", type=float, default=14.0, help="file size (MB)")
    parser.add_argument("--cut-kib", type=int, default=256, help="cut every N KiB")
    parser.add_argument("--link-mbps", type=float, default=64.0, help="shaped link (Mbit/s)")
    args = parser.parse_args(argv)
    size = int(args.size_mb * 1e6)
    cut = args.cut_kib << 10
    link = args.link_mbps * 1e6 / 8
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        root = Path(tmp)
        init_keys(root / "keys")
        data = random.Random(0).randbytes(size)
        sha256 = hashlib.sha256(data).hexdigest()
        folder = make_bundle(root / "src", "bench", 1, **{"model.bin": data})
        del data
        cfg = HubConfig(data_dir=root / "hub", port=0, keys_dir=root / "keys")
        with LiveHub(cfg) as hub:
            HubAdminClient(hub.url, hub.admin_token).publish_bundle(folder, root / "keys")
            body = {"device_id": "bench", "enroll_token": hub.enroll_token}
            resp = urllib3.request("POST", f"{hub.url}/api/v1/enroll", json=body, timeout=10.0)
            token = str(resp.json()["device_token"])
            runs: dict[str, tuple[int | None, Literal["fin", "rst"] | None, float | None]] = {
                "direct": (None, None, None),
                "link": (None, "fin", link),
                "cut-fin": (cut, "fin", link),
                "cut-rst": (cut, "rst", link),
                "cut-rst-fast": (cut, "rst", None),
            }
            for name, (cut_every, mode, rate) in runs.items():
                rows[name] = _one(hub, token, sha256, size, root / name, cut_every, mode, rate)

    base = rows["link"]["time_s"]
    print(
        f"\ndownload of {size / 1e6:.1f} MB on a {args.link_mbps:g} Mbit/s link, cut every "
        f"{args.cut_kib} KiB (goal: wire <= {GOAL}x the file)"
    )
    print(f"{'run':<12} {'wire/file':>9} {'goal':>5} {'time s':>7} {'x link':>7} {'conns':>6}")
    for name, r in rows.items():
        ratio = r["wire_ratio"]
        ok = "-" if ratio is None else ("ok" if ratio <= GOAL else "MISS")
        shown = "-" if ratio is None else f"{ratio:.4f}"
        rel = r["time_s"] / base if base else 0.0
        print(
            f"{name:<12} {shown:>9} {ok:>5} {r['time_s']:>7.2f} {rel:>7.2f} {r['connections']:>6}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "size_bytes": size,
        "cut_every_bytes": cut,
        "link_bytes_per_s": link,
        "goal_wire_ratio": GOAL,
        "machine": platform.platform(),
        "runs": rows,
    }
    (args.out / "download.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
