"""``leanloop identity``: the admin's side of device identity (see docs/operations.md).

- ``mint-secret``: a one-time (or N-use) enrolment secret that expires;
- ``approve DEVICE``: accept the key a device asked to be re-keyed with (or one given);
- ``reset DEVICE``: forget a device's key and token, so its id can be enrolled afresh.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from leanloop._cli_common import AdminToken, HubUrl
from runtime.console import JsonFlag
from runtime.errors import LeanloopError

if TYPE_CHECKING:
    from hub.client import HubAdminClient

__all__ = ["identity_app"]

identity_app = typer.Typer(
    help="Device identity: enrolment secrets, approve or reset a device's key.",
    no_args_is_help=True,
)


def _client(hub: str, token: str | None) -> HubAdminClient:
    from hub.client import HubAdminClient

    if not token:
        typer.echo("error: no admin token: pass --token or set LEANLOOP_ADMIN_TOKEN", err=True)
        raise typer.Exit(2)
    return HubAdminClient(hub, token)


def _fail(e: LeanloopError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


@identity_app.command("mint-secret")
def mint_secret(
    hub: HubUrl,
    token: AdminToken = None,
    uses: Annotated[int, typer.Option(min=1, help="enrolments it pays for")] = 1,
    ttl: Annotated[float, typer.Option(min=1, help="seconds until it expires")] = 86400.0,
    cohort: Annotated[str | None, typer.Option(help="cohort the devices join")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Mint an enrolment secret (one-time by default, expiring after --ttl seconds)."""
    try:
        got = _client(hub, token).mint_enroll_secret(uses, ttl, cohort)
    except LeanloopError as e:
        raise _fail(e) from e
    typer.echo(json.dumps(got) if as_json else got["secret"])


@identity_app.command("approve")
def approve(
    device: Annotated[str, typer.Argument(help="device id")],
    hub: HubUrl,
    token: AdminToken = None,
    key: Annotated[
        str | None, typer.Option(help="public key (base64); default: the pending one")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Accept a key for a device; its old token stops working, its key then gets a new one."""
    try:
        chosen = _client(hub, token).approve_device(device, key)
    except LeanloopError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps({"device": device, "approved_key": chosen}))
    else:
        typer.echo(f"approved {device}: key {chosen}")


@identity_app.command("reset")
def reset(
    device: Annotated[str, typer.Argument(help="device id")],
    hub: HubUrl,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Forget a device's key and token; it may then enrol again with an enrolment secret."""
    try:
        _client(hub, token).reset_device(device)
    except LeanloopError as e:
        raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps({"device": device, "reset": True}))
    else:
        typer.echo(f"reset {device}: it may enrol again")
