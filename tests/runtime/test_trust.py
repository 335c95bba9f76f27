"""``runtime.trust``: what the device installs is what signed targets metadata vouches for.

A real hub on loopback serves real TUF metadata (ed25519 keys made here) for small plain
bundles; the real :class:`BundleFetcher` fetches them. Each refusal is one line and leaves no
file of the refused bundle behind.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import urllib3

from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub, make_bundle
from runtime.bundle.manifest import MANIFEST_NAME, Manifest
from runtime.errors import TrustError, UpdateError
from runtime.trust import BundleFetcher, delta_target_name

SHARED = random.Random(1).randbytes(64 << 10)  # the same in v1 and v2: reused, not fetched
V1 = {"model.onnx": b"v1 model " * 500, "shared.bin": SHARED}
V2 = {"model.onnx": b"v2 model " * 500, "shared.bin": SHARED}


@dataclass
class Repo:
    hub: LiveHub
    keys: Path
    token: str
    root: Path

    def fetcher(self, state: Path, **kw: object) -> BundleFetcher:
        return BundleFetcher(
            state / "tuf",
            kw.pop("pinned", self.keys / "root.json"),  # type: ignore[arg-type]
            self.hub.url,
            self.token,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("trust")
    keys = root / "keys"
    init_keys(keys)
    cfg = HubConfig(data_dir=root / "hub", port=0, keys_dir=keys, timestamp_check_interval_s=3600)
    with LiveHub(cfg) as hub:
        admin = HubAdminClient(hub.url, hub.admin_token)
        admin.publish_bundle(make_bundle(root / "src", "plain", 1, **V1), keys)
        admin.publish_bundle(make_bundle(root / "src", "plain", 2, **V2), keys)
        body = {"device_id": "cam-1", "enroll_token": hub.enroll_token}
        resp = urllib3.request("POST", f"{hub.url}/api/v1/enroll", json=body, timeout=5.0)
        assert resp.status == 200, resp.data
        yield Repo(hub, keys, str(resp.json()["device_token"]), root)


def test_delta_target_name_when_base_is_known_names_its_first_16_hex() -> None:
    base = hashlib.sha256(b"old").hexdigest()
    assert delta_target_name("plain/2/model.onnx", base) == (
        f"plain/2/model.onnx.from-{base[:16]}.lldelta"
    )


def test_fetch_when_signed_brings_every_file_with_its_signed_hash(
    repo: Repo, tmp_path: Path
) -> None:
    res = repo.fetcher(tmp_path).fetch("plain", 1, tmp_path / "slot")
    assert (res.manifest.name, res.manifest.version) == ("plain", 1)
    for rel, data in V1.items():
        assert (tmp_path / "slot" / rel).read_bytes() == data
    assert res.fetched == len(V1) and res.reused == 0
    assert res.downloaded_bytes >= sum(len(d) for d in V1.values())


def test_fetch_when_a_file_is_unchanged_copies_it_from_the_local_slot(
    repo: Repo, tmp_path: Path
) -> None:
    f = repo.fetcher(tmp_path)
    f.fetch("plain", 1, tmp_path / "a")
    res = f.fetch("plain", 2, tmp_path / "b", reuse_dirs=[tmp_path / "a"])
    assert res.reused == 1 and res.fetched + res.delta_files == 1  # the model: full or delta
    assert (tmp_path / "b" / "shared.bin").read_bytes() == SHARED
    assert res.downloaded_bytes < len(SHARED)  # the shared file never crossed the link


def test_fetch_when_version_is_not_published_is_update_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(UpdateError, match="plain v7 is not in the signed targets metadata"):
        repo.fetcher(tmp_path).fetch("plain", 7, tmp_path / "slot")
    assert list((tmp_path / "slot").iterdir()) == []


def test_fetch_when_pinned_root_is_another_fleets_refuses_the_metadata(
    repo: Repo, tmp_path: Path
) -> None:
    init_keys(tmp_path / "other")
    f = repo.fetcher(tmp_path, pinned=tmp_path / "other" / "root.json")
    with pytest.raises(TrustError, match="signed metadata rejected") as info:
        f.fetch("plain", 1, tmp_path / "slot")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "slot" / "model.onnx").exists()


def test_fetch_when_pinned_root_is_missing_says_which_file(repo: Repo, tmp_path: Path) -> None:
    f = repo.fetcher(tmp_path, pinned=tmp_path / "nope.json")
    with pytest.raises(TrustError, match=r"pinned root .*nope.json: cannot read"):
        f.fetch("plain", 1, tmp_path / "slot")


def test_fetch_when_clock_is_past_expiry_refuses_the_metadata(repo: Repo, tmp_path: Path) -> None:
    # A device whose clock is ten years ahead sees expired metadata.
    late = repo.fetcher(tmp_path / "late", clock=lambda: datetime.now(UTC) + timedelta(days=3650))
    with pytest.raises(TrustError, match=r"signed metadata rejected.*[Ee]xpired"):
        late.fetch("plain", 1, tmp_path / "late-slot")
    assert not (tmp_path / "late-slot" / "model.onnx").exists()


def test_fetch_when_plan_check_refuses_writes_no_bundle_file(repo: Repo, tmp_path: Path) -> None:
    seen: list[tuple[str, set[str]]] = []

    def no_room(manifest: Manifest, skipped: set[str]) -> None:
        seen.append((manifest.name, skipped))
        raise UpdateError("not enough space")

    with pytest.raises(UpdateError, match="not enough space"):
        repo.fetcher(tmp_path).fetch("plain", 1, tmp_path / "slot", check_plan=no_room)
    assert seen == [("plain", set())]
    assert sorted(p.name for p in (tmp_path / "slot").iterdir()) == [MANIFEST_NAME]
