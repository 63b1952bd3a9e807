"""Safe streaming download of a provider's result URL.

The URL comes from a third party, so it is treated as hostile: https only (plain http only to loopback,
and only where the local stack allows loopback), the host must be on the provider's allow-list, every
address it resolves to must be public (no loopback, private, link-local, metadata, multicast or reserved
ranges, IPv4-mapped IPv6 forms included), the address actually connected to is checked again (against DNS
rebinding), each redirect is checked like the first URL, the size is capped, and the body must be an image (or, for
a video, an MP4, MOV or WebM) by content type and magic bytes. No provider credentials are sent.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from faceswap import media
from faceswap.errors import (
    CopyOutOfTime,
    InvalidResult,
    ProviderUnavailable,
    ResultExpired,
    ResultTooLarge,
    ResultUrlRefused,
)
from faceswap.images import sniff_image_type

CHUNK_BYTES = 1024 * 1024
"""Bytes read from the network at a time."""

MAX_REDIRECTS = 3

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every IP address ``host`` resolves to (IPv4 and IPv6), as text."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ResultUrlRefused(f"The result host {host!r} does not resolve.") from e
    return sorted({str(info[4][0]) for info in infos})


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address (mapped IPv4 forms unwrapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def is_loopback_address(address: str) -> bool:
    """Whether ``address`` is a loopback address (``127.0.0.0/8``, ``::1`` or a mapped form)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether ``host`` is on the allow-list; ``*.example.com`` matches any subdomain, ``*`` any host."""
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower().strip()
        if pattern == "*":
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if host == pattern:
            return True
    return False


def _read_timeout(deadline: float | None, default: float | None) -> httpx.Timeout | None:
    """The request timeouts under ``deadline`` (``time.monotonic()`` seconds): connect and each read bounded by a
    quarter of the time left (so one stalled read overshoots the deadline by at most that), else ``None``."""
    if deadline is None:
        return None
    share = max(0.1, (deadline - time.monotonic()) / 4)
    return httpx.Timeout(min(default or share, share), connect=min(5.0, share))


@dataclass
class ResultStream:
    """An open, checked result download. Iterate :meth:`chunks` once; then ``size`` is final. (The sha256 is
    computed where the bytes are kept: :meth:`faceswap.ports.ObjectStore.store_result`.)

    Attributes
    ----------
    url
        The final URL after redirects (query string included: do not log it).
    content_type
        The image type sniffed from the magic bytes (``image/jpeg``, ``image/png`` or ``image/webp``).
    """

    url: str
    content_type: str
    _head: bytes
    _rest: Iterator[bytes]
    _max_bytes: int
    _subject: str = "result"
    _deadline: float | None = None
    size: int = 0

    def chunks(self) -> Iterator[bytes]:
        """Yield the body in chunks, counting; raises ``ResultTooLarge`` past the cap and ``CopyOutOfTime`` once
        the deadline the stream was opened with has passed."""
        for chunk in self._iter_all():
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise CopyOutOfTime(f"The {self._subject} download did not end before the deadline.")
            self.size += len(chunk)
            if self.size > self._max_bytes:
                raise ResultTooLarge(f"The {self._subject} is larger than the cap of {self._max_bytes:,} bytes.")
            yield chunk

    def _iter_all(self) -> Iterator[bytes]:
        if self._head:
            yield self._head
        yield from self._rest


class ResultFetcher:
    """Downloads result URLs with the checks of the module docstring.

    Parameters
    ----------
    client
        An ``httpx.Client`` without provider credentials; its redirects are handled here, one at a time.
    max_bytes
        Size cap for a result, in bytes.
    allow_loopback
        Allow ``http://`` and loopback addresses (the local stack's emulators only). Never set on AWS.
    resolve
        Host resolver (injected by tests).
    subject
        What is downloaded, as error messages name it: ``result`` (a provider's result) or e.g. ``input image``.
    sniff
        Require JPEG, PNG or WebP magic bytes (results). ``False`` for input images, which Pillow decodes and
        converts afterwards (a GIF input is fine); the content type must still say image.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        max_bytes: int,
        allow_loopback: bool = False,
        resolve: Resolver = resolve_host,
        subject: str = "result",
        sniff: bool = True,
    ) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._allow_loopback = allow_loopback
        self._resolve = resolve
        self._subject = subject
        self._sniff = sniff

    @contextmanager
    def open(
        self,
        url: str,
        *,
        allowed_hosts: tuple[str, ...],
        deadline: float | None = None,
        video: bool = False,
        max_bytes: int | None = None,
        subject: str | None = None,
    ) -> Iterator[ResultStream]:
        """Open ``url`` for streaming after checking it, following at most 3 checked redirects.

        ``deadline`` (``time.monotonic()`` seconds), if given, bounds the download: its timeouts shrink to fit, and
        once it has passed the stream raises ``CopyOutOfTime`` (nothing is kept). ``video``: the body must be a video
        (content type ``video/*`` or ``application/octet-stream``; MP4, MOV or WebM magic bytes by
        :func:`faceswap.media.sniff`) instead of an image; ``max_bytes`` and ``subject`` override the fetcher's own.

        Raises
        ------
        CopyOutOfTime
            ``deadline`` passed before the download ended.
        ResultUrlRefused
            Scheme, host or address not allowed (also for any redirect target).
        ResultExpired
            The URL answers 403, 404 or 410 (the provider no longer has the result).
        ResultTooLarge
            ``Content-Length`` is over the cap (the body is also capped while streaming).
        InvalidResult
            The body is not a JPEG, PNG or WebP image (or video), or the content type says it is not one.
        ProviderUnavailable
            The result host failed (5xx, timeout, connection error): try again later.
        """
        current = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(current, allowed_hosts)
            timeout = _read_timeout(deadline, self._client.timeout.read) or self._client.timeout
            request = self._client.build_request("GET", current, timeout=timeout)
            try:
                response = self._client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise CopyOutOfTime(f"The {self._subject} download did not start before the deadline.") from e
                raise ProviderUnavailable(f"The {self._subject} download failed: {type(e).__name__}.") from e
            try:
                self._check_peer(response)
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise InvalidResult(f"The {self._subject} URL redirected without a Location.")
                    current = current.join(location)
                    continue
                stream = self._checked_stream(
                    response,
                    str(current),
                    deadline,
                    video=video,
                    max_bytes=max_bytes or self._max_bytes,
                    subject=subject or self._subject,
                )
                try:
                    yield stream
                except ProviderUnavailable as e:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise CopyOutOfTime(f"The {stream._subject} download stalled past the deadline.") from e
                    raise
                return
            finally:
                response.close()
        raise ResultUrlRefused(f"The {self._subject} URL redirected more than {MAX_REDIRECTS} times.")

    def _check_url(self, url: httpx.URL, allowed_hosts: tuple[str, ...]) -> None:
        host = url.host
        if url.scheme not in ("https", "http"):
            raise ResultUrlRefused(f"The {self._subject} URL scheme {url.scheme!r} is not allowed (https only).")
        if not host or not host_allowed(host, allowed_hosts):
            raise ResultUrlRefused(f"The {self._subject} host {host!r} is not on the provider's allow-list.")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = self._resolve(host, port)
        if not addresses:
            raise ResultUrlRefused(f"The {self._subject} host {host!r} does not resolve.")
        for address in addresses:
            self._check_address(host, address)
        if url.scheme == "http" and not (self._allow_loopback and all(map(is_loopback_address, addresses))):
            raise ResultUrlRefused(f"The {self._subject} URL is plain http; only https is allowed.")

    def _check_address(self, host: str, address: str) -> None:
        if is_public_address(address):
            return
        if self._allow_loopback and is_loopback_address(address):
            return
        raise ResultUrlRefused(f"The {self._subject} host {host!r} resolves to a non-public address.")

    def _check_peer(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if peer:
            self._check_address(response.url.host, str(peer[0]))

    def _checked_stream(
        self,
        response: httpx.Response,
        url: str,
        deadline: float | None,
        *,
        video: bool,
        max_bytes: int,
        subject: str,
    ) -> ResultStream:
        if response.status_code in (403, 404, 410):
            raise ResultExpired(f"The {subject} URL answered {response.status_code}: the provider no longer has it.")
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(f"The {subject} host answered {response.status_code}.")
        if response.status_code != 200:
            raise InvalidResult(f"The {subject} URL answered {response.status_code}.")
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise ResultTooLarge(f"The {subject} is {int(length):,} bytes, over the cap of {max_bytes:,}.")
        declared = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        kind = "video" if video else "image"
        if declared and not (declared.startswith(f"{kind}/") or declared == "application/octet-stream"):
            raise InvalidResult(
                f"The {subject} has content type {declared!r}, not {'a video' if video else 'an image'}."
            )
        body = _broken_off_is_unavailable(response.iter_bytes(CHUNK_BYTES))
        head = b""
        for chunk in body:
            head += chunk
            if len(head) >= 16:
                break
        if video:
            sniffed = media.CONTENT_TYPES.get(media.sniff(head) or "")
            if sniffed is None:  # always checked: a video is never taken on its content type alone
                raise InvalidResult(f"The {subject} is not an MP4, MOV or WebM video (magic bytes).")
        else:
            sniffed = sniff_image_type(head)
            if sniffed is None and self._sniff:
                raise InvalidResult(f"The {subject} is not a JPEG, PNG or WebP image (magic bytes).")
        content_type = sniffed or declared or "application/octet-stream"
        return ResultStream(
            url=url,
            content_type=content_type,
            _head=head,
            _rest=body,
            _max_bytes=max_bytes,
            _subject=subject,
            _deadline=deadline,
        )


def _broken_off_is_unavailable(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, with a connection that breaks off mid-body (``httpx.TransportError``) raised as
    ``ProviderUnavailable``: the download is tried again later."""
    try:
        yield from chunks
    except httpx.TransportError as e:
        raise ProviderUnavailable(f"The download broke off ({type(e).__name__}).") from e
