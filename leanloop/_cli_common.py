"""What every ``leanloop`` command module shares: the error handler and the admin client."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from runtime.errors import ConfigError, LeanloopError, PipelineError

__all__ = [
    "HUB_URL",
    "AdminToken",
    "DeviceConfig",
    "HubUrl",
    "StateDir",
    "_fail",
    "_state_dir",
    "admin_client",
    "handled",
]

# The options that point a device command at its device (``--config`` / ``--state-dir``).
DeviceConfig = Annotated[Path | None, typer.Option(help="device config YAML")]
StateDir = Annotated[Path | None, typer.Option(help="device state folder")]
# The options of a hub admin command (``--hub`` / ``--token``, or LEANLOOP_ADMIN_TOKEN).
HUB_URL = "http://127.0.0.1:8470"
HubUrl = Annotated[str, typer.Option(help="hub URL")]
AdminToken = Annotated[str | None, typer.Option(envvar="LEANLOOP_ADMIN_TOKEN", help="admin token")]

F = TypeVar("F", bound=Callable[..., Any])
_INPUT_ERRORS = (ConfigError, PipelineError, FileNotFoundError)


def _fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def handled(fn: F) -> F:
    """Turn leanloop errors into one line on stderr and the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except typer.Exit:
            raise
        except _INPUT_ERRORS as e:
            _fail(str(e), 2)
        except LeanloopError as e:
            _fail(str(e), 1)
        except ImportError as e:
            _fail(
                f"{e.name or e}: not installed here; install leanloop[hub] for hub-side commands", 1
            )
        except KeyboardInterrupt:
            _fail("interrupted", 1)

    return wrapper  # type: ignore[return-value]


def admin_client(hub: str, token: str | None) -> Any:
    """The hub's admin client; ConfigError without a token."""
    from hub.client import HubAdminClient

    if not token:
        raise ConfigError("no admin token: pass --token or set LEANLOOP_ADMIN_TOKEN")
    return HubAdminClient(hub, token)


def _state_dir(config: Path | None, state_dir: Path | None) -> Path:
    """The device's state folder: ``--state-dir``, else the config's ``state_dir``."""
    if state_dir is not None:
        return state_dir
    from runtime.config import load_config

    return load_config(config).state_dir
