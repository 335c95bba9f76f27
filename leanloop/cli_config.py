"""Operator helpers: ``leanloop config check FILE`` and ``leanloop mark-good VERSION``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leanloop._cli_common import DeviceConfig, StateDir, _state_dir, handled
from runtime.console import JsonFlag, say

__all__ = ["config_app", "mark_good"]

config_app = typer.Typer(help="The device configuration file.", no_args_is_help=True)


@config_app.command("check")
@handled
def config_check(
    file: Annotated[Path, typer.Argument(help="device config YAML")],
    as_json: JsonFlag = False,
    strict: Annotated[bool, typer.Option(help="warnings fail the check too")] = False,
) -> None:
    """Every error of a device config at once (with its line and "did you mean"), and warnings
    for values that make no sense. Exit 2 when there is an error (or, with --strict, a
    warning), 0 otherwise."""
    from runtime.config_check import check_config

    findings = check_config(file)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"level": f.level, "key": f.key, "line": f.line, "message": f.message}
                    for f in findings
                ],
                indent=2,
            )
        )
    else:
        for f in findings:
            typer.echo(f.render(file), err=f.level == "error")
        if not findings:
            typer.echo(f"{file}: ok")
    errors = sum(f.level == "error" for f in findings)
    if errors or (strict and findings):
        raise typer.Exit(2)


@handled
def mark_good(
    version: Annotated[int, typer.Argument(help="the version to allow again", min=0)],
    bundle: Annotated[
        str | None, typer.Option(help="bundle name (default: the active one)")
    ] = None,
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Let the device install VERSION again after an operator rollback (or a failure there):
    it does so once the hub desires it."""
    from runtime.operator import mark_good as device_mark_good

    message = device_mark_good(_state_dir(config, state_dir), version, bundle)
    say(as_json, {"version": version, "bundle": bundle, "message": message}, message)
