"""``leanloop demo`` wall time per phase against its ≤ 5-minute goal (#18).

Runs the default demo (3 iterations, both arms, 2 devices per arm; ``--quick``: 1 iteration on
small segments) in a temporary folder and prints where the time went: setup, training per job
(the two arms' jobs run at once) with the export inside it, bundle build, the replay gate,
publish (signing, deltas) and rollout, device catch-up, the devices serving each segment and
uploading. The goal is the whole run's wall time after the install; the anchor measured in the
same run is the v1 training job alone, so the table also reads as "training jobs' worth".
Then it prints the README's demo tables as Markdown (also in ``demo.md``): accuracy per
iteration and arm, one line per loop part, wall time per phase.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run the demo, print the phase table, write ``demo.json``."""
    from rich.console import Console
    from rich.table import Table

    from leanloop.demo import GOAL_S, DemoSettings, run_demo

    out.mkdir(parents=True, exist_ok=True)
    small = {"iterations": 1, "frames": 40, "budget": 20, "seed_frames": 80} if quick else {}
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        s = DemoSettings(workdir=Path(tmp) / "demo", quiet=True, **small)  # type: ignore[arg-type]
        _rows, report = run_demo(s)
    total, phases = report["total_s"], report["phases"]
    anchor = phases["training v1"]["s"]
    t = Table(title=f"demo: {total:.0f} s wall, goal ≤ {GOAL_S:.0f} s ({total / GOAL_S:.2f}× goal)")
    for col in ("phase", "times", "wall s", "share", "× v1 training"):
        t.add_column(col)
    for name, v in phases.items():
        t.add_row(name, str(v["n"]), f"{v['s']:.1f}", f"{v['s'] / total:.0%}",
                  f"{v['s'] / anchor:.2f}")  # fmt: skip
    Console().print(t)
    result = {"quick": quick, "total_s": total, "goal_s": GOAL_S, "phases": phases,
              "rows": report["rows"], "markdown": report["markdown"]}  # fmt: skip
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    (out / "demo.md").write_text(report["markdown"])
    print(f"\nthe README's demo tables ({out / 'demo.md'}):\n\n{report['markdown']}")
    return result
