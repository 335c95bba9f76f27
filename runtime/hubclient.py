"""The device's HTTP client for the hub: enrollment, desired bundle, heartbeat, sample upload.

Samples go in resumable parts (``upload_status`` / ``upload_part``, the sink the
:class:`~runtime.uploader.Uploader` drives) and feedback given after an upload alone
(``put_feedback``); ``put_sample`` is the older one-request upload.

Synchronous (urllib3) with timeouts; the service calls it from its background threads, never
from the frame path. Every failure becomes a :class:`HubError` with a one-line reason. The
device token is kept in ``<state>/device.json`` (mode 0600), written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from pydantic import ValidationError

from runtime._atomic import atomic_write_json
from runtime.errors import HubError
from runtime.protocol import Desired, Heartbeat, ShadowTelemetry, UploadAnswer, validation_reason
from runtime.uploader import PartAnswer

__all__ = ["HubClient", "load_or_enroll"]

_MAX_JSON_RESPONSE = 1 << 20
_SLICE = 16 * 1024  # a part is sent in slices of this size, each paced by the rate cap


class HubClient:
    """Talks to one hub with one device token."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        fallback_urls: list[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")  # the hub the token belongs to (device.json names it)
        self.token = token
        # Hub replicas to try in turn when the current one is unreachable or answers 502-504.
        self._urls = [self.url, *(u.rstrip("/") for u in fallback_urls or [])]
        self._current = 0
        # The last answer of GET /device/desired (it also carries the shadow candidate).
        self.last_desired = Desired()
        self._http = urllib3.PoolManager(
            maxsize=4,  # the update and upload threads share the client
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(
                total=2,
                backoff_factor=0.2,
                allowed_methods=None,
                status_forcelist=(502, 503, 504),
                raise_on_status=False,
            ),
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        """One request; with fallback URLs, a hub that is down or answers 502-504 is retried
        once on the next one, which then stays current."""
        for attempt in range(len(self._urls)):
            try:
                return self._request_one(self._urls[self._current], method, path, **kw)
            except HubError as e:
                down = e.http_status is None or e.http_status in (502, 503, 504)
                if not down or attempt + 1 == len(self._urls) or "answer cut" in str(e):
                    raise
                self._current = (self._current + 1) % len(self._urls)
        raise AssertionError("unreachable")

    def _request_one(self, base: str, method: str, path: str, **kw: Any) -> Any:
        url = f"{base}/api/v1{path}"
        headers = {**self._headers(), **kw.pop("headers", {})}
        try:
            r = self._http.request(method, url, headers=headers, preload_content=False, **kw)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise HubError(f"hub {base} unreachable: {type(e).__name__}: {e}") from e
        try:
            body = r.read(_MAX_JSON_RESPONSE + 1, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise HubError(f"{method} {path}: answer cut: {type(e).__name__}: {e}") from e
        finally:
            r.release_conn()
        if len(body) > _MAX_JSON_RESPONSE:
            raise HubError(f"{method} {path}: hub answer larger than {_MAX_JSON_RESPONSE} bytes")
        try:
            data = json.loads(body) if body else {}
        except ValueError as e:
            raise HubError(f"{method} {path}: hub answered HTTP {r.status} with non-JSON") from e
        if r.status >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            why = msg or "no reason given"
            raise HubError(f"{method} {path}: HTTP {r.status}: {why}", http_status=r.status)
        return data

    def enroll(self, device_id: str, enroll_token: str, cohort: str | None) -> str:
        """Trade the fleet enrollment secret for a device token."""
        body = {"device_id": device_id, "enroll_token": enroll_token}
        if cohort:
            body["cohort"] = cohort
        data = self._request(
            "POST", "/enroll", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        token = data.get("device_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HubError("enroll: hub gave no device token")
        self.token = token
        return token

    def desired(self) -> Desired:
        """What the hub wants this device to run (an unsigned hint; content is verified).
        Raises HubError, also for an answer that is not a :class:`Desired`."""
        data = self._request("GET", "/device/desired")
        try:
            self.last_desired = Desired.model_validate(data)
        except ValidationError as e:
            raise HubError(validation_reason(e, "desired answer")) from e
        return self.last_desired

    def heartbeat(self, beat: Heartbeat) -> None:
        self._request(
            "POST",
            "/device/heartbeat",
            body=beat.model_dump_json(exclude_unset=True),
            headers={"Content-Type": "application/json"},
        )

    def shadow_report(self, summary: ShadowTelemetry) -> None:
        """Send the shadow telemetry summary (counts, matrices, histograms; never frames)."""
        self._request(
            "POST",
            "/device/shadow",
            body=summary.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    def put_sample(self, meta: dict[str, Any], image: bytes) -> str:
        """Upload one sample; idempotent by id. Returns "stored" or "duplicate"."""
        fields = {
            "meta": ("meta.json", json.dumps(meta).encode(), "application/json"),
            "image": ("image.jpg", image, "image/jpeg"),
        }
        data = self._request("PUT", f"/device/samples/{meta['id']}", fields=fields)
        status = data.get("status") if isinstance(data, dict) else None
        if status not in ("stored", "duplicate"):
            raise HubError(f"sample {meta['id']}: unexpected hub answer {data!r}"[:200])
        return str(status)

    # -- resumable sample upload (see runtime.uploader) ------------------------------------

    @staticmethod
    def _part_answer(data: Any, what: str) -> PartAnswer:
        try:
            answer = UploadAnswer.model_validate(data)
        except ValidationError:
            raise HubError(f"{what}: unexpected hub answer {data!r}"[:200]) from None
        return PartAnswer(answer.status, answer.offset)

    def upload_status(self, sample_id: str, sha256: str) -> PartAnswer:
        """Whether the hub stores the sample, else how many bytes of this payload it holds."""
        data = self._request(
            "GET", f"/device/samples/{sample_id}/upload", fields={"sha256": sha256}, retries=False
        )
        return self._part_answer(data, f"sample {sample_id}")

    def upload_part(
        self,
        sample_id: str,
        sha256: str,
        length: int,
        offset: int,
        data: bytes,
        pace: Callable[[int], None] | None = None,
    ) -> PartAnswer:
        """Send payload bytes ``[offset, offset + len(data))`` of a sample.

        Not retried by urllib3 (a blind retry would re-send bytes the hub already kept; the
        uploader asks for the offset instead). ``pace(n)`` runs before every 16 KiB slice.
        """

        def body() -> Iterator[bytes]:
            view = memoryview(data)
            for i in range(0, len(view), _SLICE):
                piece = view[i : i + _SLICE]
                if pace is not None:
                    pace(len(piece))
                yield bytes(piece)

        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
            "Upload-Offset": str(offset),
            "Upload-Length": str(length),
            "Upload-Sha256": sha256,
        }
        answer = self._request(
            "PATCH",
            f"/device/samples/{sample_id}/upload",
            body=body(),
            headers=headers,
            retries=False,
        )
        return self._part_answer(answer, f"sample {sample_id}")

    def put_feedback(self, sample_id: str, feedback: dict[str, Any]) -> str:
        """Attach (or replace) feedback on a sample the hub already stores."""
        data = self._request(
            "PUT",
            f"/device/samples/{sample_id}/feedback",
            body=json.dumps({"feedback": feedback}),
            headers={"Content-Type": "application/json"},
            retries=False,  # one request, one charge to the budget; the uploader retries
        )
        status = data.get("status") if isinstance(data, dict) else None
        if status != "stored":
            raise HubError(f"feedback on {sample_id}: unexpected hub answer {data!r}"[:200])
        return "stored"

    def post_predictions(self, body: bytes) -> int:
        """Send one gzip-compressed batch of prediction metadata; return how many it held."""
        data = self._request(
            "POST",
            "/device/predictions",
            body=body,
            headers={"Content-Type": "application/gzip"},
            retries=False,  # one request, one charge to the budget; the uploader retries
        )
        received = data.get("received") if isinstance(data, dict) else None
        if not isinstance(received, int):
            raise HubError(f"predictions: unexpected hub answer {data!r}"[:200])
        return received

    def close(self) -> None:
        self._http.clear()


def load_or_enroll(
    client: HubClient,
    state_dir: Path,
    device_id: str,
    enroll_token: str | None,
    cohort: str | None,
) -> None:
    """Use the stored device token, or enroll once and store it (mode 0600)."""
    path = Path(state_dir) / "device.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("device_id") == device_id and data.get("hub") == client.url:
                client.token = str(data["device_token"])
                return
        except (OSError, ValueError, KeyError):
            pass  # unreadable: enroll again
    if not enroll_token:
        raise HubError("device is not enrolled and no enrollment token is configured")
    token = client.enroll(device_id, enroll_token, cohort)
    atomic_write_json(
        path, {"device_id": device_id, "hub": client.url, "device_token": token}, mode=0o600
    )
