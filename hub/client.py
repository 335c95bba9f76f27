"""A small synchronous client of the hub's admin API (urllib3, with timeouts).

It is what ``leanloop bundle publish``, ``leanloop train`` and the demo use: one method per
admin route, plus :func:`safe_extract_tar` for a job's artifact. Publishing a bundle (blobs,
deltas, signed targets) and pushing a rotated root are the flows with logic on the admin's
side; they live in :mod:`hub.publish` (``delta_bases`` and the ``DELTA_*`` constants are
re-exported here).

Every error is a :class:`~runtime.errors.HubError` subclass from :mod:`hub.errors` with the
hub's one-line message: the same class the hub raised on its side.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import urllib3

from hub import publish
from hub.errors import HubUnavailable, NotFound, error_for_status
from hub.publish import DELTA_BASE_VERSIONS, DELTA_MAX_RATIO, delta_bases
from runtime.errors import BundleError

__all__ = [
    "DELTA_BASE_VERSIONS",
    "DELTA_MAX_RATIO",
    "HubAdminClient",
    "delta_bases",
    "safe_extract_tar",
]

Box = list[Any]  # [x1, y1, x2, y2, "label"]


def safe_extract_tar(data: bytes, dest_dir: Path) -> list[str]:
    """Extract a tar(.gz) into ``dest_dir``: regular files and folders only, none escaping it.

    Checks every member before writing anything. Returns the extracted file names. Raises
    BundleError for absolute paths, ``..``, links, devices or FIFOs.
    """
    dest = Path(dest_dir).resolve()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or "\\" in m.name:
                    raise BundleError(f"archive member {m.name!r} escapes the destination")
                if not (m.isfile() or m.isdir()):
                    raise BundleError(f"archive member {m.name!r} is a link or special file")
                if not (dest / m.name).resolve().is_relative_to(dest):
                    raise BundleError(f"archive member {m.name!r} escapes the destination")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as e:
        raise BundleError(f"job artifact is not a valid tar archive: {e}") from e
    return [m.name for m in members if m.isfile()]


class _ProgressReader(io.BytesIO):
    """A request body that tells how much of it was read (sent); seekable, so urllib3 can
    rewind it for a retry."""

    def __init__(self, data: bytes, on_read: Callable[[int], None]) -> None:
        super().__init__(data)
        self._on_read = on_read

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        if data:
            self._on_read(self.tell())
        return data


class HubAdminClient:
    """The admin's view of one hub, authenticated with the admin token."""

    def __init__(
        self, url: str, token: str, connect_timeout: float = 10.0, read_timeout: float = 120.0
    ) -> None:
        self._base = url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | _ProgressReader | None = None,
        json_body: Any = None,
        fields: dict[str, tuple[str, bytes, str]] | None = None,
        query: dict[str, Any] | None = None,
    ) -> bytes:
        headers = dict(self._headers)
        url = self._base + path
        try:
            if fields is not None:
                resp = self._http.request(method, url, fields=fields, headers=headers)
            elif json_body is not None:
                resp = self._http.request(method, url, json=json_body, headers=headers)
            elif query is not None:
                q = {k: str(v) for k, v in query.items() if v is not None}
                resp = self._http.request(method, url, fields=q, headers=headers)
            else:
                if body is not None:
                    headers["Content-Type"] = "application/octet-stream"
                    # a reader has no length urllib3 can see: without it, it would send chunked
                    headers["Content-Length"] = str(len(body.getbuffer()) if isinstance(
                        body, _ProgressReader) else len(body))  # fmt: skip
                resp = self._http.request(method, url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise HubUnavailable(f"{method} {url} failed: {e}") from e
        if resp.status >= 400:
            try:
                message = str(json.loads(resp.data)["error"])
            except (ValueError, KeyError, TypeError):
                message = resp.data[:200].decode("utf-8", errors="replace") or resp.reason or ""
            raise error_for_status(resp.status, message)
        return bytes(resp.data)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        data = self._request(method, path, **kw)
        try:
            return json.loads(data)
        except ValueError as e:
            raise HubUnavailable(f"{method} {path} did not answer JSON") from e

    # -- bundles -------------------------------------------------------------------------------

    def put_blob(self, data: bytes, on_sent: Callable[[int], None] | None = None) -> bool:
        """Upload bytes as a blob; return True if the hub did not have them yet.

        ``on_sent(n)`` is called as the body goes out, ``n`` the bytes of it sent so far.
        """
        sha256 = hashlib.sha256(data).hexdigest()
        body = data if on_sent is None else _ProgressReader(data, on_sent)
        return bool(self._json("PUT", f"/admin/blobs/{sha256}", body=body)["stored"])

    def current_targets(self) -> bytes | None:
        """The hub's current signed targets metadata (None before the first publish)."""
        try:
            return self._request("GET", "/admin/tuf/targets")
        except NotFound:
            return None

    def post_targets(
        self, signed: bytes, force_reason: str | None = None, who: str | None = None
    ) -> int:
        """Post signed targets metadata; return the version the hub now serves.

        ``force_reason`` publishes unblessed bundles anyway (the hub audits it).
        """
        q = {k: v for k, v in (("force_reason", force_reason), ("who", who)) if v is not None}
        path = "/admin/targets" + (f"?{urlencode(q)}" if q else "")
        return int(self._json("POST", path, body=signed)["version"])

    def publish_bundle(
        self,
        bundle_dir: Path,
        keys_dir: Path,
        expires_days: int = 365,
        force_reason: str | None = None,
        who: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Upload a built bundle folder and sign it into the hub's targets; return that version
        (:func:`hub.publish.publish_bundle`, which says what it raises)."""
        return publish.publish_bundle(
            self, bundle_dir, keys_dir, expires_days, force_reason, who, on_progress
        )

    def push_root(self, keys_dir: Path, expires_days: int = 365) -> int:
        """Upload the root versions of a keys folder; return the hub's root version
        (:func:`hub.publish.push_root`, which says what it raises)."""
        return publish.push_root(self, keys_dir, expires_days)

    def post_root(self, fields: dict[str, tuple[str, bytes, str]]) -> int:
        """``POST /admin/tuf/root`` (form fields ``root``, and optionally ``targets`` and the
        online keys); return the root version the hub now serves."""
        return int(self._json("POST", "/admin/tuf/root", fields=fields)["version"])

    # -- fleet ---------------------------------------------------------------------------------

    def rollout(
        self,
        bundle: str,
        version: int,
        devices: list[str] | None = None,
        cohort: str | None = None,
        force_reason: str | None = None,
        who: str | None = None,
    ) -> int:
        """Ask devices (listed, a cohort, or all) to run a bundle version; return how many."""
        body: dict[str, Any] = {"bundle": bundle, "version": version}
        if force_reason is not None:
            body["force_reason"] = force_reason
        if who is not None:
            body["who"] = who
        if devices is not None:
            body["devices"] = devices
        if cohort is not None:
            body["cohort"] = cohort
        return int(self._json("POST", "/admin/rollouts", json_body=body)["devices"])

    def devices(self) -> list[dict[str, Any]]:
        """Every device: ``device_id``, ``cohort``, ``desired``, ``status``, ``last_seen``."""
        return list(self._json("GET", "/admin/devices"))

    # -- device identity (hub/api/identity.py) -------------------------------------------------

    def mint_enroll_secret(
        self, uses: int = 1, ttl_s: float = 86400.0, cohort: str | None = None
    ) -> dict[str, Any]:
        """A new enrolment secret: ``{secret, uses, expires, cohort}``."""
        body: dict[str, Any] = {"uses": uses, "ttl_s": ttl_s}
        if cohort is not None:
            body["cohort"] = cohort
        return dict(self._json("POST", "/admin/enroll-secrets", json_body=body))

    def approve_device(self, device_id: str, public_key: str | None = None) -> str:
        """Make ``public_key`` (default: the pending one) the device's key; returns it."""
        body = {"public_key": public_key} if public_key else {}
        path = f"/admin/devices/{device_id}/approve"
        return str(self._json("POST", path, json_body=body)["public_key"])

    def reset_device(self, device_id: str) -> None:
        """Forget a device's key and token so its id can be enrolled afresh."""
        self._json("POST", f"/admin/devices/{device_id}/reset", json_body={})

    # -- shadow mode ---------------------------------------------------------------------------

    def shadow_rollout(
        self,
        bundle: str,
        version: int,
        rule: dict[str, Any] | None = None,
        devices: list[str] | None = None,
        cohort: str | None = None,
    ) -> int:
        """Run a bundle version in shadow mode (listed devices, a cohort, or all) with a
        promotion rule (``min_frames``, ``min_agreement``, ``max_accuracy_drop``, ...); return
        how many devices it reaches."""
        body: dict[str, Any] = {"bundle": bundle, "version": version, "rule": rule or {}}
        if devices is not None:
            body["devices"] = devices
        if cohort is not None:
            body["cohort"] = cohort
        return int(self._json("POST", "/admin/shadow/rollouts", json_body=body)["devices"])

    def shadow_cancel(self, devices: list[str] | None = None, cohort: str | None = None) -> int:
        """Withdraw shadow candidates; return how many assignments were removed."""
        body: dict[str, Any] = {}
        if devices is not None:
            body["devices"] = devices
        if cohort is not None:
            body["cohort"] = cohort
        return int(self._json("POST", "/admin/shadow/cancel", json_body=body)["removed"])

    def shadow(self, cohort: str | None = None) -> dict[str, Any]:
        """Shadow telemetry: ``devices`` (each device's last report) and ``cohorts`` (summed)."""
        return dict(self._json("GET", "/admin/shadow", query={"cohort": cohort}))

    # -- samples -------------------------------------------------------------------------------

    def samples(
        self, bundle: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """``state="pending"``: the annotation queue ranked across devices; else by priority."""
        query = {"bundle": bundle, "state": state, "limit": limit}
        return list(self._json("GET", "/admin/samples", query=query))

    def feedback_metrics(self, bundle: str | None = None) -> dict[str, Any]:
        """Feedback metrics per device (hub-side and as last reported) and for the fleet."""
        return dict(self._json("GET", "/admin/feedback", query={"bundle": bundle}))

    def sample_image(self, sample_id: str) -> bytes:
        """A sample's image bytes."""
        return self._request("GET", f"/admin/samples/{sample_id}/image")

    def annotate(self, sample_id: str, boxes: list[Box], annotator: str) -> None:
        """Store boxes ``[x1, y1, x2, y2, label]`` for a sample."""
        body = {"boxes": boxes, "annotator": annotator}
        self._json("POST", f"/admin/samples/{sample_id}/annotation", json_body=body)

    def import_sample(self, meta: dict[str, Any], image: bytes, boxes: list[Box]) -> str:
        """Import an already-labelled sample (``meta`` needs ``bundle``); return its id."""
        annotation = {"boxes": boxes, "annotator": str(meta.get("annotator", "import"))}
        fields = {
            "meta": ("meta.json", json.dumps(meta).encode(), "application/json"),
            "image": ("image.jpg", image, "image/jpeg"),
            "annotation": ("annotation.json", json.dumps(annotation).encode(), "application/json"),
        }
        return str(self._json("POST", "/admin/samples", fields=fields)["id"])

    # -- replay ----------------------------------------------------------------------------------

    def post_report(self, report_json: bytes, html: bytes | None = None) -> dict[str, Any]:
        """Keep a replay report on the hub; answers ``digest`` and ``decision``."""
        fields = {"report": ("report.json", report_json, "application/json")}
        if html is not None:
            fields["html"] = ("report.html", html, "text/html")
        return dict(self._json("POST", "/admin/replay/reports", fields=fields))

    def bless(self, report_digest: str, who: str) -> dict[str, Any]:
        """Bless a stored report's candidate (Conflict if its gate did not pass)."""
        body = {"report_digest": report_digest, "who": who}
        return dict(self._json("POST", "/admin/blessings", json_body=body))

    def start_replay_job(
        self, bundle_dir: Path, baseline: int, spec: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        """Upload a candidate bundle's files as blobs and start a replay job on the hub against
        a published ``baseline`` version; returns the job id (see :meth:`replay_job`).
        ``kw``: since, cohort, workers, bless, who.

        Raises BundleError before sending anything when the manifest is invalid or a file it
        lists is missing or does not match it; HubError subclasses."""
        bundle_dir = Path(bundle_dir)
        manifest_bytes, manifest = publish.read_checked_bundle(bundle_dir)
        for rel in manifest.files:
            self.put_blob((bundle_dir / rel).read_bytes())
        self.put_blob(manifest_bytes)
        body = {
            "candidate_digest": hashlib.sha256(manifest_bytes).hexdigest(),
            "baseline": baseline,
            "spec": spec or {},
            **{k: v for k, v in kw.items() if v is not None},
        }
        return str(self._json("POST", "/admin/replay/jobs", json_body=body)["id"])

    def replay_job(self, job_id: str) -> dict[str, Any]:
        """A replay job's state, report digest and decision."""
        return dict(self._json("GET", f"/admin/replay/jobs/{job_id}"))

    def blessings(self) -> list[dict[str, Any]]:
        """Every blessing on the hub, newest first."""
        return list(self._json("GET", "/admin/blessings"))

    def audit_log(self) -> list[dict[str, Any]]:
        """The hub's release audit log, newest first."""
        return list(self._json("GET", "/admin/audit"))

    def target_file(self, hashed_path: str) -> bytes:
        """A target's bytes by its consistent-snapshot path ``<dir>/<sha256>.<name>``."""
        return self._request("GET", f"/tuf/targets/{hashed_path}")

    def history(self, bundle: str | None = None) -> list[dict[str, Any]]:
        """The hub's history frames (samples with ground truth), by id."""
        return list(self._json("GET", "/admin/history", query={"bundle": bundle}))

    def history_image(self, sha256: str) -> bytes:
        """One history frame's image bytes, by sha256."""
        return self._request("GET", f"/admin/history/images/{sha256}")

    def metrics(
        self, by: str, window_s: float, now: float | None = None, events: str | None = None
    ) -> dict[str, Any]:
        """Comparative metrics per ``by`` groups, this window and the previous one."""
        query = {"by": by, "window_s": window_s, "now": now, "events": events}
        return dict(self._json("GET", "/admin/metrics/compare", query=query))

    # -- jobs ----------------------------------------------------------------------------------

    def start_train(
        self,
        bundle: str,
        version: int,
        init_from: int | None = None,
        params: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        datasets: list[str] | None = None,
    ) -> int:
        """Queue a training job (with ``spec``: the spec-driven trainer, on the bundle's
        annotated samples or on hub ``datasets`` 'name[:version]'); return its id."""
        body: dict[str, Any] = {
            "bundle": bundle,
            "version": version,
            "init_from": init_from,
            "params": params or {},
        }
        if spec is not None:
            body["spec"] = spec
        if datasets is not None:
            body["datasets"] = datasets
        return int(self._json("POST", "/admin/jobs/train", json_body=body)["job"])

    def job(self, job_id: int) -> dict[str, Any]:
        """A job's ``state`` (queued|running|done|failed), ``error`` and ``log_tail``."""
        return dict(self._json("GET", f"/admin/jobs/{job_id}"))

    def job_artifact(self, job_id: int, dest_dir: Path) -> Path:
        """Download a done job's bundle source and extract it safely into ``dest_dir``."""
        data = self._request("GET", f"/admin/jobs/{job_id}/artifact")
        safe_extract_tar(data, Path(dest_dir))
        return Path(dest_dir)

    # -- datasets and ontologies ---------------------------------------------------------------

    def import_dataset(self, name: str, fmt: str, archive: bytes) -> dict[str, Any]:
        """Post a dataset archive (tar.gz of the folder); the new version's summary."""
        q = urllib.parse.urlencode({"format": fmt})
        return dict(self._json("POST", f"/admin/datasets/{name}?{q}", body=archive))

    def export_dataset(self, name: str, fmt: str, version: int | None = None) -> bytes:
        """A tar.gz of a stored dataset version written in ``fmt``."""
        query: dict[str, Any] = {"format": fmt, "version": version}
        return self._request("GET", f"/admin/datasets/{name}/export", query=query)

    def datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/admin/datasets"))

    def create_ontology(self, onto_id: str, classes: list[str], version: int = 1) -> Any:
        body = {"id": onto_id, "classes": classes, "version": version}
        return self._json("POST", "/admin/ontologies", json_body=body)

    def ontology(self, onto_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/admin/ontologies/{onto_id}"))

    def change_ontology(
        self, onto_id: str, changes: list[dict[str, Any]], base_version: int | None = None
    ) -> dict[str, Any]:
        body = {"changes": changes, "base_version": base_version}
        return dict(self._json("POST", f"/admin/ontologies/{onto_id}/changes", json_body=body))

    def ontology_weakness(self, onto_id: str, top: int = 10) -> dict[str, Any]:
        q = {"top": top}
        return dict(self._json("GET", f"/admin/ontologies/{onto_id}/weakness", query=q))
