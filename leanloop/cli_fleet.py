"""``leanloop fleet list/show`` and ``leanloop rollout create/status/pause/resume/abort/rollback``.

Hub admin commands over :class:`hub.fleet_client.FleetClient`. ``--json`` prints what the hub
answered (documented in docs/operations.md, "Rollouts"); otherwise rich tables. A hub answering
400/404/409 (a bad spec, an unknown rollout, a pause of a paused rollout) is an input error:
exit 2 with its one-line reason.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from leanloop._cli_common import HUB_URL, AdminToken, HubUrl
from runtime.console import JsonFlag
from runtime.errors import ConfigError, LeanloopError

__all__ = ["fleet_app", "rollout_app"]

fleet_app = typer.Typer(help="Hub admin: the devices of the fleet.", no_args_is_help=True)
rollout_app = typer.Typer(
    help="Hub admin: staged rollouts (waves, halts) and remote rollback.", no_args_is_help=True
)

F = TypeVar("F", bound=Callable[..., Any])


def _client(hub: str, token: str | None) -> Any:
    from hub.fleet_client import FleetClient

    if not token:
        raise ConfigError("no admin token: pass --token or set LEANLOOP_ADMIN_TOKEN")
    return FleetClient(hub, token)


def handled(fn: F) -> F:
    """One ``error:`` line and the exit code: 2 for bad input (the hub's 400/404/409 about the
    request included), 1 for a failed operation. (``leanloop.cli.handled``'s rules; not imported
    from there because ``python -m leanloop.cli`` would import that module a second time.)"""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        from hub.errors import BadRequest, Conflict, NotFound

        try:
            return fn(*a, **kw)
        except typer.Exit:
            raise
        except (ConfigError, BadRequest, Conflict, NotFound, FileNotFoundError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except LeanloopError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, time.time() - t)
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def _running(d: dict[str, Any]) -> str:
    active = (d.get("status") or {}).get("active") or {}
    if not active.get("bundle"):
        return "-"
    return f"{active['bundle']} v{active.get('version')} ({active.get('status')})"


# ---- fleet -----------------------------------------------------------------------------------


@fleet_app.command("list")
@handled
def fleet_list(
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    cohort: Annotated[str | None, typer.Option(help="only this cohort")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every device: cohort, what it runs, what it was told to run, last contact."""
    devices = [d for d in _client(hub, token).devices() if cohort is None or d["cohort"] == cohort]
    if as_json:
        _print_json(devices)
        return
    t = Table("device", "cohort", "running", "desired", "update", "last seen")
    for d in devices:
        want = d.get("desired") or {}
        t.add_row(
            d["device_id"],
            d["cohort"] or "-",
            _running(d),
            f"{want['bundle']} v{want['version']}" if want else "-",
            str((d.get("status") or {}).get("update_state", "-")),
            _ago(d.get("last_seen")),
        )
    Console().print(t)
    typer.echo(f"{len(devices)} device(s)")


