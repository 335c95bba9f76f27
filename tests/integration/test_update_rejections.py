"""Every way an update can be forged, replayed or broken is refused before activation.

One real hub (LiveHub on loopback) serves two real bundles (v1, v2; v2 has signed deltas from
v1). A small tampering proxy (an aiohttp app) sits between it and the real
:class:`~runtime.trust.BundleFetcher` and, per case, replaces what the hub serves: flipped
bytes, metadata signed with the wrong key or below threshold, older (replayed) metadata,
expired metadata, mixed-up metadata versions, truncated or endless downloads, and whole signed
repository states an attacker with some of the keys could make (:func:`_overlay`). Each case
starts from a copy of one device state that trusts the hub's current metadata and has v1
installed, and checks: a one-line reason, the installed bundle untouched, and that the same
device still updates once the attack stops (nothing half-trusted). The behaviours only the
device service has (bundle version rollback, staging clean-up) run against a real device
process; root rotation and the time floor have their own tests at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import urllib3
from aiohttp import web
from loopkit import BOXES, BOXES_NEW, Loop, committed, write_source
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

import bsdiff
from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.errors import BadRequest
from hub.signing import KEY_FILES, init_keys, load_signer, rotate_root, sign_targets
from hub.testing import LiveHub
from runtime.bundle.build import build_bundle
from runtime.bundle.loader import file_sha256, read_manifest, verify_bundle_dir
from runtime.errors import BundleError, LeanloopError
from runtime.trust import BundleFetcher, delta_target_name

DATA = "anchors.bin"
DATA_V1 = bytes(range(256)) * 800
DATA_V2 = bytes(b ^ 0x5A if i % 4001 == 0 else b for i, b in enumerate(DATA_V1))
ENDLESS_CAP = 64 * 1024 * 1024
# How a bad target file is reported: python-tuf's download_target, or runtime.download's words.
TARGET_CORRUPT = r"LengthOrHashMismatchError|hash to"
TARGET_SHORT = r"LengthOrHashMismatchError|signed length"
TARGET_LONG = r"DownloadLengthMismatchError|more than the signed|signed length"


# -- a tampering proxy -------------------------------------------------------------------------

_PASSED = ("ETag", "Content-Range", "Accept-Ranges", "Last-Modified")

Rule = bytes | Callable[[bytes], bytes] | str  # replacement, transform, or "endless"/"truncate"


@dataclass
class TamperProxy:
    """Forwards ``/api/v1/tuf/...`` to the hub, except paths a rule matches (regex on the path
    after ``/api/v1/tuf/``): bytes replace the answer (even where the hub has none), a callable
    transforms the hub's answer, ``"truncate"`` sends the first half, ``"endless"`` streams
    garbage until the client hangs up (at most :data:`ENDLESS_CAP` bytes)."""

    upstream: str
    rules: dict[str, Rule] = field(default_factory=dict)
    endless_sent: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        rule = next((r for pat, r in self.rules.items() if re.fullmatch(pat, path)), None)
        if isinstance(rule, bytes):
            return web.Response(body=rule)
        if rule == "endless":
            resp = web.StreamResponse()
            await resp.prepare(request)
            chunk = b"\x00" * 65536
            try:
                while self.endless_sent < ENDLESS_CAP:
                    # A client that stopped reading for a second has hung up in all but name.
                    await asyncio.wait_for(resp.write(chunk), 1.0)
                    self.endless_sent += len(chunk)
            except (ConnectionError, RuntimeError, TimeoutError):
                pass
            return resp
        forward = ("Authorization", "Range", "If-Range") if rule is None else ("Authorization",)
        headers = {h: request.headers[h] for h in forward if h in request.headers}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.get(f"{self.upstream}/api/v1/tuf/{path}", headers=headers) as up,
        ):
            body = await up.read()
            status = up.status
            passed = {h: up.headers[h] for h in _PASSED if h in up.headers}
        if rule is None:
            return web.Response(body=body, status=status, headers=passed)
        if status == 200 and rule == "truncate":
            body = body[: len(body) // 2]
        elif status == 200 and callable(rule):
            body = rule(body)
        return web.Response(body=body, status=status)  # no ETag: nothing to resume against

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/v1/tuf/{path:.+}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> TamperProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- metadata an attacker (or a test) can make -------------------------------------------------


def flip_signed(data: bytes) -> bytes:
    """Flip the last digit of the expiry time: still valid JSON and a plausible date, so only
    the signature can tell."""
    m = re.search(rb'"expires":\s*"', data)
    assert m is not None
    i = m.end() + len("YYYY-MM-DDTHH:MM:S")
    out = bytearray(data)
    out[i] ^= 0x01
    return bytes(out)


def flip(data: bytes) -> bytes:
    """Flip one byte in the middle of the content (keeping JSON parseable where it can)."""
    i = len(data) // 2
    while i < len(data) - 1 and not chr(data[i]).isalnum():
        i += 1
    out = bytearray(data)
    out[i] ^= 0x01
    return bytes(out)


def _signed(md: Metadata[Any], *signers: CryptoSigner) -> bytes:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes()


def _meta(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _in(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


@dataclass
class World:
    """The module's hub, keys, bundles and the baseline device state."""

    tmp: Path
    keys: Path
    hub: LiveHub
    admin: HubAdminClient
    proxy: TamperProxy
    token: str
    v1: Path
    v2: Path
    era1: dict[str, bytes]  # the hub's metadata files right after v1 was published
    base: Path  # baseline device: tuf/ (trusts the current metadata), active/ (v1), floor

    def served(self, name: str) -> bytes:
        return (self.hub.config.data_dir / "tuf" / name).read_bytes()

    def current(self, role: str) -> Metadata[Any]:
        ts = Metadata[Timestamp].from_bytes(self.served("timestamp.json"))
        if role == "timestamp":
            return ts
        snap = Metadata[Snapshot].from_bytes(
            self.served(f"{ts.signed.snapshot_meta.version}.snapshot.json")
        )
        if role == "snapshot":
            return snap
        return Metadata[Targets].from_bytes(
            self.served(f"{snap.signed.meta['targets.json'].version}.targets.json")
        )

    def online(self, role: str) -> CryptoSigner:
        return load_signer(self.keys / KEY_FILES[role])

    def target_url(self, target: str, sha256: str) -> str:
        d, _, name = target.rpartition("/")
        return re.escape(f"targets/{d}/{sha256}.{name}")


