"""Resumable downloads from a real hub on loopback, through the fault proxy and across SIGKILL.

The hub serves target blobs with their sha256 as a strong ETag and honours Range/If-Range; the
device's :class:`runtime.download.Downloader` (alone, and inside :class:`BundleFetcher`) must
finish a download whose connection is cut every 256 KiB with at most 5% extra bytes on the
wire, pick up a partial left by a SIGKILLed process, and hold its rate cap.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from hil.faultproxy import FaultProxy
from hub.app import BLOBS
from hub.client import HubAdminClient
from hub.testing import LiveHub
from hub.testing import make_bundle as make_plain_bundle
from runtime.config import DownloadSettings
from runtime.download import Downloader, DownloadError, OversizeError
from runtime.errors import TrustError
from runtime.trust import BundleFetcher

SIZE = 2 << 20
CUT = 256 << 10
REPO_ROOT = Path(__file__).resolve().parents[2]


class Published:
    def __init__(self, hub: LiveHub, folder: Path, token: str) -> None:
        self.hub = hub
        self.folder = folder
        self.token = token
        self.data = (folder / "big.bin").read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    def url(self, base: str) -> str:
        return f"{base}/api/v1/tuf/targets/blobs/1/{self.sha256}.big.bin"


@pytest.fixture
def published(tmp_path: Path, live_hub: LiveHub, admin: HubAdminClient, keys: Path) -> Published:
    data = random.Random(7).randbytes(SIZE)
    folder = make_plain_bundle(tmp_path / "src", "blobs", 1, **{"big.bin": data})
    admin.publish_bundle(folder, keys)
    body = {"device_id": "cam-1", "enroll_token": live_hub.enroll_token}
    resp = urllib3.request("POST", f"{live_hub.url}/api/v1/enroll", json=body, timeout=5.0)
    assert resp.status == 200, resp.data
    return Published(live_hub, folder, str(resp.json()["device_token"]))


def _settings(**kw: float) -> DownloadSettings:
    return DownloadSettings(**{"backoff_base_s": 0.01, "backoff_max_s": 0.05, **kw})


def test_fetch_when_link_cut_every_256k_completes_within_5_percent(
    published: Published, tmp_path: Path
) -> None:
    d = Downloader(tmp_path / "downloads", published.token, _settings())
    with FaultProxy("127.0.0.1", published.hub.port, cut_every=CUT) as proxy:
        out = d.fetch(published.url(proxy.url), SIZE, published.sha256, tmp_path / "big.bin")
        wire = proxy.stats.bytes_down
    assert out.read_bytes() == published.data
    assert proxy.stats.cuts >= SIZE // CUT - 1
    assert d.stats.resumes == proxy.stats.connections - 1
    assert d.stats.restarts == 0
    print(f"cut every 256 KiB: {wire / SIZE:.4f}x the file on the wire")
    assert wire <= 1.05 * SIZE, f"{wire / SIZE:.3f}x the file on the wire"


KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from runtime import download
    from runtime.config import DownloadSettings

    url, token, sha256, size, state, kill_at = sys.argv[1:]
    seen = 0

    def hook(kind, n):
        global seen
        seen += n
        if seen >= int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)

    download._on_bytes = hook
    d = download.Downloader(Path(state), token, DownloadSettings(chunk_bytes=16384))
    d.fetch(url, int(size), sha256, Path(state) / "done.bin")
    """
)


def test_fetch_when_process_was_sigkilled_resumes_from_partial(
    published: Published, tmp_path: Path
) -> None:
    state = tmp_path / "downloads"
    url = published.url(published.hub.url)
    kill_at = SIZE // 2 + 12345
    args = [url, published.token, published.sha256, str(SIZE), str(state), str(kill_at)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, *args], env=env, timeout=60, capture_output=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]

    d = Downloader(state, published.token, _settings())
    have = d.resume_point(published.sha256, SIZE)
    assert kill_at <= have < SIZE
    d.fetch(url, SIZE, published.sha256, tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == published.data
    assert (d.stats.resumes, d.stats.restarts) == (1, 0)
    assert d.stats.bytes_received == SIZE - have


def test_fetch_when_rate_capped_holds_the_cap(published: Published, tmp_path: Path) -> None:
    rate = 1 << 20
    d = Downloader(tmp_path / "downloads", published.token, _settings(rate_limit_bps=rate))
    t0 = time.monotonic()
    d.fetch(published.url(published.hub.url), SIZE, published.sha256, tmp_path / "big.bin")
    elapsed = time.monotonic() - t0
    burst = rate // 4  # the bucket starts full
    assert (SIZE - burst) / elapsed <= 1.1 * rate
    assert SIZE / elapsed >= 0.5 * rate


def test_bundle_fetcher_when_link_is_cut_fetches_the_verified_bundle(
    published: Published, keys: Path, tmp_path: Path
) -> None:
    with FaultProxy("127.0.0.1", published.hub.port, cut_every=CUT) as proxy:
        fetcher = BundleFetcher(
            tmp_path / "state" / "tuf",
            keys / "root.json",
            proxy.url,
            published.token,
            download=_settings(),
        )
        res = fetcher.fetch("blobs", 1, tmp_path / "slot")
    assert (tmp_path / "slot" / "big.bin").read_bytes() == published.data
    assert res.fetched == len(res.manifest.files)
    assert fetcher.counters["download_resumes"] >= SIZE // CUT - 1
    assert res.downloaded_bytes >= SIZE
    assert not list((tmp_path / "state" / "downloads").iterdir())


def _flip(data: bytes) -> bytes:
    return data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]


# How the hub's copy of the blob is damaged → the error the device refuses it with.
DAMAGED = [
    ("flipped byte", _flip, TrustError, "hash to"),
    ("oversized", lambda d: d + b"\0" * 4096, OversizeError, "the signed length is"),
    ("truncated", lambda d: d[: len(d) // 2], DownloadError, "the signed length is"),
]


@pytest.mark.parametrize(
    ("case", "damage", "error", "reason"), DAMAGED, ids=[d[0] for d in DAMAGED]
)
def test_bundle_fetcher_when_blob_is_damaged_refuses_with_one_line_reason(
    published: Published,
    keys: Path,
    tmp_path: Path,
    case: str,
    damage: Callable[[bytes], bytes],
    error: type[Exception],
    reason: str,
) -> None:
    blob = published.hub.app[BLOBS].path(published.sha256)
    blob.write_bytes(damage(published.data))
    fetcher = BundleFetcher(
        tmp_path / "state" / "tuf",
        keys / "root.json",
        published.hub.url,
        published.token,
        download=_settings(max_attempts=2),
    )
    with pytest.raises(error, match=reason) as info:
        fetcher.fetch("blobs", 1, tmp_path / "slot")
    assert "\n" not in str(info.value), case
    assert not (tmp_path / "slot" / "big.bin").exists()
    manifest = (published.folder / "manifest.json").stat().st_size
    assert fetcher.counters["download_bytes_received"] <= manifest + SIZE + 1
    assert not list((tmp_path / "state" / "downloads").glob("*.part"))
