"""The device <-> hub messages, typed once and used by both sides.

The device builds every message it sends from these models and parses every answer it reads
with them; the hub parses every request body with the very same models (``hub/api/devices.py``,
``hub/api/uploads.py``). So a record the hub would refuse is refused on the device first (the
operator CLI says so at once, the uploader quarantines it instead of spending its budget on a
4xx), and a change to a message is one change here.

Direction decides strictness:

- **device -> hub** (:class:`Heartbeat`, :class:`UpdateReport`, :class:`ShadowTelemetry`,
  :class:`SampleMeta`, :class:`FeedbackMessage`, :class:`FeedbackRequest`): ``extra="forbid"``,
  so a misspelt field is a 400 with its name. The one exception is the status part of a
  heartbeat: a device's status grows with its releases and a hub must keep accepting newer
  devices, so unknown status fields are kept as they are (the typed ones are still checked).
- **hub -> device** (:class:`Desired`): unknown fields are ignored, so a newer hub can add to
  its answers without stopping older devices.

Every model bounds its strings and lists: these bodies come from the network.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from runtime.shadow.compare import ShadowStats
from runtime.shadow.promotion import PromotionRule
from runtime.shadow.report import ShadowStatus

__all__ = [
    "ID_PATTERN",
    "MAX_EVENTS",
    "Desired",
    "FeedbackMessage",
    "FeedbackRequest",
    "Heartbeat",
    "ReportKind",
    "SampleMeta",
    "ShadowAssignment",
    "ShadowRef",
    "ShadowTelemetry",
    "UpdateReport",
    "UploadAnswer",
    "validation_reason",
]

log = logging.getLogger("leanloop.protocol")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Device ids, sample ids, bundle names: what may appear in a hub URL path."""

MAX_EVENTS = 100
"""Update reports one heartbeat may carry."""


