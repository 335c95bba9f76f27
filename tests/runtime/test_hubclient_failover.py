"""The device's hub client with replica URLs: a hub that is down is skipped for the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub
from hub.testservers import free_port
from runtime.errors import HubError
from runtime.hubclient import HubClient


def test_client_when_primary_is_down_uses_the_fallback_and_stays_there(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    init_keys(keys_dir)
    dead = f"http://127.0.0.1:{free_port()}"
    with LiveHub(HubConfig(data_dir=tmp_path / "hub", keys_dir=keys_dir, port=0)) as hub:
        client = HubClient(dead, timeout_s=2, fallback_urls=[hub.url])
        client.enroll("cam-1", hub.enroll_token, None)
        assert client.desired().bundle is None
        assert client._urls[client._current] == hub.url
        assert client.url == dead  # the token still belongs to the configured hub
        alone = HubClient(dead, timeout_s=2, token="t")
        with pytest.raises(HubError, match="unreachable"):
            alone.desired()
        refused = HubClient(hub.url, token="bad", fallback_urls=[dead])
        with pytest.raises(HubError) as e:
            refused.desired()
        assert e.value.http_status == 401  # a refusal is not failed over
