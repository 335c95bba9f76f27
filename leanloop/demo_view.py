"""What ``leanloop demo`` shows: per-phase wall times, the live job display, the tables.

Kept apart from :mod:`leanloop.demo` (which runs the loop) so that the loop reads as the loop.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.live import Live

    from leanloop.demo import Row

__all__ = [
    "JobView",
    "Phases",
    "efficiency_text",
    "job_line",
    "label_efficiency",
    "markdown",
    "ontology_cell",
    "parts_lines",
    "print_parts",
    "print_phases",
    "print_rows",
    "print_summary",
    "rollout_cell",
]

_PROGRESS = re.compile(r"^progress (\w+) (\d+)/(\d+) loss=([0-9.naif]+)\s*$", re.M)
_EXPORT = re.compile(r"^export_s = ([0-9.]+)", re.M)


class Phases:
    """Wall seconds per phase of the run, summed over its occurrences (and counted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._lock = threading.Lock()  # the arms publish from two threads

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.count[name] = self.count.get(name, 0) + 1

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - t0)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"s": round(v, 2), "n": self.count[k]} for k, v in self.seconds.items()}


def job_line(info: dict[str, Any]) -> str:
    """A one-line view of a training job from its status (state + last progress line)."""
    tail = str(info.get("log_tail") or "")
    found = _PROGRESS.findall(tail)
    if info.get("state") != "running" or not found:
        return str(info.get("state", "?"))
    stage, step, steps, loss = found[-1]
    return f"{stage} {step}/{steps} (loss {loss})"


def export_seconds(info: dict[str, Any]) -> float | None:
    """The export time a finished job printed (``export_s = …``), if its log tail holds it."""
    found = _EXPORT.findall(str(info.get("log_tail") or ""))
    return float(found[-1]) if found else None


class JobView:
    """A live (rich) display of the running training jobs, one line each, on stderr."""

    def __init__(self, enabled: bool, title: str) -> None:
        self.enabled = enabled
        self.title = title
        self._live: Live | None = None

    def __enter__(self) -> JobView:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self.title, console=Console(stderr=True), refresh_per_second=4, transient=True
            )
            self._live.__enter__()
        return self

    def update(self, lines: dict[str, str], elapsed: float) -> None:
        if self._live is not None:
            body = "\n".join(f"  {k:<22} {v}" for k, v in lines.items())
            self._live.update(f"{self.title} [{elapsed:5.1f}s]\n{body}")

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def rollout_cell(r: dict[str, Any] | None) -> str:
    """``canary 1/1 → 2/2 done``: devices running it per wave, and the rollout's status."""
    if not r:
        return "-"
    # A wave's target counts every device reached so far, its succeeded only its own devices.
    ran, waves = 0, []
    for w in r["waves"]:
        ran += int(w["succeeded"])
        waves.append(f"{ran}/{w['target']}")
    return f"canary {' → '.join(waves)} {r['status']}"


def print_rows(rows: list[Row], it: int, stderr: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"iteration {it}")
    cols = ("arm", "model", "gate", "rollout", "frame acc", "digit acc", "labels",
            "bytes/device", "wall s")  # fmt: skip
    for col in cols:
        t.add_column(col)
    for r in rows:
        if r.iteration == it:
            t.add_row(
                "uncertainty" if r.arm == "unc" else "random",
                f"v{r.version}",
                (r.extra.get("gate") or {}).get("decision", "-"),
                rollout_cell(r.extra.get("rollout")),
                f"{r.frame_accuracy:.1%}",
                f"{r.digit_accuracy:.1%}",
                str(r.labels),
                f"{r.bytes_per_device:,}",
                f"{r.wall_s}",
            )
    Console(stderr=stderr).print(t)


def label_efficiency(rows: list[Row]) -> dict[str, Any] | None:
    """This run's label efficiency: the labels (beyond the seed batch) the uncertainty arm
    needed to reach the random arm's final accuracy, over random's (the metric of
    :func:`trainer.selection.label_ratio`); None before a second iteration."""
    from trainer.selection import label_ratio

    curves = {
        arm: [(float(r.labels), r.frame_accuracy) for r in rows if r.arm == arm]
        for arm in ("unc", "rnd")
    }
    if min(len(c) for c in curves.values()) < 2:
        return None
    start = curves["rnd"][0][0]
    if curves["rnd"][-1][0] <= start:
        return None
    ratio = label_ratio(curves["unc"], curves["rnd"], start=start)
    return {
        "ratio": ratio,
        "target": curves["rnd"][-1][1],
        "random_labels": curves["rnd"][-1][0] - start,
    }


def print_summary(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="production accuracy per iteration (frames read right)")
    for col in ("iteration", "labels", "uncertainty", "random", "Δ", "bytes/device"):
        t.add_column(col)
    for it in sorted({r.iteration for r in rows}):
        u = next(r for r in rows if r.iteration == it and r.arm == "unc")
        r_ = next(r for r in rows if r.iteration == it and r.arm == "rnd")
        t.add_row(
            str(it),
            f"{u.labels}",
            f"{u.frame_accuracy:.1%}",
            f"{r_.frame_accuracy:.1%}",
            f"{u.frame_accuracy - r_.frame_accuracy:+.1%}",
            f"{u.bytes_per_device:,}",
        )
    Console().print(t)
    if (eff := label_efficiency(rows)) is not None:
        Console().print(efficiency_text(eff))