def _overlay(
    w: World,
    *,
    targets: bytes | None = None,
    snapshot_edit: Callable[[Snapshot], None] | None = None,
    snapshot_signers: tuple[CryptoSigner, ...] | None = None,
    timestamp_edit: Callable[[Timestamp], None] | None = None,
    timestamp_signers: tuple[CryptoSigner, ...] | None = None,
    bump: int = 1,
) -> dict[str, Rule]:
    """Rules serving a new repository state: ``targets`` (already signed; default the current),
    a snapshot naming it and a timestamp naming that, both one version up and signed with the
    online keys unless told otherwise; the ``*_edit`` hooks change them before signing."""
    rules: dict[str, Rule] = {}
    snap = w.current("snapshot")
    ts = w.current("timestamp")
    if targets is not None:
        tv = Metadata[Targets].from_bytes(targets).signed.version
        rules[re.escape(f"metadata/{tv}.targets.json")] = targets
        snap.signed.meta["targets.json"] = _meta(tv, targets)
    snap.signed.version += bump
    if snapshot_edit:
        snapshot_edit(snap.signed)
    snap_bytes = _signed(snap, *(snapshot_signers or (w.online("snapshot"),)))
    rules[re.escape(f"metadata/{snap.signed.version}.snapshot.json")] = snap_bytes
    ts.signed.version += bump
    ts.signed.snapshot_meta = _meta(snap.signed.version, snap_bytes)
    if timestamp_edit:
        timestamp_edit(ts.signed)
    rules[re.escape("metadata/timestamp.json")] = _signed(
        ts, *(timestamp_signers or (w.online("timestamp"),))
    )
    return rules


def _targets_plus(
    w: World, additions: dict[str, bytes], custom: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, Rule]]:
    """Targets version + 1 signed by the real targets key with ``additions`` (path → content),
    and rules serving their blobs."""
    adds = {
        path: (hashlib.sha256(data).hexdigest(), len(data), (custom or {}).get(path))
        for path, data in additions.items()
    }
    signed = sign_targets(
        w.served(f"{w.current('targets').signed.version}.targets.json"), adds, w.keys
    )
    blobs: dict[str, Rule] = {
        w.target_url(path, sha): additions[path] for path, (sha, _, _) in adds.items()
    }
    return signed, blobs


