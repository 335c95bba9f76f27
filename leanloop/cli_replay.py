"""Replay commands: ``leanloop replay``, ``leanloop bless``, ``leanloop metrics``.

- ``replay CANDIDATE --baseline B [--hub URL | --history DIR] [--since T] [--cohort C]
  [--spec gate.yaml] [--workers N] [--work DIR] [--bless --who NAME] [--json]``: run the candidate
  bundle folder and the baseline (a bundle folder, or a version number fetched from the hub)
  with the device pipeline on history (downloaded from the hub, or a local history folder),
  judge the gate, write ``report.json`` and ``report.html``; with ``--bless`` the report goes to
  the hub and, if the gate passed, the candidate is blessed. Exit 0 pass, 1 blocked.
- ``bless REPORT_DIR --hub URL --who NAME``: upload a report folder and bless its candidate.
- ``metrics --hub URL --by cohort,version --window 1d [--events a,b] [--json]``: comparative
  metrics per group, this window beside the previous one.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from leanloop._cli_common import AdminToken, HubUrl, handled
from leanloop._cli_common import admin_client as _admin_client
from runtime.errors import BundleError, ConfigError, LeanloopError

__all__ = ["replay_app"]

replay_app = typer.Typer()

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str) -> float:
    """``90s``, ``15m``, ``6h``, ``1d``, ``2w`` -> seconds. Raises ConfigError."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m is None or float(m[1]) <= 0:
        raise ConfigError(f"--window {text!r}: use a number and a unit: 90s, 15m, 6h, 1d, 2w")
    return float(m[1]) * _UNITS[m[2]]


def parse_since(text: str | None) -> float | None:
    """ISO date/time (UTC unless it says) or unix seconds -> unix seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: not an ISO date/time or unix seconds") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _progress_stage(console: Any) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    prog = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console, transient=False,
    )  # fmt: skip

    def stage(label: str, total: int) -> Any:
        task = prog.add_task(f"replay {label}", total=total)
        return lambda n: prog.advance(task, n)

    return prog, stage


def _print_report(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title="gate")
    for col in ("slice", "metric", "n", "baseline", "candidate", "delta [CI]", "status"):
        t.add_column(col)
    for j in report["decision"]["judgements"]:
        if j["status"] == "pass" and j["slice"] != "all":
            continue
        f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        ci = f"{f(j['delta'])} [{f(j['ci_low'])}, {f(j['ci_high'])}]"
        t.add_row(j["slice"], j["metric"], str(j["n"]), f(j["baseline"]), f(j["candidate"]),
                  ci, j["status"])  # fmt: skip
    console.print(t)
    k = Table(title=f"KPIs ({report['spec']['behaviour']['model']})")
    for col in ("kpi", "baseline", "candidate"):
        k.add_column(col)
    for name, v in report["kpis"]["candidate"].items():
        b = report["kpis"]["baseline"][name]
        k.add_row(name, "—" if b is None else f"{b:.4g}", "—" if v is None else f"{v:.4g}")
    console.print(k)
    console.print("frames: " + ", ".join(f"{a} {b}" for a, b in report["counts"].items()))


@replay_app.command("replay")
@handled
def replay(
    candidate: Annotated[Path, typer.Argument(help="candidate bundle folder")],
    baseline: Annotated[str, typer.Option(help="baseline: bundle folder, or version on --hub")],
    hub: Annotated[str | None, typer.Option(help="hub URL (history, baseline, --bless)")] = None,
    history: Annotated[Path | None, typer.Option(help="local history folder instead")] = None,
    since: Annotated[str | None, typer.Option(help="only frames from this time (ISO/unix)")] = None,
    cohort: Annotated[str | None, typer.Option(help="only frames of this cohort")] = None,
    spec: Annotated[Path | None, typer.Option(help="gate spec YAML (default: built-in)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes")] = 1,
    work: Annotated[Path, typer.Option(help="work folder (resumable)")] = Path("replay-work"),
    bless: Annotated[bool, typer.Option("--bless", help="on pass, bless on --hub")] = False,
    on_hub: Annotated[
        bool, typer.Option("--on-hub", help="run it as a job on --hub (its history, its CPUs)")
    ] = False,
    who: Annotated[str, typer.Option(help="who blesses")] = "admin",
    token: AdminToken = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Replay CANDIDATE and the baseline on production history and judge the gate."""
    from rich.console import Console

    from hub.replay.evaluate import report_digest, run_replay
    from hub.replay.fetch import download_bundle, download_history
    from hub.replay.history import HistoryDir
    from hub.replay.report import write_report
    from hub.replay.spec import load_gate_spec
    from runtime.bundle.loader import read_manifest

    gate = load_gate_spec(spec)
    start = parse_since(since)
    if (hub is None) == (history is None):
        raise ConfigError("give exactly one of --hub (download its history) or --history DIR")
    if bless and hub is None:
        raise ConfigError("--bless needs --hub")
    try:
        cand_m = read_manifest(candidate)
    except BundleError as e:
        raise ConfigError(f"candidate: {e}") from e
    client = _admin_client(hub, token) if hub else None
    if on_hub:
        if client is None or not baseline.isdigit():
            raise ConfigError("--on-hub needs --hub and --baseline as a published version")
        _replay_on_hub(
            client, candidate, int(baseline), gate, start, cohort, workers, bless, who, as_json
        )
        return
    console = Console(stderr=True)
    base_dir = Path(baseline)
    if not base_dir.is_dir():
        if not baseline.isdigit() or client is None:
            raise ConfigError(
                f"--baseline {baseline!r}: not a bundle folder (or a version with --hub)"
            )
        base_dir = download_bundle(
            client, cand_m.name, int(baseline), work / f"baseline-v{baseline}"
        )
    if client is not None:
        hist = HistoryDir(work / "history")
        download_history(client, hist.path, None)
    else:
        assert history is not None
        hist = HistoryDir(history)
    prog, stage = _progress_stage(console)
    with prog:
        report = run_replay(
            candidate, base_dir, hist, gate, work / "results", workers, start, cohort, stage, who
        )
    j, h = write_report(report, work / "report")
    dec = report["decision"]
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
    else:
        _print_report(report, console)
        typer.echo(f"report: {h}")
    if client is not None and bless:
        stored = client.post_report(j.read_bytes(), h.read_bytes())
        if stored["digest"] != report_digest(report):
            raise ConfigError("the hub computed another report digest")
        if dec["decision"] == "pass":
            b = client.bless(stored["digest"], who)
            typer.echo(
                f"blessed {b['bundle']} v{b['version']} (report {stored['digest'][:12]})",
                err=as_json,  # with --json, stdout holds the report alone
            )
    typer.echo(dec["summary"], err=as_json)
    if dec["decision"] != "pass":
        raise typer.Exit(1)


