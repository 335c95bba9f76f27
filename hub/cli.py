"""Hub commands, mounted by the ``leanloop`` console command.

- ``hub_app``: ``serve --data DIR [--host H] [--port P] [--keys DIR]``
- ``keys_app``: ``init --out DIR [--expires-days N]``; ``rotate-root --keys DIR [--replace ROLE]``
  (root version N+1, revoking the replaced roles' keys); ``push-root --keys DIR --hub URL``
- :func:`publish_command`: upload a built bundle, sign it into targets, optionally roll it out.

Each command is a thin shell over :mod:`hub.app`, :mod:`hub.signing` and :mod:`hub.client`;
leanloop errors are printed on one line and exit with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hub.signing import ROLES, init_keys, rotate_root
from runtime.console import JsonFlag, say
from runtime.errors import LeanloopError, first_line

__all__ = ["hub_app", "keys_app", "publish_command"]

hub_app = typer.Typer(help="Run the hub.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the signing keys (TUF roles).", no_args_is_help=True)


@hub_app.callback()
def _hub_group() -> None:
    """Run the hub (a callback keeps `serve` a sub-command even while it is the only one)."""


@keys_app.callback()
def _keys_group() -> None:
    """Manage the signing keys (TUF roles)."""


def _fail(e: LeanloopError) -> typer.Exit:
    typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@hub_app.command("serve")
def serve(
    data: Annotated[Path | None, typer.Option("--data", help="hub data folder")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [8470]")] = None,
    keys: Annotated[
        Path | None, typer.Option("--keys", help="`keys init` folder, needed on first start")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="hub config YAML (HubConfig fields: database_url, s3, tls_*, ...); "
            "--data/--host/--port/--keys override it",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each request")] = False,
    require_blessing: Annotated[
        bool,
        typer.Option(
            "--require-blessing",
            help="refuse to publish or roll out a bundle without a replay blessing (unless "
            "forced); also the config's require_blessing",
        ),
    ] = False,
) -> None:
    """Serve the Hub API until interrupted (tokens are in DATA/admin.token, DATA/enroll.token)."""
    from hub.app import run
    from hub.config import load_hub_config
    from runtime.logs import setup_logging

    # journald priorities and no second timestamp under systemd; per-request lines at debug.
    setup_logging(verbose)
    overrides = {"data_dir": data, "host": host, "port": port, "keys_dir": keys,
                 "require_blessing": require_blessing or None}  # fmt: skip
    try:
        cfg = load_hub_config(config, {k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        typer.secho(f"error: {first_line(e)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from e
    try:
        run(cfg)
    except LeanloopError as e:
        raise _fail(e) from e


@keys_app.command("init")
def keys_init(
    out: Annotated[Path, typer.Option("--out", help="folder to create the keys in")],
    expires_days: Annotated[int, typer.Option(help="root metadata lifetime")] = 365,
    as_json: JsonFlag = False,
) -> None:
    """Create root/targets (admin, offline) and snapshot/timestamp (hub) keys and root.json."""
    try:
        init_keys(out, expires_days)
    except LeanloopError as e:
        raise _fail(e) from e
    say(
        as_json,
        {
            "root": str(out / "root.json"),
            "admin": str(out / "admin"),
            "online": str(out / "online"),
        },
        f"wrote {out}/root.json; keep {out}/admin offline, give {out}/online to the hub",
    )


@keys_app.command("rotate-root")
def keys_rotate_root(
    keys: Annotated[Path, typer.Option("--keys", help="`keys init` folder")] = Path("keys"),
    replace: Annotated[
        list[str] | None,
        typer.Option(
            "--replace",
            help=f"role whose key is revoked and replaced (repeatable): {', '.join(ROLES)}",
        ),
    ] = None,
    expires_days: Annotated[int, typer.Option(help="new root metadata lifetime")] = 365,
    as_json: JsonFlag = False,
) -> None:
    """Sign root version N+1 with the old and new root keys; devices follow at their next check."""
    try:
        new = rotate_root(keys, frozenset(replace or ()), expires_days)
    except LeanloopError as e:
        raise _fail(e) from e
    done = ", ".join(sorted(replace or ())) or "no key (expiry renewed)"
    say(
        as_json,
        {
            "root_version": new.signed.version,
            "replaced": sorted(replace or ()),
            "retired": str(keys / "retired" / f"v{new.signed.version - 1}"),
        },
        f"wrote root version {new.signed.version} replacing {done}; old keys are in "
        f"{keys}/retired/v{new.signed.version - 1}; now run `leanloop keys push-root`",
    )


@keys_app.command("push-root")
def keys_push_root(
    keys: Annotated[Path, typer.Option("--keys", help="`keys init` folder")] = Path("keys"),
    hub_url: Annotated[str, typer.Option("--hub", help="hub URL")] = "http://127.0.0.1:8470",
    token: Annotated[
        str | None, typer.Option("--token", envvar="LEANLOOP_ADMIN_TOKEN", help="admin token")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload the new root(s) to the hub (with targets re-signed and online keys if replaced)."""
    from hub.client import HubAdminClient

    if token is None:
        raise typer.BadParameter("give --token or set LEANLOOP_ADMIN_TOKEN", param_hint="--token")
    try:
        version = HubAdminClient(hub_url, token).push_root(keys)
    except LeanloopError as e:
        raise _fail(e) from e
    say(as_json, {"root_version": version}, f"the hub serves root version {version}")


def publish_command(
    bundle_dir: Annotated[Path, typer.Argument(help="a built bundle folder (with manifest.json)")],
    hub_url: Annotated[str, typer.Option("--hub", help="hub URL")] = "http://127.0.0.1:8470",
    keys_dir: Annotated[Path, typer.Option("--keys", help="`keys init` folder")] = Path("keys"),
    token: Annotated[
        str | None, typer.Option("--token", envvar="LEANLOOP_ADMIN_TOKEN", help="admin token")
    ] = None,
    cohort: Annotated[
        str | None, typer.Option("--cohort", help="also roll the bundle out to this cohort")
    ] = None,
    force_reason: str | None = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a bundle, sign it into the hub's targets, and optionally roll it out to a cohort."""
    from hub.client import HubAdminClient
    from runtime.bundle.manifest import MANIFEST_NAME, Manifest

    if token is None:
        raise typer.BadParameter("give --token or set LEANLOOP_ADMIN_TOKEN", param_hint="--token")
    from runtime.console import byte_progress

    client = HubAdminClient(hub_url, token)
    try:
        # A bar on stderr at a terminal (not with --json): the upload of the bundle's files.
        with byte_progress(as_json) as progress:
            bar = progress.add_task(f"upload {bundle_dir.name}", total=None)
            version = client.publish_bundle(
                bundle_dir,
                keys_dir,
                force_reason=force_reason,
                on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
        manifest = Manifest.model_validate_json((bundle_dir / MANIFEST_NAME).read_bytes())
        n = None
        if cohort is not None:
            n = client.rollout(
                manifest.name, manifest.version, cohort=cohort, force_reason=force_reason
            )
        text = f"published {manifest.name} {manifest.version} (targets version {version})"
        if n is not None:
            text += f"\nrolled out to {n} device(s) of cohort {cohort}"
        say(
            as_json,
            {
                "name": manifest.name,
                "version": manifest.version,
                "targets_version": version,
                "cohort": cohort,
                "devices": n,
            },
            text,
        )
    except LeanloopError as e:
        raise _fail(e) from e