def _v3_manifest(w: World, files: dict[str, bytes]) -> bytes:
    """A digits v3 manifest listing ``files`` (names are not validated: this is the attack)."""
    m = json.loads((w.v2 / "manifest.json").read_text())
    m["version"] = 3
    m["files"] = {
        rel: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for rel, d in files.items()
    }
    return json.dumps(m).encode()


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    m = read_manifest(bundle)
    return {rel: (bundle / rel).read_bytes() for rel in [*m.files, "manifest.json"]}


# -- the module's world ------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, classifier_onnx: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rejections")
    keys = tmp / "keys"
    init_keys(keys)
    bundles = {}
    for version, boxes, data in ((1, BOXES, DATA_V1), (2, BOXES_NEW, DATA_V2)):
        src = write_source(tmp / f"src-v{version}", boxes, classifier_onnx)
        (src / DATA).write_bytes(data)
        bundles[version] = tmp / f"bundle-v{version}"
        build_bundle(src, bundles[version], "digits", version)
    cfg = HubConfig(data_dir=tmp / "hub", port=0, keys_dir=keys, timestamp_check_interval_s=3600)
    with LiveHub(cfg) as hub, TamperProxy(upstream=hub.url) as proxy:
        admin = HubAdminClient(hub.url, hub.admin_token)
        admin.publish_bundle(bundles[1], keys)
        tuf = cfg.data_dir / "tuf"
        era1 = {p.name: p.read_bytes() for p in tuf.iterdir() if p.is_file()}
        admin.publish_bundle(bundles[2], keys)
        resp = urllib3.request(
            "POST",
            f"{hub.url}/api/v1/enroll",
            json={"device_id": "cam-rej", "enroll_token": hub.enroll_token},
        )
        token = json.loads(resp.data)["device_token"]
        base = tmp / "base"
        fetcher = BundleFetcher(base / "tuf", keys / "root.json", hub.url, token)
        fetcher.fetch("digits", 1, base / "active")
        yield World(tmp, keys, hub, admin, proxy, token, bundles[1], bundles[2], era1, base)


@dataclass
class Case:
    """One attack: the proxy rules it needs (made from the world), the bundle version fetched,
    whether the device already has v1 to reuse, and what must happen."""

    name: str
    rules: Callable[[World], dict[str, Rule]]
    expect: str  # a regex searched in the one-line reason, or "ok" (falls back and succeeds)
    version: int = 2
    reuse: bool = True
    heals: bool = True  # False: the attack moved trust on for good (a root the admin signed)


def _device(w: World, case_dir: Path) -> BundleFetcher:
    shutil.copytree(w.base, case_dir)
    return BundleFetcher(case_dir / "tuf", w.keys / "root.json", w.proxy.url, w.token)


FILES = ["manifest.json", "pipeline.yaml", "ontology.yaml", DATA, "models/detector.onnx"]
FILES += ["models/classifier.onnx", "golden/000.png", "golden/expected.json"]


def _file_cases() -> list[Case]:
    names = FILES

    def flip_file(rel: str) -> Callable[[World], dict[str, Rule]]:
        def rules(w: World) -> dict[str, Rule]:
            data = (w.v2 / rel).read_bytes()
            return {w.target_url(f"digits/2/{rel}", hashlib.sha256(data).hexdigest()): flip}

        return rules

    return [
        Case(f"flipped byte in {rel}", flip_file(rel), TARGET_CORRUPT, reuse=False) for rel in names
    ]


def _forged_root(w: World, version: int, edit: Callable[[Root], None]) -> Metadata[Root]:
    root = Metadata[Root].from_bytes((w.keys / "root.json").read_bytes())
    root.signed.version = version
    edit(root.signed)
    return root


def _below_threshold_root(w: World) -> dict[str, Rule]:
    """Root v2 (properly signed) wants 2 targets signatures; the hub's targets carry 1."""

    def edit(r: Root) -> None:
        r.add_key(CryptoSigner.generate_ed25519().public_key, "targets")
        r.roles["targets"].threshold = 2

    root = _forged_root(w, 2, edit)
    return {
        re.escape("metadata/2.root.json"): _signed(root, load_signer(w.keys / KEY_FILES["root"]))
    }


