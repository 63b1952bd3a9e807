"""The jobs console's server on loopback, with the jobs API and S3 behind it as ``httpx.MockTransport``s: who may
drive it, what it passes on, and the error-code advice it shares with the README."""

from __future__ import annotations

import http.client as http_client
import io
import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from faceswap_cli.console import CHUNK, Console
from faceswap_cli.guidance import WHAT_TO_DO
from faceswap_cli.main import ApiClient

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "0" * 32


class Backend:
    """The jobs API and the presigned URLs' host, recording what reached them."""

    def __init__(self) -> None:
        self.api_calls: list[tuple[str, str]] = []
        self.upload_chunks: list[int] = []
        self.upload_headers: dict[str, str] = {}
        self.range: str | None = None
        self.content_type = "image/jpeg"
        self.body = b"ult"
        self.encodings: list[str | None] = []
        self.fetched: list[str] = []
        self.refuse_first = False
        self.job_reads = 0

    def api(self, request: httpx.Request) -> httpx.Response:
        self.api_calls.append((request.method, request.url.path))
        if request.url.path == "/uploads":
            grant = {"s3_key": "uploads/new.jpg", "upload_url": "https://s3.test/put", "method": "PUT"}
            return httpx.Response(201, json={**grant, "headers": {"content-type": "image/jpeg"}, "expires_in": 900})
        if request.url.path == f"/jobs/{JOB_ID}":
            self.job_reads += 1
            return httpx.Response(200, json=job(self.job_reads))
        return httpx.Response(404, json={"code": "job_not_found", "message": "No such job."})

    def s3(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.upload_headers = dict(request.headers)
            assert isinstance(request.stream, httpx.SyncByteStream)
            self.upload_chunks = [len(chunk) for chunk in request.stream]
            return httpx.Response(200)
        self.fetched.append(str(request.url))
        if self.refuse_first and len(self.fetched) == 1:
            return httpx.Response(403, stream=httpx.ByteStream(b"<Error>AccessDenied</Error>"))
        self.range = request.headers.get("range")
        self.encodings.append(request.headers.get("accept-encoding"))
        if self.range is None:
            return httpx.Response(200, stream=httpx.ByteStream(self.body), headers={"content-type": self.content_type})
        headers = {"content-type": self.content_type, "content-range": "bytes 2-4/9", "content-length": "3"}
        return httpx.Response(206, stream=httpx.ByteStream(b"ult"), headers=headers)


class Streaming(httpx.BaseTransport):
    """Like ``httpx.MockTransport`` but hands the request over unread (``MockTransport`` reads the body whole)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)


def job(version: int = 1) -> dict[str, Any]:
    """A job as the API shows it; ``version`` numbers its presigned URLs (each GET signs anew)."""
    return {
        "job_id": JOB_ID,
        "status": "FAILED",
        "error": {"code": "result_expired", "message": "gone", "retryable": True},
        "inputs": {
            "target": {"s3_uri": "s3://in/t.jpg", "download_url": f"https://s3.test/t?v={version}"},
            "swap_image": {"url": "http://192.168.1.1/router.jpg"},
        },
        "result": {"s3_uri": "s3://out/r.jpg", "download_url": f"https://s3.test/r?v={version}"},
    }


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def console(backend: Backend) -> Iterator[Console]:
    client = ApiClient("https://api.test", httpx.Auth())
    client._api = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(backend.api))
    client.unsigned = httpx.Client(transport=Streaming(backend.s3))
    console = Console(client).start()
    yield console
    console.stop()


@pytest.fixture
def http(console: Console) -> Iterator[httpx.Client]:
    """The console's own page: its session secret, its Host."""
    headers = {"X-Console-Session": console.session}
    with httpx.Client(base_url=f"http://127.0.0.1:{console.port}", headers=headers) as client:
        yield client


def session_for(console: Console, token: str, **headers: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{console.port}/api/session", headers={"X-Console-Token": token, **headers})


def test_a_link_s_token_gives_the_session_once_and_no_cookie(console: Console) -> None:
    token = console.link().split("token=", 1)[1]

    page = httpx.get(console.link())
    first = session_for(console, token)
    again = session_for(console, token)
    made_up = session_for(console, "x" * 43)
    not_ascii = httpx.post(f"http://127.0.0.1:{console.port}/api/session", headers={"X-Console-Token": "é".encode()})

    assert page.status_code == 200 and "set-cookie" not in page.headers, "cookies are shared with every port"
    assert first.status_code == 200 and first.json() == {"session": console.session}
    for refused in (again, made_up, not_ascii):
        assert (refused.status_code, refused.json()["code"]) == (401, "console_session_required")
        assert console.session not in refused.text
    foreign = session_for(console, console.link().split("token=", 1)[1], Origin="http://127.0.0.1:1")
    assert foreign.status_code == 403, "another origin cannot trade a token either"


@pytest.mark.parametrize("session", [None, "", "wrong", "é"])
def test_an_api_request_without_the_session_is_refused_before_the_api_is_called(
    console: Console, backend: Backend, session: str | None
) -> None:
    headers = {} if session is None else {"X-Console-Session": session.encode()}
    response = httpx.get(f"http://127.0.0.1:{console.port}/api/jobs", headers=headers)

    assert (response.status_code, response.json()["code"]) == (401, "console_session_required")
    assert backend.api_calls == []
    page = httpx.get(f"http://127.0.0.1:{console.port}/")
    assert page.status_code == 200, "the page itself (no data) is served without it"
    in_query = httpx.get(f"http://127.0.0.1:{console.port}/api/error-codes", params={"session": console.session})
    assert in_query.status_code == 401, "the secret is never taken from an address"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Origin": "https://attacker.example"}, 403, "forbidden_origin"),
        ({"Origin": "http://127.0.0.1:1"}, 403, "forbidden_origin"),
        ({"Sec-Fetch-Site": "same-site"}, 403, "forbidden_origin"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "forbidden_origin"),
        ({"Host": "attacker.example"}, 403, "forbidden_host"),
        ({"Host": "127.0.0.1"}, 403, "forbidden_host"),
    ],
)
def test_requests_not_from_its_own_page_are_refused_before_the_api_is_called(
    http: httpx.Client, backend: Backend, console: Console, headers: dict[str, str], status: int, code: str
) -> None:
    response = http.post("/api/jobs", json={"target_image": {"s3_key": "x"}}, headers=headers)

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert backend.api_calls == []
    assert console.refused[-1] == ("POST", "/api/jobs", code)


