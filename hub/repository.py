"""The hub's online TUF repository: it keeps what the admin signed and signs the freshness roles.

The admin signs root (once, at ``keys init``) and targets (at every publish) offline; the hub
holds only the snapshot and timestamp keys. When the admin posts new targets metadata the hub

1. checks it is signed by the targets key(s) ``root.json`` names, up to the threshold;
2. checks its version is exactly current + 1 and that it has not expired;
3. checks that every target's blob is already in the blob store with the signed size;
4. stores it as ``<version>.targets.json``, then signs ``<n>.snapshot.json`` naming it, then
   ``timestamp.json`` naming that snapshot. The timestamp is written last: it is the switch that
   makes the new state visible, so a crash half-way leaves devices on the previous state, and
   :meth:`TufRepository.open` re-signs snapshot + timestamp on start if they lag behind targets.

The timestamp expires quickly (a day by default) so a device can tell a stale mirror from a
quiet one; :meth:`TufRepository.refresh_timestamp` re-signs it (and snapshot, which expires in a
week) when half of its life is gone, and the app calls it from a periodic task.

Consistent snapshots are on, so metadata is served as ``<version>.<role>.json`` (timestamp as
``timestamp.json``) and targets as ``<dir>/<sha256>.<name>``; :meth:`target_blob` maps such a
path back to a blob hash, only if that hash is a current target.

Root rotation (:meth:`TufRepository.accept_root`): the admin posts root version N+1 (signed by
the old and the new root keys, checked here exactly as a device checks it), optionally targets
re-signed with a new targets key and new online keys. The hub keeps every root version as
``<N>.root.json`` so a device pinned to an old root walks the chain; it then re-signs snapshot
and timestamp with the keys the new root names. New online keys are written as
``<role>.next.key`` before the root and moved into place after it, and :meth:`open` finishes or
drops a half-done switch, so a crash never leaves the hub without keys its root names.

Every timestamp also carries ``x-leanloop-issued`` (signed, an unrecognized field to TUF): the
hub's clock when it signed. Devices without a real-time clock use it as a lower bound of the
time (see :mod:`runtime.timefloor`).

Files live under ``<data>/tuf/``; the online keys under ``<data>/keys/online/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from hub.errors import BadRequest, Conflict, NotFound
from hub.signing import KEY_FILES, load_signer, utc_in, verify_root_chain
from runtime._atomic import atomic_write_bytes
from runtime.errors import ConfigError, TrustError
from runtime.timefloor import ISSUED_FIELD

__all__ = ["TufRepository"]

_SERIALIZER = JSONSerializer(compact=False)
_METADATA_NAME_RE = re.compile(r"^(?:timestamp|[1-9][0-9]{0,9}\.(?:root|snapshot|targets))\.json$")
_VERSIONED_RE = re.compile(r"^([1-9][0-9]{0,9})\.(root|snapshot|targets)\.json$")
_HASHED_NAME_RE = re.compile(r"^([0-9a-f]{64})\.(.+)$")

BlobSize = Callable[[str], int | None]
"""Size of the blob with this sha256 in the blob store, or None if it is not there."""


def _now() -> datetime:
    return datetime.now(UTC)


def _signer_from_pem(pem: bytes) -> CryptoSigner:
    """A signer from PEM private key bytes. Raises ValueError if they are not one."""
    try:
        return CryptoSigner(load_pem_private_key(pem, password=None))
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from e


def _meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


class TufRepository:
    """Root (copied at init), the latest targets, and the hub-signed snapshot and timestamp.

    Not thread-safe: the app calls it from the event loop only, and its writes are small.
    """

    def __init__(
        self,
        tuf_dir: Path,
        online_keys_dir: Path,
        blob_size: BlobSize,
        timestamp_expiry: timedelta = timedelta(days=1),
        snapshot_expiry: timedelta = timedelta(days=7),
    ) -> None:
        """Load the repository from ``tuf_dir``; use :meth:`open` to create it on first start.

        Raises ConfigError if root metadata or an online key is missing or does not match.
        """
        self._args = (tuf_dir, online_keys_dir, blob_size, timestamp_expiry, snapshot_expiry)
        self._dir = Path(tuf_dir)
        self._blob_size = blob_size
        self._timestamp_expiry = timestamp_expiry
        self._snapshot_expiry = snapshot_expiry
        self._online_dir = Path(online_keys_dir)

        versions: dict[str, list[int]] = {"root": [], "snapshot": [], "targets": []}
        for p in self._dir.iterdir():
            m = _VERSIONED_RE.match(p.name)
            if m:
                versions[m.group(2)].append(int(m.group(1)))
        if not versions["root"]:
            raise ConfigError(f"no root metadata in {self._dir}; start the hub once with --keys")
        self._root = Metadata[Root].from_bytes(self._read(f"{max(versions['root'])}.root.json"))
        self._finish_key_switch()
        self._snapshot_signer = load_signer(self._online_dir / "snapshot.key")
        self._timestamp_signer = load_signer(self._online_dir / "timestamp.key")
        for role, signer in (
            ("snapshot", self._snapshot_signer),
            ("timestamp", self._timestamp_signer),
        ):
            if signer.public_key.keyid not in self._root.signed.roles[role].keyids:
                raise ConfigError(f"the online {role} key is not the {role} key of root.json")

        self._targets: Metadata[Targets] | None = None
        self._targets_bytes: bytes | None = None
        self._snapshot: Metadata[Snapshot] | None = None
        self._timestamp: Metadata[Timestamp] | None = None
        if versions["targets"]:
            self._targets_bytes = self._read(f"{max(versions['targets'])}.targets.json")
            self._targets = Metadata[Targets].from_bytes(self._targets_bytes)
        if versions["snapshot"]:
            self._snapshot = Metadata[Snapshot].from_bytes(
                self._read(f"{max(versions['snapshot'])}.snapshot.json")
            )
        if (self._dir / "timestamp.json").exists():
            self._timestamp = Metadata[Timestamp].from_bytes(self._read("timestamp.json"))
        self._reconcile()

    @classmethod
    def open(
        cls,
        data_dir: Path,
        blob_size: BlobSize,
        keys_dir: Path | None = None,
        timestamp_expiry: timedelta = timedelta(days=1),
        snapshot_expiry: timedelta = timedelta(days=7),
    ) -> TufRepository:
        """Open ``<data_dir>/tuf``, first copying ``root.json`` and the online keys from
        ``keys_dir`` (a ``keys init`` folder) if the hub has never started.

        Raises ConfigError if there is no repository yet and no usable ``keys_dir``.
        """
        tuf_dir = Path(data_dir) / "tuf"
        online = Path(data_dir) / "keys" / "online"
        if not (tuf_dir / "1.root.json").exists():
            if keys_dir is None:
                raise ConfigError(
                    f"{data_dir} has no TUF repository yet; pass --keys <folder of keys init>"
                )
            cls._initialize(Path(keys_dir), tuf_dir, online)
        return cls(tuf_dir, online, blob_size, timestamp_expiry, snapshot_expiry)

    @staticmethod
    def _initialize(keys_dir: Path, tuf_dir: Path, online: Path) -> None:
        """Import the root chain (``roots/<v>.root.json`` up to ``root.json``, or ``root.json``
        alone at version 1) and the online keys of a ``keys init`` folder."""
        try:
            root_bytes = (keys_dir / "root.json").read_bytes()
            root = Metadata[Root].from_bytes(root_bytes)
        except FileNotFoundError as e:
            raise ConfigError(f"{keys_dir}/root.json not found; run `leanloop keys init`") from e
        except DeserializationError as e:
            raise ConfigError(f"{keys_dir}/root.json is not root metadata: {e}") from e
        chain: list[bytes] = []
        previous: Root | None = None
        for version in range(1, root.signed.version + 1):
            path = keys_dir / "roots" / f"{version}.root.json"
            try:
                data = root_bytes if version == root.signed.version else path.read_bytes()
                md = Metadata[Root].from_bytes(data)
                verify_root_chain(previous, md)
            except FileNotFoundError as e:
                raise ConfigError(f"{path} not found: the hub needs every root version") from e
            except (DeserializationError, TrustError) as e:
                raise ConfigError(f"root version {version} in {keys_dir} is not valid: {e}") from e
            if md.signed.version != version:
                raise ConfigError(f"{path} holds root version {md.signed.version}")
            chain.append(data)
            previous = md.signed
        if not root.signed.consistent_snapshot:
            raise ConfigError("root.json must have consistent_snapshot on")
        online.mkdir(parents=True, exist_ok=True)
        online.chmod(0o700)
        for role in ("snapshot", "timestamp"):
            src = keys_dir / KEY_FILES[role]
            if not src.exists():
                raise ConfigError(f"online key {src} not found")
            atomic_write_bytes(online / f"{role}.key", src.read_bytes(), mode=0o600)
        tuf_dir.mkdir(parents=True, exist_ok=True)
        # 1.root.json last: its presence is what marks the repository as initialized.
        for version in [*range(2, len(chain) + 1), 1]:
            atomic_write_bytes(tuf_dir / f"{version}.root.json", chain[version - 1])

    def reload(self) -> None:
        """Read the repository from disk again (another hub replica changed it)."""
        TufRepository.__init__(self, *self._args)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, name: str) -> bytes:
        return (self._dir / name).read_bytes()

    @property
    def root_version(self) -> int:
        """Version of the newest root the hub serves."""
        return self._root.signed.version

    @property
    def root_bytes(self) -> bytes:
        """The root metadata devices pin (the latest version the hub has)."""
        return self._read(f"{self._root.signed.version}.root.json")

    @property
    def targets_version(self) -> int:
        """Version of the current targets metadata; 0 before the first publish."""
        return self._targets.signed.version if self._targets else 0

    @property
    def timestamp_expires(self) -> datetime | None:
        """When the served timestamp expires; None before the first publish."""
        return self._timestamp.signed.expires if self._timestamp else None

    def current_targets_bytes(self) -> bytes | None:
        """The current signed targets metadata exactly as the admin signed it (None: none yet)."""
        return self._targets_bytes

    def target_paths(self) -> dict[str, tuple[str, int]]:
        """Every current target: path → (sha256, length)."""
        if self._targets is None:
            return {}
        return {
            path: (tf.hashes["sha256"], tf.length)
            for path, tf in self._targets.signed.targets.items()
        }

    def metadata_bytes(self, filename: str) -> bytes:
        """A served metadata file: ``timestamp.json`` or ``<version>.<role>.json``.

        Raises NotFound for any other name or a version that does not exist.
        """
        if not _METADATA_NAME_RE.match(filename):
            raise NotFound(f"no metadata file {filename!r}")
        try:
            return self._read(filename)
        except FileNotFoundError:
            raise NotFound(f"no metadata file {filename!r}") from None

    def target_blob(self, url_path: str) -> tuple[str, int]:
        """Map a consistent-snapshot target path ``<dir>/<sha256>.<name>`` to (sha256, length).

        Raises NotFound unless ``<dir>/<name>`` is a current target with exactly that hash, so
        the blob store never serves anything that is not signed.
        """
        dirname, sep, basename = url_path.rpartition("/")
        m = _HASHED_NAME_RE.match(basename)
        if m is None or self._targets is None:
            raise NotFound(f"no target {url_path!r}")
        sha256, name = m.group(1), m.group(2)
        info = self._targets.signed.targets.get(f"{dirname}{sep}{name}")
        if info is None or info.hashes.get("sha256") != sha256:
            raise NotFound(f"no target {url_path!r}")
        return sha256, info.length

    # -- verification (pure) -------------------------------------------------------------------

    def verify_targets(
        self, signed: bytes, now: datetime | None = None, root: Root | None = None
    ) -> Metadata[Targets]:
        """Check new targets metadata without storing it; return it parsed.

        ``root`` is the root to check the signature with (default: the current one).

        Raises BadRequest (malformed, bad signature, expired, delegations, a target without a
        sha256 or whose blob is missing or of another size) or Conflict (version not current+1).
        """
        try:
            md = Metadata[Targets].from_bytes(signed)
        except DeserializationError as e:
            raise BadRequest(f"not targets metadata: {e}") from e
        try:
            (root or self._root.signed).verify_delegate(
                Targets.type, md.signed_bytes, md.signatures
            )
        except UnsignedMetadataError as e:
            raise BadRequest(
                f"targets metadata is not signed by the root's targets key: {e}"
            ) from e
        if md.signed.version != self.targets_version + 1:
            raise Conflict(
                f"targets version {md.signed.version} is not {self.targets_version + 1}"
                f" (current + 1); fetch the current targets and sign again"
            )
        if md.signed.is_expired(now or _now()):
            raise BadRequest(f"targets metadata expired at {md.signed.expires.isoformat()}")
        if md.signed.delegations is not None:
            raise BadRequest("delegated targets are not supported by this hub")
        for path, info in md.signed.targets.items():
            sha256 = info.hashes.get("sha256")
            if sha256 is None:
                raise BadRequest(f"target {path} has no sha256 hash")
            size = self._blob_size(sha256)
            if size is None:
                raise BadRequest(f"target {path}: blob {sha256} is not uploaded; PUT it first")
            if size != info.length:
                raise BadRequest(
                    f"target {path}: blob is {size} bytes, signed length {info.length}"
                )
        return md

    # -- writing -------------------------------------------------------------------------------

    def accept_targets(self, signed: bytes, now: datetime | None = None) -> int:
        """Verify and store new targets metadata, then re-sign snapshot and timestamp.

        Returns the new targets version. Raises what :meth:`verify_targets` raises; OSError if
        the files cannot be written (the previous state stays served).
        """
        md = self.verify_targets(signed, now)
        version = md.signed.version
        atomic_write_bytes(self._dir / f"{version}.targets.json", signed)
        self._targets, self._targets_bytes = md, signed
        self._sign_snapshot(now)
        return version

    def accept_root(
        self,
        root_json: bytes,
        targets_json: bytes | None = None,
        online_keys: dict[str, bytes] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Take root version N+1 from the admin, with what it needs to stay servable.

        ``root_json`` must be the current version + 1, signed by a threshold of the current
        root keys and of its own (as devices check), with consistent snapshots. The current
        targets must verify against it, or ``targets_json`` (version + 1, re-signed with the new
        targets key) must be given. The hub's online keys must be the ones it names, or
        ``online_keys`` (role → PEM private key) must give the ones it names. Posting the
        current root again is a no-op. Returns the root version now served.

        Raises BadRequest (a check above failed), Conflict (version is not current + 1),
        OSError (files cannot be written; the previous root stays in charge).
        """
        try:
            md = Metadata[Root].from_bytes(root_json)
        except DeserializationError as e:
            raise BadRequest(f"not root metadata: {e}") from e
        current = self._root.signed.version
        if md.signed.version <= current:
            with contextlib.suppress(FileNotFoundError):
                if self._read(f"{md.signed.version}.root.json") == root_json:
                    return current  # already taken: posting it again is a no-op
        if md.signed.version != current + 1:
            raise Conflict(f"root version {md.signed.version} is not {current + 1} (current + 1)")
        try:
            verify_root_chain(self._root.signed, md)
        except TrustError as e:
            raise BadRequest(str(e)) from e
        if not md.signed.consistent_snapshot:
            raise BadRequest("the new root must keep consistent_snapshot on")
        if md.signed.is_expired(now or _now()):
            raise BadRequest(f"root version {md.signed.version} expired at {md.signed.expires}")

        signers = {"snapshot": self._snapshot_signer, "timestamp": self._timestamp_signer}
        for role, pem in (online_keys or {}).items():
            if role not in signers:
                raise BadRequest(f"{role} is not an online role (snapshot, timestamp)")
            try:
                signers[role] = _signer_from_pem(pem)
            except ValueError as e:
                raise BadRequest(f"the new {role} key is not a usable private key: {e}") from e
        for role, signer in signers.items():
            if signer.public_key.keyid not in md.signed.roles[role].keyids:
                raise BadRequest(
                    f"the new root does not name the hub's {role} key; send the new online keys"
                )
            if md.signed.roles[role].threshold != 1:
                raise BadRequest(f"the hub signs {role} with one key; its threshold must be 1")

        new_targets: Metadata[Targets] | None = None
        if targets_json is not None:
            new_targets = self.verify_targets(targets_json, now, root=md.signed)
            if set(new_targets.signed.targets) != set(self.target_paths()):
                raise BadRequest("re-signed targets must list exactly the current targets")
        elif self._targets is not None:
            try:
                md.signed.verify_delegate(
                    Targets.type, self._targets.signed_bytes, self._targets.signatures
                )
            except UnsignedMetadataError as e:
                raise BadRequest(
                    "the new root does not trust the key of the current targets; "
                    f"send targets re-signed with the new targets key: {e}"
                ) from e

        # Keys first (as .next), then the root that names them, then targets and freshness.
        for role, pem in (online_keys or {}).items():
            atomic_write_bytes(self._online_dir / f"{role}.next.key", pem, mode=0o600)
        atomic_write_bytes(self._dir / f"{md.signed.version}.root.json", root_json)
        self._root = md
        self._snapshot_signer, self._timestamp_signer = signers["snapshot"], signers["timestamp"]
        self._finish_key_switch()
        if new_targets is not None and targets_json is not None:
            version = new_targets.signed.version
            atomic_write_bytes(self._dir / f"{version}.targets.json", targets_json)
            self._targets, self._targets_bytes = new_targets, targets_json
        if self._targets is not None:
            self._sign_snapshot(now)
        return md.signed.version

    def _finish_key_switch(self) -> None:
        """Move ``<role>.next.key`` into place if the root names it, else drop it."""
        for role in ("snapshot", "timestamp"):
            nxt = self._online_dir / f"{role}.next.key"
            if not nxt.exists():
                continue
            try:
                keyid = _signer_from_pem(nxt.read_bytes()).public_key.keyid
            except ValueError:
                keyid = ""
            if keyid in self._root.signed.roles[role].keyids:
                nxt.replace(self._online_dir / f"{role}.key")
            else:  # crashed before the root naming it was written
                nxt.unlink()

    def refresh_timestamp(self, now: datetime | None = None) -> bool:
        """Re-sign timestamp (and snapshot) if less than half of its life is left.

        Returns True if something was re-signed; False before the first publish or when both are
        still fresh. Raises OSError if the files cannot be written.
        """
        if self._snapshot is None or self._timestamp is None:
            return False
        t = now or _now()
        if self._snapshot.signed.expires - t < self._snapshot_expiry / 2:
            self._sign_snapshot(t)
            return True
        if self._timestamp.signed.expires - t < self._timestamp_expiry / 2:
            self._sign_timestamp(t)
            return True
        return False

    def _signed_by_current_key(
        self, role: str, md: Metadata[Snapshot] | Metadata[Timestamp]
    ) -> bool:
        return bool(set(md.signatures) & set(self._root.signed.roles[role].keyids))

    def _reconcile(self) -> None:
        """After a crash between the targets and timestamp writes, finish the switch; after one
        during a root rotation, re-sign what the new root's keys do not cover."""
        if self._targets is None:
            return
        snap_targets = self._snapshot.signed.meta["targets.json"].version if self._snapshot else 0
        if (
            snap_targets != self._targets.signed.version
            or self._snapshot is None
            or not self._signed_by_current_key("snapshot", self._snapshot)
            or self._timestamp is None
            or not self._signed_by_current_key("timestamp", self._timestamp)
        ):
            self._sign_snapshot(None)
        elif self._timestamp is None or (
            self._snapshot is not None
            and self._timestamp.signed.snapshot_meta.version != self._snapshot.signed.version
        ):
            self._sign_timestamp(None)

    def _sign_snapshot(self, now: datetime | None) -> None:
        assert self._targets_bytes is not None and self._targets is not None
        version = self._snapshot.signed.version + 1 if self._snapshot else 1
        snapshot = Snapshot(
            version=version,
            expires=utc_in(self._snapshot_expiry, now),
            meta={"targets.json": _meta_file(self._targets.signed.version, self._targets_bytes)},
        )
        md = Metadata(snapshot)
        md.sign(self._snapshot_signer)
        data = md.to_bytes(_SERIALIZER)
        atomic_write_bytes(self._dir / f"{version}.snapshot.json", data)
        self._snapshot = md
        self._sign_timestamp(now, data)

    def _sign_timestamp(self, now: datetime | None, snapshot_bytes: bytes | None = None) -> None:
        assert self._snapshot is not None
        snap_version = self._snapshot.signed.version
        if snapshot_bytes is None:
            snapshot_bytes = self._read(f"{snap_version}.snapshot.json")
        version = self._timestamp.signed.version + 1 if self._timestamp else 1
        issued = (now or _now()).replace(microsecond=0)
        md = Metadata(
            Timestamp(
                version=version,
                expires=utc_in(self._timestamp_expiry, issued),
                snapshot_meta=_meta_file(snap_version, snapshot_bytes),
                unrecognized_fields={ISSUED_FIELD: issued.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )
        )
        md.sign(self._timestamp_signer)
        atomic_write_bytes(self._dir / "timestamp.json", md.to_bytes(_SERIALIZER))
        self._timestamp = md