def _delta_target(w: World) -> tuple[str, dict[str, Any]]:
    targets = json.loads(w.admin.current_targets() or b"{}")["signed"]["targets"]
    prefix = f"digits/2/{DATA}.from-"
    return next((p, t) for p, t in targets.items() if p.startswith(prefix))


def _wrong_base_patch(w: World) -> dict[str, Rule]:
    """digits v3 = v2's files; its signed delta for the data file claims the device's v1 base
    but was made against another file. The device must fall back to the full file."""
    files = _bundle_files(w.v2)
    manifest = _v3_manifest(w, {k: v for k, v in files.items() if k != "manifest.json"})
    base_sha = hashlib.sha256(DATA_V1).hexdigest()
    patch = bsdiff.make_patch(DATA_V1[::-1], DATA_V2)
    delta = delta_target_name(f"digits/3/{DATA}", base_sha)
    additions = {f"digits/3/{k}": v for k, v in files.items() if k != "manifest.json"}
    additions["digits/3/manifest.json"] = manifest
    additions[delta] = patch
    custom = {
        delta: {
            "leanloop": {
                "delta_of": DATA,
                "base_sha256": base_sha,
                "result_sha256": hashlib.sha256(DATA_V2).hexdigest(),
            }
        }
    }
    signed, blobs = _targets_plus(w, additions, custom)
    return {**blobs, **_overlay(w, targets=signed)}


def _escaping(name: str) -> Callable[[World], dict[str, Rule]]:
    def rules(w: World) -> dict[str, Rule]:
        payload = b"owned\n"
        manifest = _v3_manifest(w, {name: payload})
        signed, blobs = _targets_plus(
            w, {"digits/3/manifest.json": manifest, f"digits/3/{name}": payload}
        )
        return {**blobs, **_overlay(w, targets=signed)}

    return rules


def _targets_signed_by(
    signers: Callable[[World], tuple[CryptoSigner, ...]],
) -> Callable[[World], dict[str, Rule]]:
    def rules(w: World) -> dict[str, Rule]:
        t = w.current("targets")
        t.signed.version += 1
        return _overlay(w, targets=_signed(t, *signers(w)))

    return rules


def _expired_targets(w: World) -> dict[str, Rule]:
    t = w.current("targets")
    t.signed.version += 1
    t.signed.expires = _in(-1)
    return _overlay(w, targets=_signed(t, load_signer(w.keys / KEY_FILES["targets"])))


def _old_targets_in_snapshot(w: World) -> dict[str, Rule]:
    return _overlay(
        w,
        snapshot_edit=lambda s: s.meta.__setitem__(
            "targets.json", _meta(1, w.era1["1.targets.json"])
        ),
    )


def _resigned_state(w: World, bump: int = 1) -> dict[str, Rule]:
    """A legitimate new state (same targets re-signed, every version + ``bump``), so the device
    must download new snapshot and targets files rather than keep its cached ones."""
    t = w.current("targets")
    t.signed.version += bump
    return _overlay(w, targets=_signed(t, load_signer(w.keys / KEY_FILES["targets"])), bump=bump)


def _tampered(
    role: str, how: Callable[[World, bytes], bytes]
) -> Callable[[World], dict[str, Rule]]:
    """The resigned state with ``role``'s file replaced by ``how(world, its bytes)``."""

    def rules(w: World) -> dict[str, Rule]:
        out = _resigned_state(w)
        key = next(k for k in out if k.endswith(rf"{role}\.json"))
        data = out[key]
        assert isinstance(data, bytes)
        out[key] = how(w, data)
        return out

    return rules


def _foreign() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