def efficiency_text(eff: dict[str, Any]) -> str:
    """The label-efficiency sentence of the summary (and of the README's tables)."""
    got = "never, within the run" if eff["ratio"] is None else f"{eff['ratio']:.2f}×"
    return (
        f"label efficiency: uncertainty reached random's final {eff['target']:.1%} with "
        f"{got} random's {eff['random_labels']:.0f} labels (beyond the seed batch)"
    )


def parts_lines(rows: list[Row]) -> list[tuple[str, str]]:
    """One line per part of the loop the run exercised beyond train/publish/update (what
    wave 2 added): the replay gate per candidate, the staged rollouts, the operator's fix."""
    out: list[tuple[str, str]] = []
    gates = [f"{r.arm} v{r.version}: {r.extra['gate']['decision']}" for r in rows
             if r.extra.get("gate") and r.extra["gate"].get("frames")]  # fmt: skip
    if gates:
        out.append(("replay gate (per candidate)", ", ".join(gates)))
    rolls = [f"{r.arm} v{r.version}: {rollout_cell(r.extra['rollout'])}" for r in rows
             if r.extra.get("rollout")]  # fmt: skip
    if rolls:
        out.append(("staged rollout (canary first)", ", ".join(rolls)))
    for r in rows:
        if sh := r.extra.get("shadow"):
            out.append((
                "shadow candidate",
                f"{r.arm} devices ran v{sh['version']} (the random arm's model) beside "
                f"v{r.version}: agreement {sh['agreement']:.1%} on the last segment",
            ))  # fmt: skip
        if onto := r.extra.get("ontology"):
            out.append(("ontology change", ontology_cell(onto, rows, r.iteration)))
        if fix := r.extra.get("correction"):
            out.append((
                "operator correction → hub",
                f"{fix['device']}: {fix['said']} → {fix['label']} on {fix['sample']} (item "
                f"{fix['item']}), in the hub's feedback metrics",
            ))  # fmt: skip
    return out


def ontology_cell(onto: dict[str, Any], rows: list[Row], iteration: int) -> str:
    """What the ontology change did, from the hub to the devices' stores and to their answers
    in the segment of ``iteration`` (the first one served after it)."""
    v = onto["version"]
    seg = [r for r in rows if r.iteration == iteration]
    served = sum(int(r.extra.get("ontology_served", {}).get(v, 0)) for r in seg)
    total = sum(sum(int(n) for n in r.extra.get("ontology_served", {}).values()) for r in seg)
    bundles = ", ".join(f"{a} v{n}" for a, n in onto["bundles"].items())
    return (
        f"digits v{v - 1} → v{v} through the hub's API (rename 0 → zero): "
        f"{onto['hub_remapped']} hub samples remapped; {bundles} trained in v{v}; "
        f"{onto['devices']} devices serve v{v} ({served}/{total} frames of the next segment); "
        f"on the devices {onto['device_records']} stored and {onto['device_uploads']} uploaded "
        "samples remapped"
    )


def print_parts(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="the loop's parts in this run")
    t.add_column("part")
    t.add_column("what happened")
    for part, what in parts_lines(rows):
        t.add_row(part, what)
    Console().print(t)


def print_phases(phases: dict[str, dict[str, float]], total_s: float, goal_s: float) -> None:
    """The wall time per phase and the total against the goal (overlapping phases say so)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"where the time went: {total_s:.0f} s wall (goal ≤ {goal_s:.0f} s)")
    for col in ("phase", "times", "wall s", "share"):
        t.add_column(col)
    for name, v in phases.items():
        t.add_row(name, str(int(v["n"])), f"{v['s']:.1f}", f"{v['s'] / max(total_s, 1e-9):.0%}")
    Console().print(t)


def markdown(rows: list[Row], phases: dict[str, dict[str, float]], total_s: float) -> str:
    """The README's demo tables from a run, to paste as they are: production accuracy per
    iteration and arm, one line per loop part, and the wall time per phase."""
    out = [
        "| iteration | labels | uncertainty | random | bytes per device (cumulative) |",
        "|---|---|---|---|---|",
    ]
    for it in sorted({r.iteration for r in rows}):
        u = next(r for r in rows if r.iteration == it and r.arm == "unc")
        r_ = next(r for r in rows if r.iteration == it and r.arm == "rnd")
        name = f"{it} (v1: seed batch only)" if it == 0 else str(it)
        out.append(f"| {name} | {u.labels} | {u.frame_accuracy:.1%} | {r_.frame_accuracy:.1%} "
                   f"| {u.bytes_per_device:,} |")  # fmt: skip
    if (eff := label_efficiency(rows)) is not None:
        out += ["", efficiency_text(eff)]
    out += ["", "| part of the loop | what happened in this run |", "|---|---|"]
    out += [f"| {part} | {what} |" for part, what in parts_lines(rows)]
    out += ["", f"| phase ({total_s:.0f} s wall in all) | times | wall s |", "|---|---|---|"]
    for name, v in phases.items():  # an indented phase is a part of the one above it
        shown = f"– {name.strip()}" if name.startswith(" ") else name
        out.append(f"| {shown} | {int(v['n'])} | {v['s']:.1f} |")
    return "\n".join(out) + "\n"
