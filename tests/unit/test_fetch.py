"""ResultFetcher: a provider's result URL is hostile until every check passes (design.md "Fetching a result safely")."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from faceswap.errors import (
    InvalidResult,
    ProviderUnavailable,
    ResultExpired,
    ResultTooLarge,
    ResultUrlRefused,
)
from faceswap.fetch import CHUNK_BYTES, ResultFetcher, ResultStream, resolve_host

HOSTS = ("img.example.net",)
URL = "https://img.example.net/result.png"
PUBLIC_IP = "93.184.216.34"
CAP = 64 * 1024

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + bytes(200)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(200)

Handler = Callable[[httpx.Request], httpx.Response]


def image_handler(body: bytes = PNG, content_type: str = "image/png") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    return handler


def resolver(table: dict[str, list[str]] | None = None, default: str = PUBLIC_IP) -> Callable[[str, int], list[str]]:
    """A fake DNS: names in ``table`` resolve to their addresses, any other name to ``default``."""
    table = table or {}

    def resolve(host: str, port: int) -> list[str]:
        return table.get(host, [default])

    return resolve


def fetcher(
    handler: Handler,
    *,
    resolve: Callable[[str, int], list[str]] | None = None,
    allow_loopback: bool = False,
    max_bytes: int = CAP,
) -> ResultFetcher:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ResultFetcher(client, max_bytes=max_bytes, allow_loopback=allow_loopback, resolve=resolve or resolver())


def download(f: ResultFetcher, url: str = URL, hosts: tuple[str, ...] = HOSTS) -> tuple[ResultStream, bytes]:
    with f.open(url, allowed_hosts=hosts) as stream:
        body = b"".join(stream.chunks())
    return stream, body


class Recorder:
    """A handler that records the URLs requested and answers from a per-URL table."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self.answers = answers
        self.requested: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requested.append(str(request.url))
        return self.answers[str(request.url)]


def redirect(location: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"location": location})


def never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request should have been sent, got {request.url}")


# --- Scheme -----------------------------------------------------------------------------------------------------------


def test_refuses_plain_http() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "http://img.example.net/result.png")


def test_refuses_file_url() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "file:///etc/passwd")


def test_refuses_ftp_url() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "ftp://img.example.net/result.png")


def test_refused_error_has_stable_code() -> None:
    with pytest.raises(ResultUrlRefused) as caught:
        download(fetcher(never_called), "ftp://img.example.net/result.png")
    assert caught.value.code == "result_url_refused"


# --- Host allow-list --------------------------------------------------------------------------------------------------


def test_refuses_host_not_on_allow_list() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "https://evil.example.org/result.png")


def test_refuses_host_that_only_ends_with_an_allowed_name() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "https://evilimg.example.net/result.png")


def test_refuses_subdomain_when_allow_list_names_exact_host() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "https://a.img.example.net/result.png")


def test_allows_wildcard_subdomain() -> None:
    stream, body = download(fetcher(image_handler()), "https://cdn.example.com/r.png", hosts=("*.example.com",))
    assert body == PNG
    assert stream.content_type == "image/png"


def test_wildcard_does_not_match_lookalike_domain() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called), "https://cdn.evilexample.com/r.png", hosts=("*.example.com",))


# --- Resolved addresses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("127.0.0.1", id="loopback-v4"),
        pytest.param("10.0.0.5", id="private-10"),
        pytest.param("172.16.0.1", id="private-172-16"),
        pytest.param("192.168.1.1", id="private-192-168"),
        pytest.param("169.254.169.254", id="metadata-link-local"),
        pytest.param("::1", id="loopback-v6"),
        pytest.param("::ffff:127.0.0.1", id="v4-mapped-loopback"),
        pytest.param("::ffff:10.0.0.1", id="v4-mapped-private"),
        pytest.param("fe80::1", id="link-local-v6"),
        pytest.param("0.0.0.0", id="unspecified"),  # noqa: S104
        pytest.param("100.64.0.1", id="cgnat"),
        pytest.param("fc00::1", id="unique-local-v6"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("64:ff9b::a00:1", id="nat64-private"),
    ],
)
def test_refuses_host_resolving_to_non_public_address(address: str) -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": [address]}))
    with pytest.raises(ResultUrlRefused):
        download(f)


def test_refuses_host_when_one_of_several_addresses_is_private() -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": [PUBLIC_IP, "2606:4700::1", "10.1.2.3"]}))
    with pytest.raises(ResultUrlRefused):
        download(f)


def test_refuses_host_that_resolves_to_nothing() -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": []}))
    with pytest.raises(ResultUrlRefused):
        download(f)


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://[::1]/x", "https://169.254.169.254/latest/meta-data"])
def test_refuses_ip_literal_url_to_non_public_address(url: str) -> None:
    # The real resolver: an IP literal resolves to itself without any DNS query. The allow-list admits any
    # host, so the address check alone must refuse it.
    client = httpx.Client(transport=httpx.MockTransport(never_called))
    f = ResultFetcher(client, max_bytes=CAP, resolve=resolve_host)
    with pytest.raises(ResultUrlRefused):
        download(f, url, hosts=("*",))