CASES = [
    *_file_cases(),
    Case(
        "flipped byte in a patch",
        lambda w: {
            w.target_url(_delta_target(w)[0], _delta_target(w)[1]["hashes"]["sha256"]): flip
        },
        "ok",
    ),
    Case("patch against the wrong base", _wrong_base_patch, "ok", version=3),
    Case("flipped byte in timestamp", lambda w: {"metadata/timestamp.json": flip}, "rejected"),
    Case(
        "flipped byte in snapshot",
        _tampered("snapshot", lambda w, b: flip(b)),
        "LengthOrHashMismatchError",
    ),
    Case(
        "flipped byte in targets",
        _tampered("targets", lambda w, b: flip(b)),
        "LengthOrHashMismatchError",
    ),
    Case(
        "flipped byte in a new root",
        lambda w: {
            "metadata/2.root.json": flip_signed(
                _signed(_forged_root(w, 2, lambda r: None), load_signer(w.keys / KEY_FILES["root"]))
            )
        },
        "UnsignedMetadataError",
    ),
    Case(
        "targets signed by a wrong key",
        _targets_signed_by(lambda w: (_foreign(),)),
        "UnsignedMetadataError",
    ),
    Case(
        "timestamp signed by a wrong key",
        lambda w: _overlay(w, timestamp_signers=(_foreign(),)),
        "UnsignedMetadataError",
    ),
    Case(
        "snapshot signed by a wrong key",
        lambda w: _overlay(w, snapshot_signers=(_foreign(),)),
        "UnsignedMetadataError",
    ),
    Case(
        "targets without signatures (0 of 1)",
        _targets_signed_by(lambda w: ()),
        "UnsignedMetadataError",
    ),
    Case(
        "targets signed 1 of the 2 keys root v2 wants",
        _below_threshold_root,
        "UnsignedMetadataError",
        heals=False,
    ),
    Case(
        "older timestamp (rollback)",
        lambda w: {"metadata/timestamp.json": w.era1["timestamp.json"]},
        "BadVersionNumberError",
    ),
    Case(
        "older snapshot named by a new timestamp (rollback)",
        lambda w: _overlay(
            w,
            timestamp_edit=lambda t: setattr(
                t, "snapshot_meta", _meta(1, w.era1["1.snapshot.json"])
            ),
        ),
        "BadVersionNumberError",
    ),
    Case(
        "older targets named by a new snapshot (rollback)",
        _old_targets_in_snapshot,
        "BadVersionNumberError",
    ),
    Case(
        "older root served as the next root (rollback)",
        lambda w: {"metadata/2.root.json": (w.keys / "root.json").read_bytes()},
        "BadVersionNumberError",
    ),
    Case(
        "expired timestamp",
        lambda w: _overlay(w, timestamp_edit=lambda t: setattr(t, "expires", _in(-1 / 24))),
        "ExpiredMetadataError",
    ),
    Case(
        "expired snapshot",
        lambda w: _overlay(w, snapshot_edit=lambda s: setattr(s, "expires", _in(-1 / 24))),
        "ExpiredMetadataError",
    ),
    Case(
        "expired root (signed by the admin, but its time is over)",
        lambda w: {
            "metadata/2.root.json": _signed(
                _forged_root(w, 2, lambda r: setattr(r, "expires", _in(-1))),
                load_signer(w.keys / KEY_FILES["root"]),
            )
        },
        "Final root.json is expired",
        heals=False,
    ),
    Case("expired targets", _expired_targets, "ExpiredMetadataError"),
    Case(
        "new timestamp with the old snapshot's bytes (mix-and-match)",
        _tampered("snapshot", lambda w, b: w.era1["1.snapshot.json"]),
        "MismatchError",
    ),
    Case(
        "targets not matching snapshot (mix-and-match)",
        _tampered("targets", lambda w, b: w.era1["1.targets.json"]),
        "LengthOrHashMismatchError",
    ),
    Case(
        "truncated download",
        lambda w: {
            w.target_url(f"digits/2/{DATA}", hashlib.sha256(DATA_V2).hexdigest()): "truncate"
        },
        TARGET_SHORT,
        reuse=False,
    ),
    Case(
        "oversized download (more bytes than signed)",
        lambda w: {
            w.target_url(f"digits/2/{DATA}", hashlib.sha256(DATA_V2).hexdigest()): lambda b: (
                b + b"\0" * 100_000
            )
        },
        TARGET_LONG,
        reuse=False,
    ),
    Case(
        "endless download",
        lambda w: {
            w.target_url(f"digits/2/{DATA}", hashlib.sha256(DATA_V2).hexdigest()): "endless"
        },
        TARGET_LONG,
        reuse=False,
    ),
    Case("manifest file name ../x", _escaping("../x"), "escapes the bundle folder", version=3),
    Case(
        "manifest file name /tmp/x",
        _escaping("/tmp/leanloop-owned"),
        "escapes the bundle folder",
        version=3,
    ),
]