def _replay_on_hub(
    client: Any, candidate: Path, baseline: int, gate: Any, since: float | None,
    cohort: str | None, workers: int, bless: bool, who: str, as_json: bool,
) -> None:  # fmt: skip
    job_id = client.start_replay_job(
        candidate, baseline, gate.model_dump(mode="json"), since=since, cohort=cohort,
        workers=workers, bless=bless, who=who,
    )  # fmt: skip
    typer.echo(f"replay job {job_id} started on the hub", err=True)
    while (job := client.replay_job(job_id))["state"] in ("queued", "running"):
        time.sleep(0.5)
    if job["state"] == "failed":
        raise LeanloopError(f"replay job {job_id} failed: {job.get('error')}")
    if as_json:
        typer.echo(json.dumps(job, sort_keys=True))
    else:
        typer.echo(f"report: {job['report_digest']}")
        if job.get("blessed"):
            typer.echo(f"blessed {candidate.name} (report {job['report_digest'][:12]})")
    typer.echo(job["summary"], err=as_json)
    if job["decision"] != "pass":
        raise typer.Exit(1)


@replay_app.command("bless")
@handled
def bless_report(
    report: Annotated[Path, typer.Argument(help="report folder (report.json, report.html)")],
    hub: HubUrl,
    who: Annotated[str, typer.Option(help="who blesses")],
    token: AdminToken = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the blessing as JSON")] = False,
) -> None:
    """Upload a replay report to the hub and bless its candidate (the gate must have passed)."""
    try:
        data = (report / "report.json").read_bytes()
    except OSError as e:
        raise ConfigError(f"{report}/report.json: cannot read: {e.strerror or e}") from e
    html = report / "report.html"
    client = _admin_client(hub, token)
    stored = client.post_report(data, html.read_bytes() if html.exists() else None)
    b = client.bless(stored["digest"], who)
    if as_json:
        typer.echo(json.dumps(b, sort_keys=True))
        return
    typer.echo(f"blessed {b['bundle']} v{b['version']} (report {stored['digest'][:12]})")


@replay_app.command("metrics")
@handled
def metrics(
    hub: HubUrl,
    by: Annotated[
        str, typer.Option(help="group by: cohort,version,device,bundle")
    ] = "cohort,version",
    window: Annotated[str, typer.Option(help="window: 90s, 15m, 6h, 1d, 2w")] = "1d",
    events: Annotated[str, typer.Option(help="event classes, comma-separated")] = "",
    now: Annotated[str | None, typer.Option(help="end of the window (default: now)")] = None,
    token: AdminToken = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Comparative metrics per group: this window beside the previous one."""
    from rich.console import Console
    from rich.table import Table

    seconds = parse_window(window)
    end = parse_since(now) or time.time()
    client = _admin_client(hub, token)
    data = client.metrics(by, seconds, end, events or None)
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
        return
    t = Table(title=f"metrics by {by}, window {window} (previous in brackets)")
    cols = ["frames", "error_rate", "event_rate", "latency_p95_ms", "correction_rate",
            "accuracy_where_corrected"]  # fmt: skip
    for c in ["group", *cols]:
        t.add_column(c)

    def cell(cur: Any, prev: Any) -> str:
        f = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
        return f"{f(cur)} [{f(prev)}]"

    for g in data["groups"]:
        name = ",".join(f"{k}={v}" for k, v in g["group"].items())
        t.add_row(name, *(cell(g["current"][c], g["previous"][c]) for c in cols))
    Console().print(t)