def test_refuses_ip_literal_url_not_on_allow_list() -> None:
    with pytest.raises(ResultUrlRefused):
        download(fetcher(never_called, resolve=resolve_host), "https://127.0.0.1/x")


def test_refuses_peer_address_that_differs_from_checked_dns_answer() -> None:
    """DNS rebinding: the name resolved to a public address, but the connection went to a private one."""

    class PrivatePeer:
        def get_extra_info(self, info: str) -> object:
            return ("10.0.0.1", 443) if info == "server_addr" else None

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=PNG, headers={"content-type": "image/png"}, extensions={"network_stream": PrivatePeer()}
        )

    with pytest.raises(ResultUrlRefused):
        download(fetcher(handler))


def test_accepts_public_peer_address() -> None:
    class PublicPeer:
        def get_extra_info(self, info: str) -> object:
            return (PUBLIC_IP, 443) if info == "server_addr" else None

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, extensions={"network_stream": PublicPeer()})

    _, body = download(fetcher(handler))
    assert body == PNG


# --- Loopback for the local stack -------------------------------------------------------------------------------------


def test_allow_loopback_permits_https_to_loopback() -> None:
    f = fetcher(image_handler(), resolve=resolver({"img.example.net": ["127.0.0.1"]}), allow_loopback=True)
    _, body = download(f)
    assert body == PNG


def test_allow_loopback_permits_plain_http_to_loopback() -> None:
    f = fetcher(image_handler(), resolve=resolve_host, allow_loopback=True)
    _, body = download(f, "http://127.0.0.1:4010/r.png", hosts=("127.0.0.1",))
    assert body == PNG


def test_allow_loopback_still_refuses_private_address() -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": ["10.0.0.5"]}), allow_loopback=True)
    with pytest.raises(ResultUrlRefused):
        download(f)


def test_allow_loopback_still_refuses_metadata_address() -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": ["169.254.169.254"]}), allow_loopback=True)
    with pytest.raises(ResultUrlRefused):
        download(f)


def test_allow_loopback_still_refuses_plain_http_to_public_address() -> None:
    f = fetcher(never_called, allow_loopback=True)
    with pytest.raises(ResultUrlRefused):
        download(f, "http://img.example.net/result.png")


def test_allow_loopback_refuses_plain_http_when_any_address_is_not_loopback() -> None:
    f = fetcher(never_called, resolve=resolver({"img.example.net": ["127.0.0.1", PUBLIC_IP]}), allow_loopback=True)
    with pytest.raises(ResultUrlRefused):
        download(f, "http://img.example.net/result.png")


# --- Redirects --------------------------------------------------------------------------------------------------------


def test_redirect_to_private_address_is_refused_before_it_is_requested() -> None:
    handler = Recorder({URL: redirect("https://internal.example.net/r.png")})
    f = fetcher(handler, resolve=resolver({"internal.example.net": ["192.168.1.1"]}))
    with pytest.raises(ResultUrlRefused):
        download(f, hosts=("img.example.net", "internal.example.net"))
    assert handler.requested == [URL]


def test_redirect_to_disallowed_host_is_refused_before_it_is_requested() -> None:
    handler = Recorder({URL: redirect("https://evil.example.org/r.png")})
    with pytest.raises(ResultUrlRefused):
        download(fetcher(handler))
    assert handler.requested == [URL]


def test_redirect_to_plain_http_is_refused() -> None:
    handler = Recorder({URL: redirect("http://img.example.net/r.png")})
    with pytest.raises(ResultUrlRefused):
        download(fetcher(handler))
    assert handler.requested == [URL]


def test_refuses_more_than_three_redirects() -> None:
    urls = [f"https://img.example.net/{i}" for i in range(5)]
    handler = Recorder({urls[i]: redirect(urls[i + 1]) for i in range(4)} | {urls[4]: httpx.Response(200, content=PNG)})
    with pytest.raises(ResultUrlRefused):
        download(fetcher(handler), urls[0])
    assert urls[4] not in handler.requested


def test_follows_three_checked_redirects_to_the_image() -> None:
    urls = [f"https://img.example.net/{i}" for i in range(4)]
    answers = {urls[0]: redirect("/1", 301), urls[1]: redirect(urls[2], 307), urls[2]: redirect(urls[3], 308)}
    handler = Recorder(answers | {urls[3]: httpx.Response(200, content=PNG)})
    stream, body = download(fetcher(handler), urls[0])
    assert body == PNG
    assert stream.url == urls[3]
    assert handler.requested == urls


def test_redirect_without_location_is_invalid_result() -> None:
    with pytest.raises(InvalidResult):
        download(fetcher(lambda request: httpx.Response(302)))