def test_file_cases_when_listed_cover_every_file_of_the_bundle(world: World) -> None:
    assert sorted(FILES) == sorted([*read_manifest(world.v2).files, "manifest.json"])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_update_is_refused_before_activation_when_attacked(
    world: World, tmp_path: Path, case: Case
) -> None:
    w = world
    dev = tmp_path / "dev"
    fetcher = _device(w, dev)
    active_before = _tree(dev / "active")
    reuse = [dev / "active"] if case.reuse else []
    w.proxy.rules = case.rules(w)
    w.proxy.endless_sent = 0
    started = time.monotonic()
    try:
        if case.expect == "ok":
            res = fetcher.fetch("digits", case.version, dev / "staging", reuse_dirs=reuse)
            assert res.delta_fallbacks >= 1, vars(res)
            verify_bundle_dir(dev / "staging")
        else:
            with pytest.raises(LeanloopError) as info:
                fetcher.fetch("digits", case.version, dev / "staging", reuse_dirs=reuse)
            reason = str(info.value)
            assert "\n" not in reason and re.search(case.expect, reason), reason
            print(f"{case.name}: {reason[:160]}")
    finally:
        w.proxy.rules = {}
    assert time.monotonic() - started < 30
    if case.name == "endless download":
        assert w.proxy.endless_sent < ENDLESS_CAP  # the device hung up; it did not read on
    assert _tree(dev / "active") == active_before
    assert not (Path("/tmp/leanloop-owned").exists() or (tmp_path / "x").exists())
    if not case.heals:
        return
    # Nothing half-trusted: the same device state takes the next legitimate repository state
    # (versions past anything the attack showed it) and updates normally.
    w.proxy.rules = _resigned_state(w, bump=3)
    try:
        res2 = fetcher.fetch("digits", 2, dev / "again", reuse_dirs=[dev / "active"])
    finally:
        w.proxy.rules = {}
    assert res2.manifest.version == 2
    verify_bundle_dir(dev / "again")


# -- symbolic links ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_verify_bundle_refuses_listed_file_when_it_is_a_symlink(
    world: World, tmp_path: Path, target: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(world.v2, bundle)
    real = tmp_path / "elsewhere.onnx" if target == "outside" else bundle / "models" / "real.onnx"
    shutil.move(bundle / "models" / "detector.onnx", real)
    (bundle / "models" / "detector.onnx").symlink_to(real)  # same bytes, so the hash matches
    with pytest.raises(BundleError, match="symbolic link") as info:
        verify_bundle_dir(bundle)
    assert "\n" not in str(info.value)


def test_fetch_refuses_to_write_through_a_symlinked_folder_in_staging(
    world: World, tmp_path: Path
) -> None:
    fetcher = _device(world, tmp_path / "dev")
    staging = tmp_path / "dev" / "staging"
    outside = tmp_path / "outside"
    outside.mkdir()
    staging.mkdir()
    (staging / "models").symlink_to(outside)  # left over in a slot, or planted
    with pytest.raises(LeanloopError, match="symbolic link") as info:
        fetcher.fetch("digits", 2, staging, reuse_dirs=[tmp_path / "dev" / "active"])
    assert "\n" not in str(info.value)
    assert list(outside.iterdir()) == []


# -- root rotation and key revocation ----------------------------------------------------------


@pytest.fixture
def rotation_world(
    tmp_path: Path, keys: Path, live_hub: LiveHub, admin: HubAdminClient
) -> Iterator[World]:
    """A small world on the function's own hub (rotation changes keys and hub for good)."""
    from hub.testing import make_bundle

    v1 = make_bundle(tmp_path / "bundles", "digits", 1)
    v2 = make_bundle(tmp_path / "bundles", "digits", 2, **{"model.onnx": b"model v2 " * 200})
    admin.publish_bundle(v1, keys)
    with TamperProxy(upstream=live_hub.url) as proxy:
        token = live_hub.admin_token
        yield World(tmp_path, keys, live_hub, admin, proxy, token, v1, v2, {}, tmp_path / "dev")


def _pinned_device(w: World, name: str, pinned: Path) -> BundleFetcher:
    return BundleFetcher(w.tmp / name / "tuf", pinned, w.proxy.url, w.token)