def test_its_own_origin_and_a_typed_address_are_served(http: httpx.Client, console: Console) -> None:
    for headers in (
        {"Origin": f"http://localhost:{console.port}", "Host": f"localhost:{console.port}"},
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin"},
    ):
        response = http.get("/", headers=headers)
        assert response.status_code == 200, headers
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


def test_a_job_reaches_the_page_without_presigned_urls_and_with_what_to_do(http: httpx.Client) -> None:
    shown = http.get(f"/api/jobs/{JOB_ID}").json()

    assert "s3.test" not in json.dumps(shown), "no presigned URL reaches the page"
    assert shown["error"]["what_to_do"] == WHAT_TO_DO["result_expired"]


def test_a_file_is_streamed_from_its_presigned_url_with_the_range_passed_on(
    http: httpx.Client, backend: Backend
) -> None:
    response = http.get(f"/api/jobs/{JOB_ID}/files/result", headers={"Range": "bytes=2-4"})

    assert response.status_code == 206 and response.content == b"ult"
    assert response.headers["content-range"] == "bytes 2-4/9" and backend.range == "bytes=2-4"
    assert backend.encodings == ["identity"], "the bytes as stored: lengths and ranges hold"


def test_the_page_s_file_addresses_open_their_own_file_only(console: Console, backend: Backend) -> None:
    files = httpx.get(
        f"http://127.0.0.1:{console.port}/api/jobs/{JOB_ID}", headers={"X-Console-Session": console.session}
    ).json()["files"]
    plain = httpx.Client(base_url=f"http://127.0.0.1:{console.port}")

    assert set(files) == {"target", "result"}, "a URL input gets no address"
    assert plain.get(files["result"]).status_code == 200
    swapped = files["target"].replace("/target?", "/result?")
    assert (plain.get(swapped).status_code, plain.get(swapped).json()["code"]) == (401, "console_session_required")
    assert plain.get(files["result"].replace("/files/", "/x/")).status_code == 401, "a file's signature, nothing else"


def test_a_url_input_is_never_fetched(http: httpx.Client, backend: Backend) -> None:
    response = http.get(f"/api/jobs/{JOB_ID}/files/swap_image")

    assert (response.status_code, response.json()["code"]) == (404, "file_not_found")
    assert backend.fetched == [], backend.fetched


def test_a_presigned_url_s3_refuses_is_asked_for_anew_once(http: httpx.Client, backend: Backend) -> None:
    backend.refuse_first = True

    response = http.get(f"/api/jobs/{JOB_ID}/files/result")

    assert response.status_code == 200
    assert [url.split("?")[1] for url in backend.fetched] == ["v=1", "v=2"], "the second from a fresh GET /jobs"


