"""Small pieces the HTTP provider adapters share: answer parsing, redaction, request parts, a keyed base class.

Each function does exactly what the adapters did with their own private copies; where adapters differ
(e.g. whether negative face indices are refused) the difference is a parameter.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx

from faceswap.errors import ProviderRejected, ProviderUnavailable, SubmitOutcomeUnknown
from faceswap.images import PreparedImage

REDACTED = "[redacted]"


class KeyedHttpProvider:
    """Base of the adapters that call a provider over ``httpx`` with an API key in one header.

    Parameters
    ----------
    client
        ``httpx.Client`` with explicit timeouts; the key header is added per request (see :meth:`_headers`).
    api_key
        Returns the API key (read from Secrets Manager, cached; never logged).
    base_url
        The provider's base URL (a trailing ``/`` is dropped).
    result_hosts
        Hosts the provider serves results from (``*.example.com`` for subdomains).

    Attributes
    ----------
    api_key_header
        The header that carries the key, spelt as the provider documents it (set by each subclass).
    """

    api_key_header: str

    def __init__(
        self, client: httpx.Client, *, api_key: Callable[[], str], base_url: str, result_hosts: tuple[str, ...]
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self.result_hosts = result_hosts

    def quota_delay(self) -> float | None:
        """No quota to wait for unless the provider counts reads against one (see AIPhotoCraft's override)."""
        return None

    def _headers(self) -> dict[str, str]:
        return {self.api_key_header: self._api_key()}


def post_create(client: httpx.Client, url: str, *, label: str, **kwargs: Any) -> httpx.Response:
    """``client.post(url, **kwargs)`` for a create, with network errors classified by whether a task may exist.

    Parameters
    ----------
    client
        The adapter's ``httpx.Client``.
    url
        The create endpoint.
    label
        The provider as named in messages (``"PiAPI"``, ``"The self-hosted engine"``).
    **kwargs
        Passed to ``client.post`` (``json``, ``data``, ``files``, ``headers``).

    Returns
    -------
    httpx.Response
        The answer, whatever its status.

    Raises
    ------
    ProviderUnavailable
        The connection failed or timed out before the request was sent: no task was created.
    SubmitOutcomeUnknown
        Any other ``httpx.HTTPError``: the request may have reached the provider.
    """
    try:
        return client.post(url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
        raise ProviderUnavailable(f"{label} could not be reached: {type(e).__name__}.") from e
    except httpx.HTTPError as e:
        raise SubmitOutcomeUnknown(f"{label} did not answer the create ({type(e).__name__}).") from e


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header as seconds.

    Parameters
    ----------
    response
        Any answer.

    Returns
    -------
    float or None
        The header's number, at least 0; ``None`` when it is absent or not a number (e.g. an HTTP date).
    """
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's body when it is a JSON object.

    Parameters
    ----------
    response
        Any answer.

    Returns
    -------
    dict or None
        The parsed object; ``None`` for a body that is not JSON or not an object.
    """
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def as_int(value: Any) -> int | None:
    """``int(value)``, or ``None`` for booleans and values ``int`` refuses.

    Parameters
    ----------
    value
        A JSON value (``200``, ``"422"``, ``None``, …).

    Returns
    -------
    int or None
        The integer; ``None`` for ``True``/``False`` and anything that is not a number.
    """
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``[redacted]``.

    Parameters
    ----------
    text
        A provider's message, which may echo the key back.
    secret
        The key; an empty one redacts nothing.

    Returns
    -------
    str
        The redacted text. Redact before cutting text short, so no part of the secret survives the cut.
    """
    return text.replace(secret, REDACTED) if secret else text


def message_suffix(message: Any, *, secret: str, limit: int = 200) -> str:
    """A provider's message as the tail of an error text: ``": <message>"``, redacted, then cut to ``limit``.

    Parameters
    ----------
    message
        The message from the answer (any JSON value).
    secret
        Redacted from the message (see :func:`redact`).
    limit
        Characters of the message kept, counted after redacting.

    Returns
    -------
    str
        ``""`` for a missing or empty message, else ``": "`` and the message.
    """
    if not message:
        return ""
    return f": {redact(str(message), secret)[:limit]}"


def multipart_file(stem: str, image: PreparedImage) -> tuple[str, bytes, str]:
    """A multipart file part for ``httpx``: ``(<stem>.<extension>, data, content type)``.

    Parameters
    ----------
    stem
        The file name without extension (``"target"``, ``"swap"``).
    image
        The prepared image.

    Returns
    -------
    tuple of (str, bytes, str)
        The file name, the bytes and the content type.
    """
    return (f"{stem}.{image.extension}", image.data, image.content_type)


def as_base64(data: bytes) -> str:
    """``data`` as standard base64 text.

    Parameters
    ----------
    data
        The bytes to encode.

    Returns
    -------
    str
        ASCII base64 with padding.
    """
    return base64.b64encode(data).decode("ascii")


def face_indices(value: Any, *, default: list[int], non_negative: bool = False) -> list[int]:
    """Face indices from a manifest option such as ``"0"`` or ``"1,0"``.

    Parameters
    ----------
    value
        The option's value; ``None`` or ``""`` means the default.
    default
        Returned when no value is given.
    non_negative
        Also refuse negative indices.

    Returns
    -------
    list of int
        The indices in the order given.

    Raises
    ------
    ProviderRejected
        A part is not an integer, or (with ``non_negative``) an index is negative.
    """
    if value is None or value == "":
        return default
    try:
        indices = [int(part) for part in str(value).split(",")]
    except ValueError as e:
        raise ProviderRejected(f'Face indices must look like "0" or "1,0", not {str(value)[:40]!r}.') from e
    if non_negative and any(index < 0 for index in indices):
        raise ProviderRejected("Face indices must not be negative.")
    return indices