def test_device_pinned_to_root_v1_follows_rotations_when_keys_are_replaced(
    rotation_world: World, tmp_path: Path
) -> None:
    w = rotation_world
    pinned = tmp_path / "pinned-root-v1.json"  # what devices got at provisioning
    shutil.copy(w.keys / "root.json", pinned)
    old = _pinned_device(w, "old", pinned)
    old.fetch("digits", 1, tmp_path / "old" / "v1")

    rotate_root(w.keys, {"targets"})
    assert w.admin.push_root(w.keys) == 2
    rotate_root(w.keys, {"root", "snapshot", "timestamp"})
    assert w.admin.push_root(w.keys) == 3
    # The hub no longer takes targets signed with the revoked targets key.
    forged = w.current("targets")
    forged.signed.version += 1
    with pytest.raises(BadRequest, match="not signed by the root's targets key"):
        w.admin.post_targets(
            _signed(forged, load_signer(w.keys / "retired" / "v1" / "targets.key"))
        )
    w.admin.publish_bundle(w.v2, w.keys)  # signed under root v3 by the new targets key

    res = old.fetch("digits", 2, tmp_path / "old" / "v2", reuse_dirs=[tmp_path / "old" / "v1"])
    assert res.manifest.version == 2
    assert (tmp_path / "old" / "tuf" / "root_history" / "3.root.json").exists()
    fresh = _pinned_device(w, "fresh", pinned)  # never refreshed: walks 1 → 2 → 3 at once
    assert fresh.fetch("digits", 2, tmp_path / "fresh" / "v2").manifest.version == 2


def test_device_refuses_bundle_when_signed_with_revoked_targets_key_after_rotation(
    rotation_world: World, tmp_path: Path
) -> None:
    w = rotation_world
    dev = _pinned_device(w, "dev", w.keys / "root.json")
    dev.fetch("digits", 1, tmp_path / "dev" / "v1")
    revoked = load_signer(w.keys / KEY_FILES["targets"])
    rotate_root(w.keys, {"targets"})
    w.admin.push_root(w.keys)
    dev.fetch("digits", 1, tmp_path / "dev" / "v1-again")  # now trusts root v2
    # Whoever kept the revoked key (and even holds the hub's online keys) signs a bundle.
    manifest = _v3_manifest(w, {"model.onnx": b"evil"})
    t = w.current("targets")
    t.signed.version += 1
    for path, data in {
        "digits/3/manifest.json": manifest,
        "digits/3/model.onnx": b"evil",
    }.items():
        t.signed.targets[path] = TargetFile(
            len(data), {"sha256": hashlib.sha256(data).hexdigest()}, path
        )
    w.proxy.rules = _overlay(w, targets=_signed(t, revoked))
    with pytest.raises(LeanloopError) as info:
        dev.fetch("digits", 3, tmp_path / "dev" / "v3")
    reason = str(info.value)
    assert "\n" not in reason and "UnsignedMetadataError" in reason, reason
    assert not (tmp_path / "dev" / "v3" / "model.onnx").exists()


def test_device_refuses_new_root_when_signed_only_by_new_keys(
    rotation_world: World, tmp_path: Path
) -> None:
    w = rotation_world
    dev = _pinned_device(w, "dev", w.keys / "root.json")
    dev.fetch("digits", 1, tmp_path / "dev" / "v1")
    # An attacker's root v2: every key replaced by theirs, signed only by their root key.
    theirs = {role: CryptoSigner.generate_ed25519() for role in KEY_FILES}

    def take_over(r: Root) -> None:
        for role, signer in theirs.items():
            for keyid in list(r.roles[role].keyids):
                r.revoke_key(keyid, role)
            r.add_key(signer.public_key, role)

    forged = _signed(_forged_root(w, 2, take_over), theirs["root"])
    resp = urllib3.request(
        "POST",
        f"{w.hub.url}/api/v1/admin/tuf/root",
        fields={"root": ("root.json", forged, "application/json")},
        headers={"Authorization": f"Bearer {w.hub.admin_token}"},
    )
    assert resp.status == 400 and "root keys of version 1" in resp.json()["error"]
    w.proxy.rules = {re.escape("metadata/2.root.json"): forged}
    with pytest.raises(LeanloopError) as info:
        dev.fetch("digits", 1, tmp_path / "dev" / "again")
    reason = str(info.value)
    assert "\n" not in reason and "root was signed by 0/1 keys" in reason, reason
    assert not (tmp_path / "dev" / "tuf" / "root_history" / "2.root.json").exists()


# -- expiry on devices without a real-time clock -----------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a device that booted without a clock


