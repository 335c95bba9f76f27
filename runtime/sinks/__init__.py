"""Where results go: ``results.jsonl`` (:mod:`.jsonl`, the ``sink`` setting) and, beside it,
any number of ``sinks``: a webhook (:mod:`.webhook`) and MQTT (:mod:`.mqtt`), registered by
name. Network sinks never block the frame loop: bounded queues, drop and count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol

from pydantic import Field

from runtime.pipeline.prediction import Prediction
from runtime.sinks.jsonl import JsonlSink, NullSink, result_dict
from runtime.sinks.mqtt import MqttSink, MqttSinkSettings
from runtime.sinks.webhook import WebhookSink, WebhookSinkSettings

__all__ = [
    "SINKS",
    "AnySinkSettings",
    "FanoutSink",
    "JsonlSink",
    "MqttSink",
    "MqttSinkSettings",
    "NullSink",
    "Sink",
    "WebhookSink",
    "WebhookSinkSettings",
    "open_sink",
    "result_dict",
]


class Sink(Protocol):
    def write(self, pred: Prediction, ts: float | None = None) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


#: sink type -> factory(settings, device id)
SINKS: dict[str, Callable[[Any, str], Sink]] = {
    "webhook": WebhookSink,
    "mqtt": MqttSink,
}

AnySinkSettings = Annotated[WebhookSinkSettings | MqttSinkSettings, Field(discriminator="type")]


def open_sink(settings: WebhookSinkSettings | MqttSinkSettings, device_id: str) -> Sink:
    return SINKS[settings.type](settings, device_id)


class FanoutSink:
    """Every result to each sink, in order; one sink's failure does not stop the others."""

    def __init__(self, sinks: Sequence[tuple[str, Sink]]) -> None:
        self.sinks = list(sinks)

    def write(self, pred: Prediction, ts: float | None = None) -> None:
        for _, s in self.sinks:
            s.write(pred, ts)

    def stats(self) -> dict[str, Any]:
        return {name: s.stats() for name, s in self.sinks if s.stats()}

    def close(self) -> None:
        for _, s in self.sinks:
            s.close()
