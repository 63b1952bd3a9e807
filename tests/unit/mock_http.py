"""What the provider adapters' unit tests share: adapters made from their registry entries over
``httpx.MockTransport``, prepared images and task inputs, and handlers that answer and record."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx

from faceswap.images import PreparedImage
from faceswap.ports import TaskInput
from faceswap.providers.registry import PROVIDERS

Handler = Callable[[httpx.Request], httpx.Response]

TARGET = PreparedImage(b"\xff\xd8\xff target bytes", "image/jpeg", 640, 480)
SWAP = PreparedImage(b"\x89PNG\r\n\x1a\n swap bytes", "image/png", 256, 256)


def adapter(
    name: str,
    handler: Handler,
    *,
    api_key: str = "k-secret",
    result_hosts: tuple[str, ...] = ("results.example.com",),
    **extra: Any,
) -> Any:
    """Provider ``name``'s adapter as the wiring makes it (its registry entry's class and base URL; the engine's is
    ``https://engine.local``), answering through ``handler``; ``extra`` goes to its constructor."""
    spec = PROVIDERS[name]
    options: dict[str, Any] = {"base_url": spec.base_url or "https://engine.local", "result_hosts": result_hosts}
    if spec.api_key:
        options["api_key"] = lambda: api_key
    return spec.adapter_class()(httpx.Client(transport=httpx.MockTransport(handler)), **options, **extra)


def task_input(
    name: str = "face-swap",
    *,
    target: PreparedImage = TARGET,
    swap: PreparedImage = SWAP,
    image_urls: Callable[[], tuple[str, str]] | None = None,
    **options: Any,
) -> TaskInput:
    """A create's input: ``name`` task of job ``aaa…`` with ``options``."""
    return TaskInput(
        job_id="a" * 32, task=name, target_image=target, swap_image=swap, options=options, image_urls=image_urls
    )


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


def multipart_parts(request: httpx.Request, *, with_content_type: bool = True) -> dict[str, tuple[Any, ...]]:
    """``{part name: (filename, content type, bytes)}`` of a multipart request (``(filename, bytes)`` without
    ``with_content_type``)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    parts: dict[str, tuple[Any, ...]] = {}
    for part in message.iter_parts():
        payload, name = part.get_payload(decode=True), part.get_param("name", header="content-disposition")
        assert isinstance(payload, bytes) and isinstance(name, str)
        kind = (part.get_content_type(),) if with_content_type else ()
        parts[name] = (part.get_filename(), *kind, payload)
    return parts