# --- Size cap ---------------------------------------------------------------------------------------------------------


def test_refuses_content_length_over_cap() -> None:
    body = PNG + bytes(CAP)
    with pytest.raises(ResultTooLarge) as caught, fetcher(image_handler(body)).open(URL, allowed_hosts=HOSTS):
        pytest.fail("the stream should not open")
    assert caught.value.code == "result_too_large"


def test_streamed_body_over_cap_without_content_length_stops_while_iterating() -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        yield PNG
        while True:
            produced += 64 * 1024
            yield bytes(64 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless(), headers={"content-type": "image/png"})

    max_bytes = 2 * CHUNK_BYTES
    with fetcher(handler, max_bytes=max_bytes).open(URL, allowed_hosts=HOSTS) as stream:
        assert stream.content_type == "image/png"
        received = 0
        with pytest.raises(ResultTooLarge):
            for chunk in stream.chunks():
                received += len(chunk)
        assert received <= max_bytes
    # Reading stopped within about one network chunk of the cap: memory stays bounded.
    assert produced <= max_bytes + 2 * CHUNK_BYTES


def test_response_without_content_length_is_really_streamed() -> None:
    """Guard for the test above: a generator body in MockTransport carries no Content-Length."""
    response = httpx.Response(200, content=iter([PNG]))
    assert "content-length" not in response.headers


# --- Content checks ---------------------------------------------------------------------------------------------------


def test_refuses_text_html_content_type() -> None:
    with pytest.raises(InvalidResult) as caught:
        download(fetcher(image_handler(PNG, "text/html; charset=utf-8")))
    assert caught.value.code == "invalid_result"


def test_refuses_non_image_bytes_labelled_image_png() -> None:
    with pytest.raises(InvalidResult):
        download(fetcher(image_handler(b"<html><body>not found</body></html>", "image/png")))


def test_refuses_empty_body() -> None:
    with pytest.raises(InvalidResult):
        download(fetcher(image_handler(b"", "image/png")))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(JPEG, "image/jpeg"), (PNG, "image/png"), (WEBP, "image/webp")],
    ids=["jpeg", "png", "webp"],
)
def test_sniffs_image_type_from_magic_bytes(body: bytes, content_type: str) -> None:
    # The server's label is deliberately generic: the type comes from the bytes.
    stream, received = download(fetcher(image_handler(body, "application/octet-stream")))
    assert stream.content_type == content_type
    assert received == body


def test_sniffed_type_wins_over_declared_image_type() -> None:
    stream, _ = download(fetcher(image_handler(JPEG, "image/png")))
    assert stream.content_type == "image/jpeg"


def test_size_is_correct_after_iterating_chunks() -> None:
    parts = [PNG[:5], PNG[5:12], PNG[12:], bytes(range(256)) * 40]
    expected = b"".join(parts)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter(parts), headers={"content-type": "image/png"})

    stream, body = download(fetcher(handler))
    assert body == expected
    assert stream.size == len(expected)


def test_does_not_send_provider_credentials_or_cookies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    download(fetcher(handler))
    assert "x-api-key" not in seen[0].headers
    assert "authorization" not in seen[0].headers


# --- Status codes and transport errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_status_means_result_expired(status: int) -> None:
    with pytest.raises(ResultExpired):
        download(fetcher(lambda request: httpx.Response(status)))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_error_means_provider_unavailable(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        download(fetcher(lambda request: httpx.Response(status)))
    assert caught.value.retryable


def test_connection_error_means_provider_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ProviderUnavailable):
        download(fetcher(handler))


def test_connection_broken_off_mid_body_means_provider_unavailable() -> None:
    class BrokenOff(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield PNG + b"\0" * 1024
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "image/png"}, stream=BrokenOff())

    with pytest.raises(ProviderUnavailable, match="broke off"):
        download(fetcher(handler))


def test_read_timeout_means_provider_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ProviderUnavailable):
        download(fetcher(handler))


def test_unexpected_success_status_is_invalid_result() -> None:
    with pytest.raises(InvalidResult):
        download(fetcher(lambda request: httpx.Response(204)))


def input_fetcher(handler: Handler) -> ResultFetcher:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ResultFetcher(client, max_bytes=CAP, resolve=resolver(), subject="input image", sniff=False)


def test_an_input_fetcher_takes_any_image_type_for_pillow_to_read() -> None:
    gif = b"GIF89a" + b"\0" * 64

    stream, body = download(input_fetcher(image_handler(gif, "image/gif")))

    assert body == gif and stream.content_type == "image/gif"


def test_an_input_fetcher_still_refuses_a_non_image_content_type_and_names_its_subject() -> None:
    with pytest.raises(InvalidResult, match="The input image has content type 'text/html'"):
        download(input_fetcher(image_handler(b"<html>", "text/html")))
