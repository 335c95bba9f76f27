"""The hub's errors: one :class:`~runtime.errors.HubError` subclass per HTTP answer.

Handlers and the storage/repository cores raise these; the app's single error middleware turns
each into ``{"error": "<message>"}`` with the class's ``status``. The admin client raises the
same classes when the hub answers with that status, so a caller on either side of the wire
catches one family. Messages are one line, written for the operator who reads them.
"""

from __future__ import annotations

from typing import ClassVar

from runtime.errors import HubError

__all__ = [
    "AuthError",
    "BadRequest",
    "Busy",
    "Conflict",
    "ForbiddenError",
    "HubHTTPError",
    "HubUnavailable",
    "NotFound",
    "RequestTimeout",
    "TooLarge",
    "error_for_status",
]


class HubHTTPError(HubError):
    """A hub error that has a natural HTTP status."""

    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message, http_status=self.status)  # as the device's client reports it


class BadRequest(HubHTTPError):
    """The request is malformed: bad JSON, unknown fields, a hash or signature that fails."""

    status = 400


class AuthError(HubHTTPError):
    """No token, or a token the hub does not know."""

    status = 401


class ForbiddenError(HubHTTPError):
    """A valid token of the wrong kind (a device token on an admin route, or the reverse)."""

    status = 403


class NotFound(HubHTTPError):
    """The named device, sample, bundle, job, blob or metadata file does not exist."""

    status = 404


class Conflict(HubHTTPError):
    """The request clashes with the hub's state: version not newer, job not finished, …"""

    status = 409


class TooLarge(HubHTTPError):
    """The request body (or one of its parts) is over its size cap."""

    status = 413


class RequestTimeout(HubHTTPError):
    """The request body stopped arriving (or took too long): the connection is closed."""

    status = 408


class Busy(HubHTTPError):
    """Too many requests of this kind at once; try again later."""

    status = 503


class HubUnavailable(HubError):
    """The hub could not be reached, or answered with something that is not the Hub API."""


_BY_STATUS: dict[int, type[HubError]] = {
    cls.status: cls
    for cls in (BadRequest, AuthError, ForbiddenError, NotFound, Conflict, TooLarge, RequestTimeout)
}


def error_for_status(status: int, message: str) -> HubError:
    """The error a client raises for an HTTP error ``status`` (unknown ones: HubUnavailable)."""
    cls = _BY_STATUS.get(status, HubUnavailable)
    return cls(f"{message} (HTTP {status})" if cls is HubUnavailable else message)
