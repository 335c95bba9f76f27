"""``type: mqtt`` — publish each result as JSON on an MQTT topic (paho-mqtt).

paho's network thread connects, reconnects (with its own backoff from ``reconnect_min_s`` to
``reconnect_max_s``) and sends; the frame loop only hands it the message. Its outgoing queue is
bounded (``queue_size``): a message it cannot take — the queue is full, or at QoS 0 there is no
connection — is **dropped and counted**. At QoS 1 messages wait in that queue while the broker
is away and go out on reconnect. The topic may name the device: ``leanloop/{device}/results``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import ConfigError
from runtime.pipeline.prediction import Prediction
from runtime.sinks.jsonl import result_dict

__all__ = ["MqttSink", "MqttSinkSettings"]

log = logging.getLogger("leanloop.sink")


class MqttSinkSettings(BaseModel):
    """``type: mqtt`` — publish each result to an MQTT broker."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"]
    host: str = Field(description="broker host")
    port: int = Field(default=1883, ge=1, le=65535)
    topic: str = Field(default="leanloop/{device}/results", description="{device} is replaced")
    qos: Literal[0, 1] = Field(default=1, description="0: fire and forget; 1: at least once")
    username: str | None = None
    password_file: str | None = Field(default=None, description="file holding the password")
    tls: bool = Field(default=False, description="TLS with the system's CA store")
    keepalive_s: int = Field(default=30, ge=5)
    queue_size: int = Field(default=1000, ge=1, description="messages waiting at most")
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)


class MqttSink:
    def __init__(self, s: MqttSinkSettings, device_id: str) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:  # an optional device extra
            raise ConfigError("sink type mqtt needs paho-mqtt: pip install 'leanloop[mqtt]'") from e
        self._mqtt = mqtt
        self.s = s
        self.topic = s.topic.replace("{device}", device_id)
        self.device_id = device_id
        self.counters = {"published": 0, "dropped": 0, "connects": 0}
        self.connected = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"leanloop-{device_id}", clean_session=False
        )
        c.max_queued_messages_set(s.queue_size)
        c.reconnect_delay_set(min_delay=s.reconnect_min_s, max_delay=s.reconnect_max_s)
        if s.username is not None:
            password = None
            if s.password_file is not None:
                try:
                    with open(s.password_file, encoding="utf-8") as f:
                        password = f.read().strip()
                except OSError as e:
                    raise ConfigError(f"mqtt sink: {s.password_file}: cannot read: {e}") from e
            c.username_pw_set(s.username, password)
        if s.tls:
            c.tls_set()
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        c.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        c.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.counters["connects"] += 1
            self.connected.set()
        else:
            log.warning("mqtt %s:%d refused the connection: %s", self.s.host, self.s.port, rc)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()
        log.warning("mqtt %s:%d: disconnected (%s)", self.s.host, self.s.port, rc)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.counters["published"] += 1

    def write(self, pred: Prediction, ts: float | None = None) -> None:
        payload = json.dumps(result_dict(pred, ts, self.device_id), separators=(",", ":"))
        info = self._client.publish(self.topic, payload, qos=self.s.qos)
        rc = info.rc
        # Without a connection paho keeps a QoS 1 message for the reconnect (and says NO_CONN).
        queued = rc == self._mqtt.MQTT_ERR_NO_CONN and self.s.qos > 0
        if rc != self._mqtt.MQTT_ERR_SUCCESS and not queued:
            self.counters["dropped"] += 1

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "connected": self.connected.is_set()}

    def close(self, timeout: float = 2.0) -> None:
        self._client.disconnect()
        self._client.loop_stop()