class _ToHub(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromHub(BaseModel):
    model_config = ConfigDict(extra="ignore")


def validation_reason(e: ValidationError, what: str) -> str:
    """One line for the first problem of a failed validation: ``bad <what>: <where>: <msg>``."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    return f"bad {what}: {where}: {first['msg']}"


# ---- hub -> device ------------------------------------------------------------------------


class ShadowAssignment(_FromHub):
    """The shadow candidate the hub assigns next to the production bundle."""

    bundle: str = Field(max_length=64)
    version: int = Field(ge=0, strict=True)
    rule: PromotionRule = Field(default_factory=PromotionRule)


class Desired(_FromHub):
    """``GET /device/desired``: what the hub wants this device to run (an unsigned hint: the
    content is verified through TUF)."""

    bundle: str | None = Field(default=None, max_length=64)
    version: int | None = Field(default=None, ge=0, strict=True)
    candidate: ShadowAssignment | None = None

    @field_validator("candidate", mode="wrap")
    @classmethod
    def _candidate_or_none(cls, v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A malformed shadow candidate is dropped (with a warning), never the whole answer:
        the production update must not wait for a shadow experiment."""
        try:
            return handler(v)
        except ValidationError as e:
            log.warning("shadow candidate ignored: %s", validation_reason(e, "candidate"))
            return None

    @property
    def target(self) -> tuple[str, int] | None:
        """(bundle, version), or None when the hub wants nothing yet."""
        if self.bundle is None or self.version is None:
            return None
        return self.bundle, self.version


class UploadAnswer(_FromHub):
    """``GET``/``PATCH /device/samples/{id}/upload``: how far the hub got with a sample."""

    status: Literal["partial", "stored", "duplicate"]
    offset: int = Field(ge=0, strict=True, description="payload bytes the hub holds")


# ---- device -> hub ------------------------------------------------------------------------


class ReportKind(enum.StrEnum):
    """What an update report says happened."""

    UPDATE_FAILED = "update_failed"
    ROLLED_BACK = "rolled_back"


class UpdateReport(_ToHub):
    """One update outcome a device reports in its heartbeat's ``events`` list."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="device-chosen, for dedup")
    time: float = Field(description="when it happened on the device (unix time)")
    kind: ReportKind = Field(description="what happened")
    cause: str = Field(max_length=64, description="e.g. load_failed, trial_failed, operator")
    bundle: str | None = Field(default=None, max_length=64)
    version: int | None = None
    reason: str = Field(default="", max_length=2000, description="one-line reason")


class Heartbeat(BaseModel):
    """``POST /device/heartbeat``: the device's status, and update reports not yet sent.

    The typed fields are checked; other status fields are kept as sent (see the module story).
    """

    model_config = ConfigDict(extra="allow")
    events: list[UpdateReport] = Field(default_factory=list, max_length=MAX_EVENTS)
    device_id: str | None = Field(default=None, max_length=128)
    runtime_version: str | None = Field(default=None, max_length=64)
    time: float | None = None
    uptime_s: float | None = None
    update_state: str | None = Field(default=None, max_length=32)
    last_update_error: str | None = None
    counters: dict[str, int | float] = Field(default_factory=dict, max_length=256)
    fps: float | None = None

    def status(self) -> dict[str, Any]:
        """The status part (everything but the events), as JSON-able data."""
        return self.model_dump(mode="json", exclude={"events"}, exclude_unset=True)


class ShadowRef(_ToHub):
    bundle: str = Field(max_length=64)
    version: int
    slot: Literal["a", "b"] | None = None


class ShadowTelemetry(_ToHub):
    """``POST /device/shadow``: a device's shadow summary — counts, matrices, histograms.

    The model has no place for frames or frame ids: the hub never receives them this way.
    """

    status: ShadowStatus
    reason: str | None = Field(default=None, max_length=2000)
    candidate: ShadowRef | None = None
    production: ShadowRef | None = None
    rule: PromotionRule | None = None
    verdict: str | None = Field(default=None, max_length=2000)
    started: float | None = None
    updated: float | None = None
    counters: dict[str, int] = Field(default_factory=dict, max_length=32)
    shed_fraction: float = 0.0
    agreement: float | None = None
    stats: ShadowStats = Field(default_factory=ShadowStats)


class FeedbackMessage(_ToHub):
    """A human's word on a sample (:meth:`runtime.store.record.Feedback.to_dict`)."""

    kind: Literal["confirm", "correct"]
    label: str | None = Field(default=None, min_length=1, max_length=200)
    who: str = Field(default="", max_length=200)
    when: float = 0.0
    bundle_version: int = Field(default=0, ge=0)
    item: int | None = Field(
        default=None, ge=0, description="which final-stage item (0-based); none: the whole frame"
    )

    @model_validator(mode="after")
    def _correction_has_label(self) -> FeedbackMessage:
        if self.kind == "correct" and self.label is None:
            raise ValueError("a correction needs a label")
        return self


class FeedbackRequest(_ToHub):
    """``PUT /device/samples/{id}/feedback``."""

    feedback: FeedbackMessage


class SampleMeta(_ToHub):
    """The JSON part of an uploaded sample (:meth:`runtime.store.record.SampleRecord.to_meta`)."""

    id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(min_length=1, max_length=128)
    created: float
    frame_id: str = Field(max_length=1024)
    bundle: str = Field(max_length=64)
    bundle_version: int = Field(ge=0)
    ontology_version: int = Field(ge=0)
    image_format: Literal["jpeg", "png"] = "jpeg"
    image_size: int | None = Field(default=None, ge=0)
    prediction: dict[str, Any]
    shadow_prediction: dict[str, Any] | None = None
    scores: dict[str, float] = Field(default_factory=dict, max_length=64)
    priority: float = Field(allow_inf_nan=False)
    feedback: FeedbackMessage | None = None
    upload_state: Literal["pending", "uploaded"] = "pending"
    extra: dict[str, Any] = Field(default_factory=dict)
    random_slice: bool = False
