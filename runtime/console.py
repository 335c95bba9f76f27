"""What the ``leanloop`` commands print: the result on stdout, progress bars on stderr.

Both the device commands (``leanloop/``) and the hub's (``hub/cli.py``) print this way, so it
lives here at the bottom of the layering (``typer`` and ``rich`` are base dependencies; nothing
here needs a device extra).

A result is text, or with ``--json`` (:data:`JsonFlag`) one JSON object (:func:`say`).

Bars are drawn by rich on a stderr console, and only when that stderr is a terminal and the
command was not asked for ``--json``: stdout stays the command's result (a pipe or a script
sees exactly the same bytes with or without bars), and a log file never fills with redraws.
``TTY_COMPATIBLE=1`` / ``TTY_INTERACTIVE=1`` (rich's own variables) force a terminal, which is
how the tests drive the bars through a pipe.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # rich is imported when a bar is wanted, not on every command's start
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["JsonFlag", "bars_wanted", "byte_progress", "say", "step_progress"]

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def say(as_json: bool, data: dict[str, Any], text: str) -> None:
    """The command's result: ``data`` as one JSON object with ``--json``, else ``text``."""
    typer.echo(json.dumps(data, sort_keys=True, default=str) if as_json else text)


def bars_wanted(as_json: bool, console: Console | None = None) -> Console | None:
    """The stderr console to draw on, or None when no bar should be drawn."""
    from rich.console import Console

    console = console or Console(stderr=True)
    return console if console.is_terminal and not as_json else None


def byte_progress(as_json: bool, console: Console | None = None) -> Progress:
    """A bar for bytes moving (upload, download): done/total, %, rate, time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    con = bars_wanted(as_json, console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=con or Console(stderr=True),
        disable=con is None,
    )


def step_progress(as_json: bool, *extra: Any, console: Console | None = None) -> Progress:
    """A bar for counted steps (epochs, trials): done/total, %, ``extra`` columns, elapsed."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    con = bars_wanted(as_json, console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TaskProgressColumn(),
        *extra,
        TimeElapsedColumn(),
        console=con or Console(stderr=True),
        disable=con is None,
    )