def test_fetch_checks_expiry_against_time_floor_when_clock_is_reset(
    world: World, tmp_path: Path
) -> None:
    dev = tmp_path / "dev"
    shutil.copytree(world.base, dev)
    floor = json.loads((dev / "time_floor.json").read_text())
    issued = world.current("timestamp").signed.unrecognized_fields["x-leanloop-issued"]
    assert floor["floor"] == issued  # learned from the hub's signed timestamp
    fetcher = BundleFetcher(
        dev / "tuf", world.keys / "root.json", world.proxy.url, world.token, clock=lambda: EPOCH
    )
    # Fresh metadata is accepted although the clock says 1970 (the floor stands in for it)...
    assert fetcher.fetch("digits", 2, dev / "v2", reuse_dirs=[dev / "active"]).manifest.version == 2
    # ...and metadata that expired before the floor is refused although the clock says 1970.
    world.proxy.rules = _overlay(
        world, timestamp_edit=lambda t: setattr(t, "expires", _in(-1 / 24))
    )
    try:
        with pytest.raises(LeanloopError, match=r"timestamp\.json is expired"):
            fetcher.fetch("digits", 2, dev / "v2-again", reuse_dirs=[dev / "active"])
    finally:
        world.proxy.rules = {}
    # A clock ahead of the floor is used as it is: today's metadata is expired in 3 days.
    ahead = BundleFetcher(
        dev / "tuf", world.keys / "root.json", world.hub.url, world.token, clock=lambda: _in(3)
    )
    with pytest.raises(LeanloopError, match="ExpiredMetadataError"):
        ahead.fetch("digits", 2, dev / "v2-ahead", reuse_dirs=[dev / "active"])


@pytest.mark.parametrize(
    ("keep_cache", "keep_floor", "expect"),
    [
        (True, True, "BadVersionNumberError"),  # the cache alone catches the replay
        (False, True, "ExpiredMetadataError"),  # cache lost: the floor catches it
        (False, False, "ok"),  # neither: only the release time bounds a replay
    ],
    ids=["cache", "floor", "release-time-only"],
)
def test_fetch_refuses_replayed_old_timestamp_when_clock_is_reset(
    world: World,
    tmp_path: Path,
    keep_cache: bool,
    keep_floor: bool,
    expect: str,
) -> None:
    dev = tmp_path / "dev"
    shutil.copytree(world.base, dev)
    if not keep_cache:
        shutil.rmtree(dev / "tuf")
    if not keep_floor:
        (dev / "time_floor.json").unlink()
    fetcher = BundleFetcher(
        dev / "tuf", world.keys / "root.json", world.proxy.url, world.token, clock=lambda: EPOCH
    )
    # A timestamp the hub really signed weeks ago (version 1, long expired), replayed.
    old = world.current("timestamp")
    old.signed.version = 1
    old.signed.expires = _in(-7)
    world.proxy.rules = {"metadata/timestamp.json": _signed(old, world.online("timestamp"))}
    try:
        if expect == "ok":
            fetcher.fetch("digits", 2, dev / "v2")
        else:
            with pytest.raises(LeanloopError, match=expect) as info:
                fetcher.fetch("digits", 2, dev / "v2")
            assert "\n" not in str(info.value)
    finally:
        world.proxy.rules = {}


# -- the device service ------------------------------------------------------------------------


def test_device_refuses_older_bundle_version_when_hub_rolls_it_out_again(loop: Loop) -> None:
    """A rollback attack on the bundle: v1 is still validly signed, but the device has
    committed v2, so v1 is refused (versions never go down) and v2 keeps serving."""
    dev = loop.serving_device()
    loop.publish(2, BOXES_NEW)
    dev.feed(4)
    dev.wait("v2 committed", committed(2))
    loop.admin.rollout("digits", 1)
    st = dev.wait("refusal", lambda st: bool(st.get("last_update_error")))
    reason = st["last_update_error"]
    assert "\n" not in reason and "v1" in reason and "v2" in reason, reason
    assert st["active"]["version"] == 2
    names = dev.feed(2)
    dev.wait("frames on v2", lambda st: all(n in dev.results() for n in names))
    assert all(dev.results()[n]["bundle_version"] == 2 for n in names)
    slots = json.loads((dev.state / "slots.json").read_text())
    assert all(s["status"] != "staging" for s in slots["slots"].values())
