"""The device's HTTP client for the hub: enrollment, desired bundle, heartbeat, sample upload.

Samples go in resumable parts (``upload_status`` / ``upload_part``, the sink the
:class:`~runtime.uploader.Uploader` drives) and feedback given after an upload alone
(``put_feedback``); ``put_sample`` is the older one-request upload.

Synchronous (urllib3) with timeouts; the service calls it from its background threads, never
from the frame path. Every failure becomes a :class:`HubError` with a one-line reason. The
device token is kept in ``<state>/device.json`` (mode 0600), written atomically.

Identity (:mod:`runtime.identity`): the device's own key is registered at enrolment. When the
hub stops accepting the token (401), the client answers a hub challenge with that key for a new
token and repeats the request once — it never enrols again, and the fleet secret cannot take
the id from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from pydantic import ValidationError

from runtime._atomic import atomic_write_json
from runtime._limits import MAX_STATE_BYTES, read_bounded
from runtime.errors import HubError
from runtime.identity import DeviceKey, KeyFiles, new_key_message, refresh_message
from runtime.protocol import Desired, Heartbeat, ShadowTelemetry, UploadAnswer, validation_reason
from runtime.uploader import PartAnswer

__all__ = ["HubClient", "load_or_enroll", "token_saver"]

log = logging.getLogger(__name__)

_MAX_JSON_RESPONSE = 1 << 20
_SLICE = 16 * 1024  # a part is sent in slices of this size, each paced by the rate cap
_NO_REFRESH = ("/enroll", "/device/challenge", "/device/refresh")


class HubClient:
    """Talks to one hub with one device token."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        *,
        key: DeviceKey | None = None,
        device_id: str | None = None,
        on_token: Callable[[str], None] | None = None,
        fallback_urls: list[str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")  # the hub the token belongs to (device.json names it)
        self.token = token
        self.key = key
        self.device_id = device_id
        self.on_token = on_token  # persists a token a refresh brought
        self.key_files: KeyFiles | None = None  # the keys on disk, tried when the hub refuses
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
        """One request (see :meth:`_request_any`); a 401 makes the client get a new token with
        its device key and send the request once more (a streamed body is not sent again)."""
        try:
            return self._request_any(method, path, **dict(kw))
        except HubError as e:
            body = kw.get("body")
            if (
                e.http_status != 401
                or path in _NO_REFRESH
                or self.key is None
                or self.device_id is None
            ):
                raise
            self.refresh()
            if body is not None and not isinstance(body, str | bytes):
                raise  # a streamed body cannot be sent again; the caller retries later
            return self._request_any(method, path, **dict(kw))

    def _request_any(self, method: str, path: str, **kw: Any) -> Any:
        """One request; with fallback URLs, a hub that is down or answers 502-504 is retried
        once on the next one, which then stays current."""
        for attempt in range(len(self._urls)):
            try:
                return self._request_one(self._urls[self._current], method, path, **dict(kw))
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
        """Trade an enrollment secret for a device token (registering the device key if any).

        An id that is already enrolled is refused (HubError, HTTP 409).
        """
        body = {"device_id": device_id, "enroll_token": enroll_token}
        if cohort:
            body["cohort"] = cohort
        if self.key is not None:
            body["public_key"] = self.key.public_b64
        data = self._request(
            "POST", "/enroll", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        token = data.get("device_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HubError("enroll: hub gave no device token")
        self.token = token
        return token

    def answer_challenge(self, signer: DeviceKey, new_key: DeviceKey | None = None) -> str:
        """A new token for a fresh hub challenge signed by ``signer`` (with ``new_key``: the
        hub moves the device to it; both keys sign). Stores nothing. Raises HubError (401 when
        the hub does not accept the key)."""
        if self.device_id is None:
            raise HubError("refresh: this client has no device id")
        hdr = {"Content-Type": "application/json"}
        got = self._request(
            "POST", "/device/challenge", body=json.dumps({"device_id": self.device_id}), headers=hdr
        )
        challenge = got.get("challenge") if isinstance(got, dict) else None
        if not isinstance(challenge, str):
            raise HubError("refresh: hub gave no challenge")
        new_pub = new_key.public_b64 if new_key is not None else None
        body: dict[str, Any] = {
            "device_id": self.device_id,
            "challenge": challenge,
            "signature": signer.sign(refresh_message(self.device_id, challenge, new_pub)),
        }
        if new_key is not None and new_pub is not None:
            body["new_public_key"] = new_pub
            body["new_key_signature"] = new_key.sign(
                new_key_message(self.device_id, challenge, new_pub)
            )
        data = self._request("POST", "/device/refresh", body=json.dumps(body), headers=hdr)
        token = data.get("device_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HubError("refresh: hub gave no device token")
        return token

    def adopt(self, token: str, key: DeviceKey) -> None:
        """Speak with ``token`` from now on (the hub knows the device by ``key``); persist it."""
        self.token = token
        self.key = key
        if self.on_token is not None:
            self.on_token(token)

    def refresh(self) -> str:
        """Get a new token by signing a fresh hub challenge with the device key.

        When the hub refuses the key and the client has its :class:`KeyFiles`, the keys on
        disk are tried too (a ``leanloop device rotate-key`` that ran beside the service, or
        was killed after the hub swapped keys); the one that works becomes current. Raises
        HubError (401 when the hub accepts none).
        """
        if self.key is None:
            raise HubError("refresh: this client has no device key")
        try:
            token = self.answer_challenge(self.key)
            self.adopt(token, self.key)
            return token
        except HubError as e:
            if e.http_status != 401 or self.key_files is None:
                raise
            refused = e
        tried = {self.key.public_b64}
        for key in self.key_files.candidates():
            if key.public_b64 in tried:
                continue
            tried.add(key.public_b64)
            try:
                token = self.answer_challenge(key)
            except HubError as e:
                if e.http_status != 401:
                    raise
                continue
            log.warning("the hub knows this device by key %s now: using it", key.public_b64)
            self.key_files.promote(key)
            self.adopt(token, key)
            return token
        raise refused

    def register_key(self) -> None:
        """Register the device key for an id enrolled without one (proved by the token)."""
        if self.key is None:
            raise HubError("register key: this client has no device key")
        self._request(
            "PUT",
            "/device/key",
            body=json.dumps({"public_key": self.key.public_b64}),
            headers={"Content-Type": "application/json"},
        )

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
    """Make ``client`` speak for this device: its key, its stored token, or a new one.

    The key (``<state>/device_key.pem``) is made on first start. A stored token is used as is
    (and the key registered once if the id was enrolled before keys existed); otherwise the
    device enrolls with ``enroll_token``, and an id that is enrolled already gets its token by
    signing a challenge with this key. Tokens are stored in ``<state>/device.json`` (0600).
    Raises HubError when none of this works (e.g. the id is waiting for an admin's approval).
    """
    path = Path(state_dir) / "device.json"
    client.key = DeviceKey.load_or_create(state_dir)
    client.key_files = KeyFiles(state_dir)
    client.device_id = device_id
    save = token_saver(client, state_dir, device_id)
    client.on_token = save
    if path.exists():
        try:
            data = json.loads(read_bounded(path, MAX_STATE_BYTES))
            if data.get("device_id") == device_id and data.get("hub") == client.url:
                client.token = str(data["device_token"])
                if not data.get("key_registered"):
                    try:
                        client.register_key()
                        save(client.token)
                    except HubError as e:
                        log.warning("device key not registered with the hub: %s", e)
                return
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # unreadable: enroll again
    if enroll_token:
        try:
            save(client.enroll(device_id, enroll_token, cohort))
            return
        except HubError as e:
            if e.http_status != 409:
                raise
            log.info("device %s is enrolled already: refreshing with its key", device_id)
    try:
        client.refresh()  # saves through on_token
    except HubError as e:
        if not enroll_token:
            raise HubError(
                "device is not enrolled and no enrollment token is configured "
                f"(nor does the hub accept its key: {e})"
            ) from e
        raise HubError(
            f"device {device_id}: the hub knows this id with another key, or not at all "
            f"({e}); an admin approves this device's key (leanloop identity approve) or "
            "resets the id"
        ) from e


def token_saver(client: HubClient, state_dir: Path, device_id: str) -> Callable[..., None]:
    """What stores a token for this device and hub in ``<state>/device.json`` (0600, atomic)."""
    path = Path(state_dir) / "device.json"

    def save(token: str, key_registered: bool = True) -> None:
        atomic_write_json(
            path,
            {
                "device_id": device_id,
                "hub": client.url,
                "device_token": token,
                "key_registered": key_registered,
            },
            mode=0o600,
        )

    return save
