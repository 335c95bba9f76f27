"""``python -m fuzz [--inputs N] [--seconds S] [--jobs J] [--json FILE] [TARGET...]``: fuzzing.

Runs each target of :mod:`fuzz.targets` under atheris/libFuzzer, one process per target, ``J``
at a time, until it has tried ``N`` inputs (``FUZZ_INPUTS`` in ``make fuzz``; 0: no goal) or
``S`` seconds passed (``FUZZ_SECONDS``), and prints a table per target: inputs tried, crashes
(an input that raised something other than the parser's documented refusal, or hung for 10 s;
its bytes are kept under ``--workdir``), wall time (start-up included) and CPU time, inputs per
second of fuzzing and per CPU second (the CPU rate moves less with the machine's load), and
whether the goal was met.
Exit 1 if anything crashed or a target fell short of ``N`` within ``S`` seconds, 2 if atheris
is not installed (``pip install atheris``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_RSS = re.compile(r"stat::peak_rss_mb:\s*(\d+)")
_SETUP = re.compile(r"setup-done: cpu ([\d.]+) at ([\d.]+)")


@dataclass
class Result:
    target: str
    seconds: float  # wall time of the process (start-up and instrumentation included)
    fuzz_seconds: float  # wall time from the end of start-up
    cpu_seconds: float  # its user + system time while fuzzing (start-up left out)
    inputs: int
    per_second: float
    per_cpu_second: float
    crashes: int
    peak_rss_mb: int
    goal: int  # inputs asked for (0: none)
    detail: str

    @property
    def short(self) -> bool:
        return self.goal > 0 and self.inputs < self.goal


def _run(name: str, seconds: float, runs: int, workdir: Path) -> Result:
    t0 = time.monotonic()
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fuzz._one", name, str(seconds), str(workdir), str(runs)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:  # wait4: this child's own CPU time (several run at once)
            _pid, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:
            status, usage = 0, None
        proc.returncode = os.waitstatus_to_exitcode(status)
    took, ended = time.monotonic() - t0, time.time()
    text = log.read_text(errors="replace")
    found = _RUNS.findall(text)
    runs_done = int(found[-1]) if found else 0
    rss = max([int(m) for m in _RSS.findall(text)] or [0])
    setup = _SETUP.findall(text)
    setup_cpu, setup_at = (float(setup[-1][0]), float(setup[-1][1])) if setup else (0.0, 0.0)
    cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    cpu = max(0.0, cpu - setup_cpu)
    fuzz_s = ended - setup_at if setup else took
    crashed = proc.returncode != 0
    detail = ""
    if crashed:
        lines = [ln for ln in text.splitlines() if ln.strip() and "Instrumenting" not in ln]
        start = next(
            (i for i, ln in enumerate(lines) if "Uncaught Python exception" in ln or "ERROR" in ln),
            max(0, len(lines) - 12),
        )
        detail = "\n".join(lines[start : start + 14])
    return Result(
        target=name,
        seconds=round(took, 1),
        fuzz_seconds=round(fuzz_s, 1),
        cpu_seconds=round(cpu, 3),  # 3000 inputs of a fast parser take well under 0.1 s
        inputs=runs_done,
        per_second=round(runs_done / max(fuzz_s, 1e-9)),
        per_cpu_second=round(runs_done / max(cpu, 1e-9)),
        crashes=int(crashed),
        peak_rss_mb=rss,
        goal=runs,
        detail=detail,
    )


def _table(results: list[Result]) -> str:
    from fuzz.targets import TARGETS

    rows = [
        f"{'target':<14} {'parser':<44} {'inputs':>10} {'crashes':>7} {'time s':>7} "
        f"{'start s':>7} {'cpu s':>7} {'inputs/s':>9} {'/cpu s':>8}  goal"
    ]
    for r in results:
        goal = "-" if not r.goal else ("short" if r.short else "met")
        rows.append(
            f"{r.target:<14} {TARGETS[r.target].what[:44]:<44} {r.inputs:>10,} {r.crashes:>7} "
            f"{r.seconds:>7} {r.seconds - r.fuzz_seconds:>7.1f} {r.cpu_seconds:>7.1f} "
            f"{r.per_second:>9,} {r.per_cpu_second:>8,}  {goal}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", help="targets to run (default: all)")
    p.add_argument(
        "--inputs", type=int, default=0, help="inputs to try per target (0: run --seconds)"
    )
    p.add_argument("--seconds", type=float, default=60.0, help="time per target (the cap)")
    p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    p.add_argument("--workdir", type=Path, default=None, help="corpus, crash files and logs")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("error: atheris is not installed here (pip install atheris)", file=sys.stderr)
        return 2
    from fuzz.targets import TARGETS

    names = a.targets or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        print(f"error: unknown targets {unknown}; known: {sorted(TARGETS)}", file=sys.stderr)
        return 2
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="leanloop-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(lambda n: _run(n, a.seconds, a.inputs, workdir), names))
    print(_table(results))
    for r in results:
        if r.crashes:
            print(f"\n--- crash in {r.target} (inputs kept in {workdir}/crashes):\n{r.detail}")
    short = [r.target for r in results if r.short and not r.crashes]
    if short:
        print(f"\nfewer than {a.inputs:,} inputs within {a.seconds:g} s: {', '.join(short)} "
              "(a slower or busier machine: raise FUZZ_SECONDS)")  # fmt: skip
    if a.json is not None:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"workdir: {workdir}")
    return 1 if any(r.crashes or r.short for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
