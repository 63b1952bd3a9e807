"""The event bus on EventBridge: :class:`EventBridgePublisher`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from faceswap.aws import translated
from faceswap.events import EVENT_SOURCE

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient


class EventBridgePublisher:
    """:class:`faceswap.ports.EventPublisher` on an EventBridge bus, source :data:`EVENT_SOURCE`."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    @translated("events:PutEvents")
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Put one event; raises ``RuntimeError`` if EventBridge reports it as failed (so it is retried)."""
        response = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise RuntimeError(f"EventBridge refused the event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")
