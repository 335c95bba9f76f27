"""Fixtures for the hub tests: keys, a hub app behind ``aiohttp_client``, a live hub on loopback,
bundle folders, and a fake trainer command (so no test needs torch)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.app import create_app
from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import HubTestSession, LiveHub
from hub.testing import make_bundle as _make_bundle

FAKE_TRAINER = textwrap.dedent(
    """
    import argparse, json, pathlib, sys
    p = argparse.ArgumentParser()
    p.add_argument("--annotations"); p.add_argument("--images"); p.add_argument("--out")
    p.add_argument("--init-from")
    a = p.parse_args()
    lines = pathlib.Path(a.annotations).read_text().splitlines()
    images = sorted(x.name for x in pathlib.Path(a.images).iterdir())
    print(f"fake trainer: {len(lines)} samples, init_from={a.init_from}")
    if any("FAIL" in line for line in lines):
        print("boom: asked to fail", file=sys.stderr); sys.exit(3)
    out = pathlib.Path(a.out); (out / "models").mkdir(parents=True)
    (out / "pipeline.yaml").write_text("format: leanloop.pipeline/1\\nstages: []\\n")
    (out / "models" / "m.onnx").write_bytes(b"onnx")
    (out / "checkpoint").write_bytes(b"ckpt")
    (out / "seen.json").write_text(json.dumps(
        {"lines": [json.loads(x) for x in lines], "images": images, "init_from": a.init_from}))
    """
)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `keys init` folder for the whole session (tests never change it)."""
    out = tmp_path_factory.mktemp("keys")
    init_keys(out)
    return out


@pytest.fixture
def config(tmp_path: Path, keys_dir: Path, hub_storage: dict[str, Any]) -> HubConfig:
    """A hub config in a fresh data dir, with the fake trainer (storage: see tests/conftest.py)."""
    trainer = tmp_path / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    return HubConfig(
        data_dir=tmp_path / "data",
        keys_dir=keys_dir,
        port=0,
        trainer_command=[sys.executable, str(trainer)],
        timestamp_check_interval_s=3600,
        **hub_storage,
    )


@pytest.fixture
def make_bundle(tmp_path: Path) -> Any:
    """Factory: ``make_bundle(name='digits', version=1, **files) -> folder``."""

    def make(name: str = "digits", version: int = 1, **files: bytes) -> Path:
        return _make_bundle(tmp_path / "bundles", name, version, **files)

    return make


@pytest_asyncio.fixture
async def hub(
    aiohttp_client: Any, config: HubConfig, keys_dir: Path
) -> AsyncIterator[HubTestSession]:
    """The real ``create_app`` behind aiohttp's test client."""
    client = await aiohttp_client(create_app(config))
    yield HubTestSession(client, config, keys_dir)


@pytest.fixture
def hub_on_backend(
    aiohttp_client: Any, tmp_path: Path, keys_dir: Path, hub_backend: dict[str, Any]
) -> Callable[..., Awaitable[HubTestSession]]:
    """Factory: ``await hub_on_backend(**settings)``, a hub on each storage backend (the test runs
    once per backend, see tests/conftest.py) with a trainer that does nothing."""

    async def make(**settings: Any) -> HubTestSession:
        config = HubConfig(
            data_dir=tmp_path / "data",
            keys_dir=keys_dir,
            port=0,
            trainer_command=[sys.executable, "-c", "pass"],
            timestamp_check_interval_s=3600,
            **settings,
            **hub_backend,
        )
        return HubTestSession(await aiohttp_client(create_app(config)), config, keys_dir)

    return make


@pytest.fixture
def live_hub(config: HubConfig) -> Iterator[LiveHub]:
    """The real app served on a loopback port from a background thread."""
    with LiveHub(config) as live:
        yield live
