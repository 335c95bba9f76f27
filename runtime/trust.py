"""Fetch a bundle through TUF: nothing is installed unless signed targets metadata vouches for it.

The device pins a root (``trust.root`` in its config, copied at provisioning). Each check makes
a fresh python-tuf ``Updater`` (root → timestamp → snapshot → targets, with rollback, expiry,
threshold and mix-and-match protection done by python-tuf), then looks up
``<bundle>/<version>/manifest.json``. The manifest is downloaded as a target (so its hash is
signed), parsed, and each file it lists must itself be a target with the very same length and
sha256. Files the device already has with the same hash are copied locally instead of
downloaded. For a changed file whose old version the device has (sha256 X), the target
``<file target>.from-<X[:16]>.lldelta`` is used if it is signed with ``custom.leanloop``
naming base X and the wanted result: it is downloaded as a target (length and hash checked),
applied with :func:`bsdiff.apply_patch_file` and the result hashed again; any failure falls back
to the full file. Metadata is fetched by python-tuf (which enforces each role's ``max_length``);
target files (manifest, bundle files, deltas) by :class:`runtime.download.Downloader`: resumable
across restarts (partials keyed by sha256 under ``<state_dir>/downloads``), rate-capped,
retried with backoff, never reading past the signed length; each result is then checked once
more against its signed targetinfo (``TargetFile.verify_length_and_hashes``).

Root rotation needs nothing here: python-tuf walks ``<N>.root.json`` from the trusted root
version up (each new root must be signed by a threshold of the previous root's keys and of its
own) and from then on trusts only the keys the newest root names. Expiry is checked against
``max(system clock, time floor)`` (:mod:`runtime.timefloor`), not the bare clock, because a
device may have no real-time clock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater

import bsdiff
import runtime.download as _download_mod
from runtime._atomic import atomic_write_json
from runtime.bundle.loader import SKIPPED_NAME, file_sha256, inside, read_manifest, unneeded_files
from runtime.bundle.manifest import MANIFEST_NAME, FileEntry, Manifest
from runtime.config import DownloadSettings
from runtime.download import Downloader, DownloadError, HashMismatchError
from runtime.errors import BundleError, TrustError, UpdateError
from runtime.timefloor import ISSUED_FIELD, TimeFloor, parse_utc
from runtime.update import _testhooks

# The kill matrix counts body bytes as the resumable downloader writes them (a no-op unless the
# test environment variables of runtime.update._testhooks are set).
_download_mod._on_bytes = _testhooks.on_bytes

__all__ = ["AuthFetcher", "BundleFetcher", "FetchResult", "HubURLs", "delta_target_name"]

log = logging.getLogger("leanloop.trust")


def delta_target_name(file_target: str, base_sha256: str) -> str:
    """Target path of the patch that turns the file with ``base_sha256`` into ``file_target``."""
    return f"{file_target}.from-{base_sha256[:16]}.lldelta"


class HubURLs:
    """The TUF bases (``<hub>/api/v1/tuf``) of the device's hub and its fallbacks, and the one
    that answered last (tried first next time), shared by metadata and target downloads."""

    def __init__(self, hub_url: str, fallback_urls: Sequence[str] = ()) -> None:
        self.bases = [u.rstrip("/") + "/api/v1/tuf" for u in (hub_url, *fallback_urls)]
        self.current = 0

    @property
    def primary(self) -> str:
        return self.bases[0]

    def in_turn(self, url: str) -> list[str]:
        """``url`` (under the primary base) on every base, the current one first."""
        if len(self.bases) == 1 or not url.startswith(self.primary):
            return [url]
        rest = url[len(self.primary) :]
        n = len(self.bases)
        return [self.bases[(self.current + i) % n] + rest for i in range(n)]

    def answered(self, url: str) -> None:
        """Make the base of ``url`` the current one."""
        for i, base in enumerate(self.bases):
            if url.startswith(base + "/"):
                self.current = i
                return


class AuthFetcher(FetcherInterface):
    """python-tuf fetcher that sends the device token and counts the bytes it receives. With
    fallback hubs, a hub that is down or answers 502-504 is tried on the next one."""

    def __init__(
        self,
        token: str | None,
        timeout_s: float = 30.0,
        chunk: int = 64 * 1024,
        urls: HubURLs | None = None,
    ) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout_s
        self._chunk = chunk
        self._http = urllib3.PoolManager(retries=urllib3.Retry(total=2, backoff_factor=0.2))
        self._urls = urls
        self.bytes_received = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        candidates = self._urls.in_turn(url) if self._urls is not None else [url]
        for i, candidate in enumerate(candidates):
            try:
                chunks = self._fetch_one(candidate)
            except (tuf_exc.DownloadError, tuf_exc.SlowRetrievalError) as e:
                status = getattr(e, "status_code", None)
                if i + 1 == len(candidates) or status not in (None, 502, 503, 504):
                    raise
                log.info("%s: %s; trying the next hub", candidate, e)
                continue
            if self._urls is not None:
                self._urls.answered(candidate)
            return chunks
        raise AssertionError("unreachable")

    def _fetch_one(self, url: str) -> Iterator[bytes]:
        try:
            r = self._http.request(
                "GET",
                url,
                headers=self._headers,
                preload_content=False,
                timeout=urllib3.Timeout(self._timeout),
            )
        except urllib3.exceptions.MaxRetryError as e:
            if isinstance(e.reason, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError from e
            raise tuf_exc.DownloadError(f"{url}: {e.reason}") from e
        if r.status >= 400:
            r.release_conn()
            raise tuf_exc.DownloadHTTPError(f"HTTP {r.status} for {url}", r.status)
        return self._chunks(r)

    def _chunks(self, r: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            for chunk in r.stream(self._chunk):
                _testhooks.on_bytes("download", len(chunk))
                self.bytes_received += len(chunk)
                yield chunk
        except urllib3.exceptions.HTTPError as e:
            raise tuf_exc.DownloadError(f"download interrupted: {e}") from e
        finally:
            r.release_conn()


class FetchResult:
    """What a fetch did: the manifest, bytes downloaded, files reused locally, files fetched in
    full, files rebuilt from a delta, and deltas that failed (then fetched in full)."""

    def __init__(
        self,
        manifest: Manifest,
        downloaded_bytes: int,
        reused: int,
        fetched: int,
        delta_files: int = 0,
        delta_fallbacks: int = 0,
    ):
        self.manifest = manifest
        self.downloaded_bytes = downloaded_bytes
        self.reused = reused
        self.fetched = fetched
        self.delta_files = delta_files
        self.delta_fallbacks = delta_fallbacks


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _trusted_set(up: Updater) -> Any:
    """python-tuf's trusted metadata set of an Updater.

    python-tuf 7 has no public way to set the time expiry is checked against; it reads
    ``TrustedMetadataSet.reference_time``, fixed when the Updater is made (spec 5.1 "fixed
    update start time"). This is the one place that reaches into it.
    """
    ts = getattr(up, "_trusted_set", None)
    if ts is None or not hasattr(ts, "reference_time"):
        raise TrustError("this python-tuf has no settable reference time; pin python-tuf 7.x")
    return ts


class BundleFetcher:
    """Verified download of bundles from a hub's TUF repository."""

    def __init__(
        self,
        metadata_dir: Path,
        pinned_root: Path,
        hub_url: str,
        token: str | None,
        timeout_s: float = 30.0,
        *,
        fallback_urls: Sequence[str] = (),
        downloads_dir: Path | None = None,
        download: DownloadSettings | None = None,
        clock: Callable[[], datetime] = _utc_now,
        time_floor: Path | None = None,
    ) -> None:
        """``clock`` gives the system time; ``time_floor`` is the floor file (default
        ``time_floor.json`` beside ``metadata_dir``, so it outlives a wiped metadata cache).
        Metadata and targets come from ``hub_url``, else from the ``fallback_urls`` in turn
        (hub replicas), as the device's API calls do."""
        self.metadata_dir = Path(metadata_dir)
        self.pinned_root = Path(pinned_root)
        self.urls = HubURLs(hub_url, fallback_urls)
        self.base = self.urls.primary
        self.token = token
        self.timeout_s = timeout_s
        # Partials survive restarts; default beside the metadata dir (<state_dir>/downloads).
        self.downloader = Downloader(
            downloads_dir or self.metadata_dir.parent / "downloads", token, download
        )
        self.clock = clock
        self.time_floor = TimeFloor(
            time_floor if time_floor is not None else self.metadata_dir.parent / "time_floor.json"
        )
        # The fetch in progress (for ``status``): bundle, bytes to fetch at most, start.
        self._current: tuple[str, int, int, float, int] | None = None

    def progress(self) -> dict[str, Any] | None:
        """The bundle being fetched: bytes received of ``total_bytes`` (the files it runs, at full
        size: reused files and deltas make it finish early), percent, bytes/s; or None."""
        cur = self._current
        if cur is None:
            return None
        name, version, total, t0, before = cur
        got = max(0, self.downloader.stats.bytes_received - before)
        took = max(1e-6, time.monotonic() - t0)
        return {
            "bundle": name,
            "version": version,
            "bytes": got,
            "total_bytes": total,
            "percent": round(100.0 * min(got, total) / total, 1) if total else None,
            "rate_bps": round(got / took, 1),
        }

    def set_token(self, token: str | None) -> None:
        """Send ``token`` from now on (the device refreshed it)."""
        self.token = token
        self.downloader.set_token(token)

    @property
    def counters(self) -> dict[str, int]:
        """Download totals of this process (bytes received, resumes, retries, restarts)."""
        return self.downloader.stats.as_counters()

    def _download(self, ti: TargetFile, out: Path) -> None:
        """One target file through the resumable downloader, then checked against ``ti``.

        The hub serves consistent-snapshot targets at ``<dir>/<sha256>.<name>``.
        """
        sha256 = ti.hashes.get("sha256")
        if sha256 is None:
            raise TrustError(f"{ti.path}: signed without a sha256 hash")
        dirname, sep, basename = ti.path.rpartition("/")
        url = f"{self.base}/targets/{quote(f'{dirname}{sep}{sha256}.{basename}')}"
        first, *others = self.urls.in_turn(url)
        self.downloader.fetch(first, ti.length, sha256, out, mirrors=others)
        if self.downloader.last_url is not None:
            self.urls.answered(self.downloader.last_url)
        with out.open("rb") as f:
            ti.verify_length_and_hashes(f)

    def refresh(self, up: Updater) -> None:
        """Refresh the top-level metadata with expiry checked against ``max(clock, floor)``,
        then raise the floor to the trusted timestamp's signing time.

        Raises what ``Updater.refresh`` raises, TrustError (python-tuf without a reference time).
        """
        ts = _trusted_set(up)
        ts.reference_time = self.time_floor.reference_time(
            self.clock(), set(ts.root.roles["timestamp"].keyids)
        )
        up.refresh()
        stamp = ts.timestamp
        keyids = set(ts.root.roles["timestamp"].keyids)
        try:
            self.time_floor.observe(
                parse_utc(stamp.unrecognized_fields.get(ISSUED_FIELD)), stamp.expires, keyids
            )
        except OSError as e:
            log.warning("could not save the time floor: %s", e)

    def _updater(self, fetcher: AuthFetcher) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        cached = self.metadata_dir / "root.json"
        try:
            # The pinned root bootstraps trust once; afterwards the cached (possibly rotated)
            # root is the anchor, as python-tuf intends.
            bootstrap = None if cached.exists() else self.pinned_root.read_bytes()
        except OSError as e:
            raise TrustError(f"pinned root {self.pinned_root}: cannot read: {e}") from e
        try:
            return Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=f"{self.base}/metadata/",
                target_base_url=f"{self.base}/targets/",
                fetcher=fetcher,
                bootstrap=bootstrap,
            )
        except (tuf_exc.RepositoryError, ValueError) as e:
            raise TrustError(f"trusted root is invalid: {e}") from e

    def fetch(
        self,
        name: str,
        version: int,
        dest: Path,
        reuse_dirs: list[Path] | None = None,
        backend: str | Sequence[str] | None = None,
        check_plan: Callable[[Manifest, set[str]], None] | None = None,
    ) -> FetchResult:
        """Download bundle ``name`` ``version`` into the empty folder ``dest``.

        With ``backend`` set (the device's engine preference), model files that no planned
        engine reads are not downloaded (they are listed in ``.skipped.json``; see
        :func:`~runtime.bundle.loader.unneeded_files`); every other file is.
        ``check_plan(manifest, skipped)`` runs once the signed manifest is known and before any
        file is written (the free-space check).

        Raises TrustError (metadata or a file does not verify), UpdateError (not published,
        network), BundleError (manifest malformed or inconsistent with signed metadata).
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        fetcher = AuthFetcher(self.token, self.timeout_s, urls=self.urls)
        body_before = self.downloader.stats.bytes_received
        up = self._updater(fetcher)
        try:
            self.refresh(up)
            target = f"{name}/{version}/{MANIFEST_NAME}"
            info = up.get_targetinfo(target)
            if info is None:
                raise UpdateError(f"{name} v{version} is not in the signed targets metadata")
            self._download(info, dest / MANIFEST_NAME)
            manifest = read_manifest(dest)
            if manifest.name != name or manifest.version != version:
                raise TrustError(
                    f"signed manifest for {name} v{version} names "
                    f"{manifest.name} v{manifest.version}"
                )
            reused = fetched = delta_files = delta_fallbacks = 0
            self.downloader.prune(keep={e.sha256 for e in manifest.files.values()})
            local = _LocalFiles(reuse_dirs or [])
            skip = unneeded_files(manifest, backend) if backend else set()
            if check_plan is not None:
                check_plan(manifest, skip)
            if skip:
                atomic_write_json(dest / SKIPPED_NAME, sorted(skip))
            planned = sum(e.size for rel, e in manifest.files.items() if rel not in skip)
            self._current = (name, version, planned, time.monotonic(), body_before)
            for rel, entry in sorted(manifest.files.items()):
                ti = up.get_targetinfo(manifest.target_name(rel))
                if ti is None:
                    raise TrustError(f"{rel}: listed in the manifest but not a signed target")
                if ti.length != entry.size or ti.hashes.get("sha256") != entry.sha256:
                    raise TrustError(f"{rel}: manifest and signed targets metadata disagree")
                if rel in skip:
                    continue
                out = inside(dest, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                olds = local.versions(rel)
                same = next((p for p, sha in olds if sha == entry.sha256), None)
                if same is not None:
                    _copy_counted(same, out)
                    if file_sha256(out) == entry.sha256:
                        reused += 1
                        continue
                done = _apply_delta(
                    up, self._download, manifest.target_name(rel), rel, entry, out, olds
                )
                if done:
                    delta_files += 1
                    continue
                if done is not None:
                    delta_fallbacks += 1
                self._download(ti, out)
                fetched += 1
        except tuf_exc.RepositoryError as e:
            raise TrustError(f"signed metadata rejected: {type(e).__name__}: {e}") from e
        except tuf_exc.DownloadError as e:
            raise UpdateError(f"download failed: {type(e).__name__}: {e}") from e
        except BundleError as e:
            raise TrustError(f"signed manifest is invalid: {e}") from e
        finally:
            self._current = None
        received = fetcher.bytes_received + self.downloader.stats.bytes_received - body_before
        return FetchResult(manifest, received, reused, fetched, delta_files, delta_fallbacks)


def _apply_delta(
    up: Updater,
    download: Callable[[TargetFile, Path], None],
    target: str,
    rel: str,
    entry: FileEntry,
    out: Path,
    olds: list[tuple[Path, str]],
) -> bool | None:
    """Rebuild ``out`` from a local old version of ``rel`` and a signed delta target.

    Returns None if no signed delta fits a base the device has, True if ``out`` now holds the
    wanted file, False if a delta was tried and failed (nothing is left at ``out``).
    """
    for base, have in olds:
        if have == entry.sha256:
            continue
        ti = up.get_targetinfo(delta_target_name(target, have))
        custom = ti.custom if ti is not None else None
        meta = custom.get("leanloop") if isinstance(custom, dict) else None
        if (
            ti is None
            or not isinstance(meta, dict)
            or meta.get("base_sha256") != have
            or meta.get("result_sha256") != entry.sha256
        ):
            continue
        patch = out.with_name(f".{out.name}.lldelta")
        try:
            download(ti, patch)
            _testhooks.on_bytes("staging", entry.size)
            bsdiff.apply_patch_file(base, patch, out, max_result=entry.size)
            if file_sha256(out) != entry.sha256:
                raise bsdiff.ResultMismatchError(f"{rel}: patched file does not hash as signed")
            return True
        except (
            tuf_exc.RepositoryError,
            DownloadError,
            HashMismatchError,
            bsdiff.DeltaError,
            OSError,
        ) as e:
            log.warning("delta for %s failed, fetching the full file: %s", rel, e)
            with contextlib.suppress(OSError):
                out.unlink(missing_ok=True)
            return False
        finally:
            with contextlib.suppress(OSError):
                patch.unlink(missing_ok=True)
    return None


def _copy_counted(src: Path, dst: Path, chunk: int = 16 * 1024) -> None:
    """Copy a local file into the slot, telling the kill-matrix hook about each chunk."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while block := fi.read(chunk):
            _testhooks.on_bytes("staging", len(block))
            fo.write(block)


class _LocalFiles:
    """The device's own copies of a bundle path (in the slots it trusts), each hashed once."""

    def __init__(self, dirs: list[Path]) -> None:
        self._dirs = dirs
        self._seen: dict[str, list[tuple[Path, str]]] = {}

    def versions(self, rel: str) -> list[tuple[Path, str]]:
        """(path, sha256) of every local file at ``rel``."""
        if rel not in self._seen:
            found = []
            for d in self._dirs:
                p = d / rel
                try:
                    if p.is_file():
                        found.append((p, file_sha256(p)))
                except OSError:
                    continue
            self._seen[rel] = found
        return self._seen[rel]