def test_a_thumbnail_is_made_once_for_requests_at_the_same_time_and_a_failure_leaves_nothing(
    console: Console, http: httpx.Client, backend: Backend
) -> None:
    backend.content_type, backend.body = "image/jpeg", jpeg()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: http.get(f"/api/jobs/{JOB_ID}/files/result?view=thumb"), range(4)))

    assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
    assert len(backend.fetched) == 1
    backend.body = b"not an image"
    failed = http.get(f"/api/jobs/{JOB_ID}/files/target?view=thumb")
    assert (failed.status_code, failed.json()["code"]) == (415, "not_an_image")
    assert console._making == {}


def test_an_upload_is_passed_on_in_pieces_with_its_length(http: httpx.Client, backend: Backend) -> None:
    body = bytes(range(256)) * (14 * 1024)  # 3.5 MiB

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = http.put(
        "/api/uploads",
        content=pieces(),
        headers={"Content-Type": "image/jpeg", "Content-Length": str(len(body))},
    )

    assert response.status_code == 201 and response.json() == {"s3_key": "uploads/new.jpg"}
    assert sum(backend.upload_chunks) == len(body) and max(backend.upload_chunks) <= CHUNK
    assert len(backend.upload_chunks) >= 4, "read and sent a piece at a time, never whole"
    assert backend.upload_headers["content-length"] == str(len(body))
    assert backend.upload_headers["content-type"] == "image/jpeg"


def test_an_upload_of_a_type_the_pipeline_does_not_take_is_refused(http: httpx.Client, backend: Backend) -> None:
    response = http.put("/api/uploads", content=b"#!/bin/sh", headers={"Content-Type": "text/x-shellscript"})

    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert backend.api_calls == []


@pytest.mark.parametrize("job_id", ["..", "%2E%2E", "a%2Fb", "x" * 129])
def test_a_job_id_that_could_name_another_api_route_never_reaches_the_api(
    http: httpx.Client, backend: Backend, job_id: str
) -> None:
    port = int(str(http.base_url).rsplit(":", 1)[1].strip("/"))
    connection = http_client.HTTPConnection("127.0.0.1", port)  # sends the path as it is: httpx normalises ".."
    connection.request("POST", f"/api/jobs/{job_id}/retry", headers={**http.headers, "Content-Length": "0"})
    answer = connection.getresponse()

    assert (answer.status, json.loads(answer.read())["code"]) == (404, "job_not_found")
    assert backend.api_calls == []


def test_the_api_s_own_errors_reach_the_page_as_they_are(http: httpx.Client) -> None:
    response = http.get("/api/jobs/" + "f" * 32)

    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")


def test_neither_a_link_nor_the_session_reaches_the_log(
    console: Console, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    link = console.link()
    token = link.split("token=", 1)[1]
    httpx.get(link)
    session_for(console, token)
    session_for(console, token)
    files = http.get(f"/api/jobs/{JOB_ID}").json()["files"]
    httpx.get(f"http://127.0.0.1:{console.port}{files['result']}")
    http.get("/api/jobs", params={"session": console.session}, headers={"Origin": "https://attacker.example"})
    with socket.create_connection(("127.0.0.1", console.port)) as connection:  # httpx refuses to send it
        connection.sendall(f"GET /api/\x1b[2J HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\n\r\n".encode())
        connection.recv(65536)

    log = capsys.readouterr().err
    assert log.count("console:") >= 6
    for secret in (token, console.session, files["result"].split("sig=")[1], "\x1b"):
        assert secret not in log


def test_a_file_of_a_type_the_page_does_not_show_is_only_downloaded_and_runs_nothing(
    http: httpx.Client, backend: Backend
) -> None:
    backend.content_type = "text/html"

    response = http.get(f"/api/jobs/{JOB_ID}/files/result")

    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in response.headers.get_list("content-security-policy")[-1]


def test_a_refused_upload_s_body_is_never_read_as_a_request(console: Console, backend: Backend) -> None:
    smuggled = b"GET /api/error-codes HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", console.port)) as connection:
        request = (
            f"PUT /api/uploads HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\n"
            f"X-Console-Session: {console.session}\r\nContent-Type: image/gif\r\n"
            f"Content-Length: {200_000 + len(smuggled)}\r\n\r\n"
        ).encode()
        connection.sendall(request + b"x" * 200_000 + smuggled)
        answers = b""
        while chunk := connection.recv(65536):
            answers += chunk

    assert answers.startswith(b"HTTP/1.1 400") and answers.count(b"HTTP/1.1") == 1


def test_the_readme_s_error_table_gives_the_console_s_advice_for_every_code_a_job_ends_with() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Error codes", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| .* \| (?:no|yes[^|]*) \| (.+) \|$", table, flags=re.MULTILINE)

    assert dict(rows) == WHAT_TO_DO
