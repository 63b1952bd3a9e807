"""What the provider adapters' unit tests share: ``httpx.MockTransport`` handlers that answer and record."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def answering(response: httpx.Response) -> Handler:
    """A handler that answers every request with ``response``."""
    return lambda request: response


class Capture:
    """Records each request and answers ``response``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    @property
    def body(self) -> dict[str, Any]:
        """The last request's JSON body."""
        return json.loads(self.requests[-1].content)