@fleet_app.command("show")
@handled
def fleet_show(
    device: Annotated[str, typer.Argument(help="device id")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """One device: its last status report and its latest update events."""
    found = [d for d in _client(hub, token).devices() if d["device_id"] == device]
    if not found:
        raise ConfigError(f"no device {device!r} on this hub")
    d = found[0]
    if as_json:
        _print_json(d)
        return
    status = d.get("status") or {}
    t = Table(show_header=False)
    t.add_row("device", d["device_id"])
    t.add_row("cohort", d["cohort"] or "-")
    t.add_row("running", _running(d))
    want = d.get("desired") or {}
    t.add_row("desired", f"{want['bundle']} v{want['version']}" if want else "-")
    t.add_row("update state", str(status.get("update_state", "-")))
    t.add_row("last update error", str(status.get("last_update_error") or "-"))
    t.add_row("last seen", _ago(d.get("last_seen")))
    for e in d.get("events") or []:
        t.add_row(
            f"event {e.get('kind')}",
            f"{e.get('bundle')} v{e.get('version')}: {e.get('cause')} {e.get('reason', '')}",
        )
    Console().print(t)


# ---- rollouts --------------------------------------------------------------------------------


def _show_rollout(r: dict[str, Any]) -> None:
    head = f"rollout {r['id']}: {r['bundle']} v{r['version']}"
    if r["kind"] == "rollback":
        head += f" (rollback to the content of v{r['rollback_of']})"
    head += f" to {'cohort ' + r['cohort'] if r['cohort'] else 'the fleet'}: {r['status']}"
    typer.echo(head + (f" — {r['reason']}" if r.get("reason") else ""))
    t = Table("wave", "target", "ordered", "succeeded", "failed", "pending")
    for w in r["waves"]:
        mark = " ←" if w["wave"] == r["wave"] and r["status"] == "running" else ""
        t.add_row(
            f"{w['wave']}{mark}",
            *(str(w[k]) for k in ("target", "ordered", "succeeded", "failed", "pending")),
        )
    Console().print(t)


def _waves(canary: int | None, canary_percent: float | None, waves: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if canary is not None and canary_percent is not None:
        raise ConfigError("give --canary or --canary-percent, not both")
    if canary is not None:
        out.append({"count": canary})
    elif canary_percent is not None:
        out.append({"percent": canary_percent})
    try:
        out += [{"percent": float(p)} for p in waves.split(",") if p.strip()]
    except ValueError as e:
        raise ConfigError(f"--waves {waves!r}: expected percentages like 25,50,100") from e
    return out


def _window(text: str) -> dict[str, Any]:
    """``HH:MM-HH:MM`` or ``0,1,2@HH:MM-HH:MM`` (days 0 = Monday)."""
    days, _, span = text.rpartition("@")
    start, _, end = span.partition("-")
    window: dict[str, Any] = {"start": start.strip(), "end": end.strip()}
    if days:
        try:
            window["days"] = [int(d) for d in days.split(",")]
        except ValueError as e:
            raise ConfigError(f"--window {text!r}: days are numbers 0 (Monday) to 6") from e
    return window


@rollout_app.command("create")
@handled
def rollout_create(
    bundle: Annotated[str, typer.Argument(help="bundle name")],
    version: Annotated[int, typer.Argument(help="published version to roll out")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    cohort: Annotated[
        str | None, typer.Option(help="only this cohort (default: the fleet)")
    ] = None,
    canary: Annotated[int | None, typer.Option(help="first wave: this many devices")] = None,
    canary_percent: Annotated[float | None, typer.Option(help="first wave: this share")] = None,
    waves: Annotated[str, typer.Option(help="next waves, cumulative percentages")] = "10,50,100",
    soak: Annotated[float, typer.Option(help="seconds a wave runs before the next")] = 600,
    success: Annotated[float, typer.Option(help="share that must run it to advance")] = 0.9,
    error: Annotated[float, typer.Option(help="failed/executed above this halts")] = 0.05,
    min_executed: Annotated[int, typer.Option(help="finished devices before a halt")] = 1,
    window: Annotated[
        list[str] | None, typer.Option(help="maintenance window HH:MM-HH:MM or 0,1@HH:MM-HH:MM")
    ] = None,
    pin: Annotated[list[str] | None, typer.Option(help="device the rollout leaves alone")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a staged rollout: canary, then waves, halting on failures."""
    spec = {
        "bundle": bundle,
        "version": version,
        "cohort": cohort,
        "waves": _waves(canary, canary_percent, waves),
        "soak_s": soak,
        "success_threshold": success,
        "error_threshold": error,
        "min_executed": min_executed,
        "windows": [_window(w) for w in window or []],
        "pinned": pin or [],
    }
    r = _client(hub, token).create_rollout(spec)
    _print_json(r) if as_json else _show_rollout(r)


@rollout_app.command("status")
@handled
def rollout_status(
    rollout_id: Annotated[int | None, typer.Argument(help="rollout id (default: all)")] = None,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Per-wave counts, halts and their reasons."""
    c = _client(hub, token)
    rollouts = [c.rollout_status(rollout_id)] if rollout_id is not None else c.rollouts()
    if as_json:
        _print_json(rollouts[0] if rollout_id is not None else rollouts)
        return
    if not rollouts:
        typer.echo("no rollouts")
    for r in rollouts:
        _show_rollout(r)


def _action(action: str) -> Callable[..., None]:
    @handled
    def command(
        rollout_id: Annotated[int, typer.Argument(help="rollout id")],
        hub: HubUrl = HUB_URL,
        token: AdminToken = None,
        as_json: JsonFlag = False,
    ) -> None:
        r = _client(hub, token).rollout_action(rollout_id, action)
        _print_json(r) if as_json else _show_rollout(r)

    command.__doc__ = {
        "pause": "Stop ordering devices (those ordered go on).",
        "resume": "Go on with a paused or halted rollout.",
        "abort": "Stop for good; ordered devices that do not run it yet get their old version.",
    }[action]
    return command


for _name in ("pause", "resume", "abort"):
    rollout_app.command(_name)(_action(_name))


@rollout_app.command("rollback")
@handled
def rollout_rollback(
    bundle: Annotated[str, typer.Argument(help="bundle name")],
    to: Annotated[int, typer.Option("--to", help="the earlier version whose content to restore")],
    keys: Annotated[Path, typer.Option(help="keys folder from `leanloop keys init`")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    cohort: Annotated[
        str | None, typer.Option(help="only this cohort (default: the fleet)")
    ] = None,
    waves: Annotated[str, typer.Option(help="cumulative percentages")] = "100",
    soak: Annotated[float, typer.Option(help="seconds a wave runs before the next")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Order a cohort or the fleet back to an earlier release's content (a new signed version
    re-pointing to the old files; devices install it as an order, not a failure)."""
    c = _client(hub, token)
    version = c.repoint_release(bundle, to, keys)
    spec = {
        "bundle": bundle,
        "version": version,
        "cohort": cohort,
        "waves": _waves(None, None, waves),
        "soak_s": soak,
        "kind": "rollback",
        "rollback_of": to,
    }
    r = c.create_rollout(spec)
    _print_json(r) if as_json else _show_rollout(r)
