"""The hub process around the routes: the timestamp timer, blob caps, first-start errors, CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hub.app import create_app
from hub.cli import hub_app, keys_app, publish_command
from hub.config import HubConfig
from hub.testing import API, HubTestSession


@pytest.mark.asyncio
async def test_timestamp_timer_when_half_life_passes_resigns_timestamp(
    aiohttp_client: Any, config: HubConfig, keys_dir: Path, make_bundle: Any
) -> None:
    fast = config.model_copy(update={"timestamp_expiry_s": 2, "timestamp_check_interval_s": 0.05})
    hub = HubTestSession(await aiohttp_client(create_app(fast)), fast, keys_dir)
    await hub.publish(make_bundle("digits", 1))
    path = fast.data_dir / "tuf" / "timestamp.json"
    first = json.loads(path.read_text())["signed"]["version"]
    for _ in range(60):
        await asyncio.sleep(0.05)
        if json.loads(path.read_text())["signed"]["version"] > first:
            break
    else:
        raise AssertionError("timestamp was not re-signed by the timer")


@pytest.mark.asyncio
async def test_put_blob_when_content_length_is_over_cap_is_413(
    aiohttp_client: Any, config: HubConfig, keys_dir: Path
) -> None:
    small = config.model_copy(update={"max_blob_bytes": 10})
    hub = HubTestSession(await aiohttp_client(create_app(small)), small, keys_dir)
    resp = await hub.client.put(f"{API}/admin/blobs/{'a' * 64}", data=b"x" * 11, headers=hub.admin)
    assert resp.status == 413


@pytest.mark.asyncio
async def test_first_start_when_no_keys_dir_fails_with_config_error(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="--keys"):
        await aiohttp_client(create_app(HubConfig(data_dir=tmp_path / "data")))


def test_hub_config_when_key_is_misspelled_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        HubConfig.model_validate({"data_dir": str(tmp_path), "prot": 1})


def test_keys_init_command_when_run_twice_fails_the_second_time(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "keys"
    first = runner.invoke(keys_app, ["init", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert (out / "root.json").exists()
    second = runner.invoke(keys_app, ["init", "--out", str(out)])
    assert second.exit_code == 1
    assert "refusing" in second.output


def test_hub_serve_command_when_asked_for_help_lists_options() -> None:
    result = CliRunner().invoke(hub_app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--data", "--host", "--port", "--keys"):
        assert option in result.output


def test_publish_command_when_hub_is_unreachable_exits_1(keys_dir: Path, make_bundle: Any) -> None:
    import typer

    app = typer.Typer()
    app.command("publish")(publish_command)
    result = CliRunner().invoke(
        app,
        [
            str(make_bundle()),
            "--hub",
            "http://127.0.0.1:9",
            "--keys",
            str(keys_dir),
            "--token",
            "t",
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.output
