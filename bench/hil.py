"""HIL benchmark: the whole loop on a bad network vs the same loop unshaped (``--only hil``).

``python -m bench --only hil [--quick]``

:func:`hil.fleet.run_fleet` twice, same fleet and work: real hub process, ``DEVICES`` real
``leanloop device run`` processes, each in a network namespace behind a veth pair —

* ``unshaped``: no tc shaping, the fault proxy relays without faults (the anchor);
* ``shaped``: 256 kbit/s each way (``tc tbf``), 250 ms each way ±50 ms (500 ms round trips),
  8 % of connections reset at a random point, 2 % of chunks preceded by a 1 s stall, and
  every link down for 5 s while v2 is under way.

Printed and written to ``<out>/hil.json``: time to converge and per phase (enrol + install
v1, upload the samples, feedback to the hub, install v2 by delta), bytes on the wire each way
(the veths' kernel counters), bytes downloaded per bundle, files by delta, connections and
faults, frames fed/served and samples stored/received/lost; the shaped run's ratio to the
unshaped one. Skipped, saying why, where network namespaces or tc cannot run.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from hil.fleet import FleetSettings, run_fleet
from hil.netns import LinkShape, netns_unavailable_reason

__all__ = ["run"]

DEVICES = 5


def _row(name: str, r: dict[str, Any], anchor: dict[str, Any] | None) -> str:
    n = r["settings"]["devices"]
    ratio = f"{r['converge_s'] / anchor['converge_s']:.1f}x" if anchor else "1.0x"
    v1 = sum(r["downloaded_v1_bytes"].values()) // n
    v2 = sum(r["downloaded_v2_bytes"].values()) // n
    s = r["samples"]
    return (
        f"{name:<9} {r['converge_s']:>8.1f} {ratio:>6} {r['wire_bytes']['down'] // n:>10} "
        f"{r['wire_bytes']['up'] // n:>10} {v1:>8} {v2:>8} {r['faults']['connections']:>6} "
        f"{r['faults']['drops']:>6} {s['stored']:>7} {s['at_hub']:>7} {s['lost']:>5}"
    )


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    if reason := netns_unavailable_reason():
        print(f"\nhil: skipped: {reason}")
        return {}
    devices = 3 if quick else DEVICES
    frames = 3 if quick else 8
    unshaped = FleetSettings(
        devices=devices, shape=None, delay_s=0.0, jitter_s=0.0, drop_rate=0.0, frames=frames
    )
    shaped = FleetSettings(
        devices=devices,
        shape=LinkShape(down_kbit=256, up_kbit=256),
        delay_s=0.25,
        jitter_s=0.05,
        drop_rate=0.08,
        stall_rate=0.02,
        stall_s=1.0,
        outage_s=5.0,
        frames=frames,
        timeout_s=300.0,
    )
    runs = {"unshaped": run_fleet(unshaped), "shaped": run_fleet(shaped)}
    anchor = runs["unshaped"]
    print(
        f"\nHIL: {devices} device processes in network namespaces, a hub process; the loop "
        "(enrol + v1, uploads, feedback, v2 by delta) to convergence.\nshaped: 256 kbit/s "
        "each way (tc tbf), 250±50 ms each way, 8 % of connections reset, 2 % 1-s stalls, "
        "a 5-s outage mid-update (fault proxy). Bytes per device."
    )
    print(
        f"{'run':<9} {'conv s':>8} {'x':>6} {'wire down':>10} {'wire up':>10} {'v1 dl':>8} "
        f"{'v2 dl':>8} {'conns':>6} {'drops':>6} {'stored':>7} {'at hub':>7} {'lost':>5}"
    )
    for name, r in runs.items():
        print(_row(name, r, anchor if name != "unshaped" else None))
    for name, r in runs.items():
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases_s"].items())
        print(f"{name}: {phases}")
    report = {"machine": platform.platform(), "devices": devices, "runs": runs}
    report["shaped_vs_unshaped"] = round(runs["shaped"]["converge_s"] / anchor["converge_s"], 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "hil.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
