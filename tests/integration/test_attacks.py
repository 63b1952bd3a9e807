"""Attacks on the pipeline over real HTTP: forged webhooks at the gateway, and hostile result URLs.

Part 1, webhooks: ``POST /callbacks/{provider}/{job_id}`` at the local gateway (``stack.api_url``). PiAPI carries
the per-job secret, HMAC-SHA256(signing key, job id), in ``x-webhook-secret``. Each attack asserts the HTTP
status and the stable ``code`` of the JSON answer, that the job's row is unchanged, and that the answer never
echoes the secret:

- no secret, wrong secret, another job's secret, the secret in the query instead of the header, the right secret
  on another provider's route (``/callbacks/crun/…``), an unknown provider → 401 ``webhook_unauthorized``;
- a well-formed job id with no job (with and without the secret it would have) → 401 ``webhook_unauthorized``,
  and no row is created; a malformed job id → 401 ``webhook_unauthorized``;
- a body over 256 KiB → 413 ``payload_too_large`` (before the secret check, with or without the secret);
- a wrong content type (``text/plain``, form, none) → 415 ``unsupported_media_type``, and a body that is not a
  JSON object (truncated, an array, not UTF-8) → 400 ``invalid_callback``, both only after the secret: the
  same requests without it → 401;
- a verified webhook whose body claims ``completed`` with a hostile result URL → 200, nothing changes (the
  pipeline reads the provider's own status, and the task is still running);
- the genuine webhook replayed after the job ended → 200, the same SUCCEEDED row and result, one result
  object version and a single "Job Succeeded" event.

Part 2, result URLs through the pipeline: the PiAPI emulator hands out a hostile result URL
(``Faults(result_url=…)``) and the job must end FAILED with a stable code and nothing in the results bucket.
The local stack allows loopback http (``RESULT_URL_ALLOW_LOOPBACK``) and allows only ``127.0.0.1`` and
``localhost`` as PiAPI's result hosts, so what it refuses is:

- ``result_url_refused``: plain http to a public host, ``file://``, ``https://[::1]``, ``[::ffff:127.0.0.1]``,
  ``0x7f000001``, the metadata address, 10/8, 172.16/12, 192.168/16, 100.64/10, fd00::/8, a mapped private
  address, a host off the allow-list; and, from a real server on loopback (whose first hop is fetched), a
  redirect to 10.0.0.1, to the metadata address, to ``file://``, and a redirect loop;
- ``result_too_large``: a body one byte over ``RESULT_MAX_BYTES``, announced by ``Content-Length`` and streamed
  without one;
- ``invalid_result``: a ``text/html`` body, and ``image/png`` with bytes that are not an image.

Part 3, what the local stack cannot express: the product's real :class:`faceswap.fetch.ResultFetcher` with
``allow_loopback=False`` (as on AWS), over a real ``httpx.Client`` against real servers on loopback (one plain
http, one https with a certificate made for the test). The only test double is the DNS resolver (the fetcher's
``resolve`` parameter), standing in for an attacker's DNS:

- loopback refused before any connection: ``https://localhost``, ``https://127.0.0.1``, ``http://127.0.0.1``,
  ``0x7f000001``, ``2130706433``, ``127.1``, ``[::1]``, ``[::ffff:127.0.0.1]`` (the servers see no request);
- an allowed name whose DNS answer is private (10/8, metadata, 100.64/10, fd00::/8, a mapped private address,
  one private address among public ones) refused before any connection;
- DNS rebinding: the name resolves to a public address but the connection lands on loopback → refused by the
  check of the connected peer;
- with the local stack's own ``allow_loopback=True``: a redirect from a loopback server to an allowed name that
  resolves to 10.0.0.1 → refused, after exactly one request.
"""

from __future__ import annotations

import io
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import FACES, RESULT_MAX_BYTES, Stack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image
from test_fetch import PNG, PUBLIC_IP
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from faceswap.errors import ResultUrlRefused
from faceswap.fetch import ResultFetcher, resolve_host
from faceswap.ids import webhook_secret
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_local.emulators.piapi import Faults, placeholder_swap

MAX_CALLBACK_BYTES = 256 * 1024  # functions/callback/app.py
LONG_RUNNING_SECONDS = 60  # the running job's task outlives the webhook tests


# --------------------------------------------------------------------------------------------------- helpers


class ResultHost:
    """A hostile result host: a threaded werkzeug server on ``127.0.0.1`` that records every request path.

    Routes: ``/image.png`` (a PNG), ``/html`` (``text/html``), ``/fake.png`` (``image/png`` with HTML bytes),
    ``/redirect?to=<url>`` (302), ``/loop`` (302 to itself) and ``/endless.png`` (PNG magic, then zeros past
    ``RESULT_MAX_BYTES``, with no ``Content-Length``).

    Parameters
    ----------
    ssl_context
        Serve https with this context (plain http when ``None``).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, ssl_context=ssl_context)
        self.port = self._server.server_port
        self.scheme = "https" if ssl_context else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="result-host")
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of ``path`` on this server, named by ``host``."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append(request.path)
        path = request.path
        if path == "/image.png":
            response = Response(PNG, content_type="image/png")
        elif path == "/html":
            response = Response(b"<!doctype html><title>hello</title>", content_type="text/html; charset=utf-8")
        elif path == "/fake.png":
            response = Response(b"<!doctype html><title>not found</title>", content_type="image/png")
        elif path == "/redirect":
            response = Response(status=302, headers={"location": request.args["to"]})
        elif path == "/loop":
            response = Response(status=302, headers={"location": "/loop"})
        elif path == "/endless.png":
            response = Response(_endless_png(RESULT_MAX_BYTES + 1), content_type="image/png", direct_passthrough=True)
        else:
            response = Response(b"not found", status=404, content_type="text/plain")
        return response(environ, start_response)


def _endless_png(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` bytes: the PNG signature, then zeros (a generator, so no ``Content-Length`` is sent)."""
    yield b"\x89PNG\r\n\x1a\n"
    sent = 8
    while sent < total:
        size = min(chunk, total - sent)
        sent += size
        yield bytes(size)


def small_target() -> bytes:
    """A small target image: the swap is a stand-in here, so any decodable image is enough."""
    out = io.BytesIO()
    Image.open(FACES / "biden.jpg").convert("RGB").resize((96, 218)).save(out, format="JPEG")
    return out.getvalue()


def signing_key(stack: Stack) -> bytes:
    return stack.local.stack.secret_values["WebhookSigningKeySecret"].encode()


def callback_url(stack: Stack, job_id: str, provider: str = "piapi") -> str:
    return f"{stack.api_url}/callbacks/{provider}/{job_id}"


def assert_refused(response: httpx.Response, status: int, code: str, *secrets: str) -> None:
    """The answer has ``status`` and ``{"code": code}``, and echoes none of ``secrets`` (body or headers)."""
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    echoed = response.text + json.dumps(dict(response.headers))
    for secret in secrets:
        assert secret not in echoed


def nothing_stored(stack: Stack, job: Job) -> bool:
    """No object version and no multipart upload at the job's result key."""
    versions = stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)
    uploads = stack.s3.list_multipart_uploads(Bucket=stack.results_bucket, Prefix=job.result_key)
    return "Versions" not in versions and "DeleteMarkers" not in versions and "Uploads" not in uploads


@pytest.fixture(scope="module")
def quick_swaps(stack: Stack) -> Iterator[None]:
    """The PiAPI emulator makes results with the stand-in swap for this file (the engine's quality is not the
    subject here), so a job takes about a second; the engine is put back afterwards."""
    engine = stack.piapi.swap_fn
    stack.piapi.swap_fn = placeholder_swap
    yield
    stack.piapi.swap_fn = engine


def run_job(stack: Stack, name: str, *, timeout: float = 30) -> Job:
    """Upload a small target for the ``obama`` face and wait for its job to end."""
    key = f"incoming/obama/attacks/{name}.jpg"
    stack.upload(key, small_target())
    return stack.wait_for(key, timeout=timeout)


# ------------------------------------------------------------------------------------------ part 1: webhooks


@dataclass(frozen=True)
class Jobs:
    """Two PiAPI jobs for the webhook attacks: one whose task is still running, one that ended SUCCEEDED."""

    running: Job
    running_secret: str
    finished: Job
    finished_secret: str


@pytest.fixture(scope="module")
def jobs(stack: Stack, quick_swaps: None) -> Jobs:
    key = signing_key(stack)
    finished = run_job(stack, "webhook-finished")
    assert finished.state is JobState.SUCCEEDED, finished.error
    stack.piapi.faults.webhook = "none"
    stack.piapi.faults.processing_seconds = LONG_RUNNING_SECONDS
    target = "incoming/obama/attacks/webhook-running.jpg"
    stack.upload(target, small_target())
    running = stack.wait_for(target, lambda j: j.provider_task_id is not None)
    stack.piapi.faults = Faults()
    (task,) = stack.piapi.tasks_for_job(running.job_id)
    assert task.webhook_secret == webhook_secret(key, running.job_id)  # the emulator has what PiAPI would
    return Jobs(running, webhook_secret(key, running.job_id), finished, webhook_secret(key, finished.job_id))


WEBHOOK_BODY: dict[str, Any] = {"timestamp": 1, "data": {"task_id": "t", "status": "completed"}}


def _body(jobs: Jobs) -> bytes:
    """A webhook body of PiAPI's shape for the running job's task."""
    return json.dumps(
        {"timestamp": 1, "data": {"task_id": jobs.running.provider_task_id, "status": "completed"}}
    ).encode()


@dataclass(frozen=True)
class Forgery:
    """One forged callback for the running job: how it is sent, and the answer it must get."""

    status: int
    code: str
    secret: Callable[[Jobs], str | None] = lambda jobs: None
    where: str = "header"
    provider: str = "piapi"
    content_type: str | None = "application/json"
    body: Callable[[Jobs], bytes] = _body


def _right(jobs: Jobs) -> str:
    return jobs.running_secret


OVERSIZED = b'{"pad": "' + b"x" * MAX_CALLBACK_BYTES + b'"}'

FORGERIES = [
    pytest.param(Forgery(401, "webhook_unauthorized"), id="no-secret"),
    pytest.param(Forgery(401, "webhook_unauthorized", secret=lambda jobs: "0" * 64), id="wrong-secret"),
    pytest.param(
        Forgery(401, "webhook_unauthorized", secret=lambda jobs: jobs.finished_secret), id="other-jobs-secret"
    ),
    pytest.param(Forgery(401, "webhook_unauthorized", secret=_right, where="query"), id="secret-in-query-not-header"),
    pytest.param(
        Forgery(401, "webhook_unauthorized", secret=_right, where="query", provider="crun"), id="other-providers-route"
    ),
    pytest.param(Forgery(401, "webhook_unauthorized", secret=_right, provider="nope"), id="unknown-provider"),
    pytest.param(Forgery(413, "payload_too_large", body=lambda jobs: OVERSIZED), id="oversized-body-no-secret"),
    pytest.param(
        Forgery(413, "payload_too_large", secret=_right, body=lambda jobs: OVERSIZED), id="oversized-body-with-secret"
    ),
    pytest.param(Forgery(401, "webhook_unauthorized", content_type="text/plain"), id="text-plain-no-secret"),
    pytest.param(Forgery(415, "unsupported_media_type", secret=_right, content_type="text/plain"), id="text-plain"),
    pytest.param(
        Forgery(415, "unsupported_media_type", secret=_right, content_type="application/x-www-form-urlencoded"),
        id="form-content-type",
    ),
    pytest.param(Forgery(415, "unsupported_media_type", secret=_right, content_type=None), id="no-content-type"),
    pytest.param(
        Forgery(401, "webhook_unauthorized", body=lambda jobs: b'{"data": {"task_id": '), id="malformed-json-no-secret"
    ),
    pytest.param(
        Forgery(400, "invalid_callback", secret=_right, body=lambda jobs: b'{"data": {"task_id": '), id="malformed-json"
    ),
    pytest.param(Forgery(400, "invalid_callback", secret=_right, body=lambda jobs: b"[]"), id="json-array"),
    pytest.param(
        Forgery(401, "webhook_unauthorized", body=lambda jobs: b"\xff\xfe\x00junk"), id="not-utf8-body-no-secret"
    ),
    pytest.param(Forgery(400, "invalid_callback", secret=_right, body=lambda jobs: b"\xff\xfe\x00junk"), id="not-utf8"),
]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_callback_is_refused_and_changes_nothing(stack: Stack, jobs: Jobs, forgery: Forgery) -> None:
    before = stack.get_job(jobs.running.job_id)
    secret = forgery.secret(jobs)
    headers = {"content-type": forgery.content_type} if forgery.content_type else {}
    params = {}
    if secret is not None and forgery.where == "header":
        headers["x-webhook-secret"] = secret
    elif secret is not None:
        params["token"] = secret

    response = httpx.post(
        callback_url(stack, jobs.running.job_id, forgery.provider),
        content=forgery.body(jobs),
        headers=headers,
        params=params,
    )

    assert_refused(response, forgery.status, forgery.code, jobs.running_secret, jobs.finished_secret)
    assert stack.get_job(jobs.running.job_id) == before
    assert before.state is JobState.SUBMITTED


def test_verified_callback_claiming_completion_changes_nothing_while_the_task_runs(stack: Stack, jobs: Jobs) -> None:
    """The body is a trigger, never the truth: the provider says the task still runs, so the job stays as it is."""
    before = stack.get_job(jobs.running.job_id)
    forged = {
        "timestamp": int(time.time()),
        "data": {
            "task_id": jobs.running.provider_task_id,
            "status": "completed",
            "output": {"image_url": "http://169.254.169.254/latest/meta-data/"},
        },
    }

    response = httpx.post(
        callback_url(stack, jobs.running.job_id), json=forged, headers={"x-webhook-secret": jobs.running_secret}
    )

    assert response.status_code == 200
    assert response.json() == {"job_id": jobs.running.job_id, "status": "SUBMITTED"}
    assert jobs.running_secret not in response.text
    assert stack.get_job(jobs.running.job_id) == before


@pytest.mark.parametrize("with_secret", [pytest.param(False, id="no-secret"), pytest.param(True, id="its-own-secret")])
def test_callback_for_a_job_that_does_not_exist_is_refused(stack: Stack, jobs: Jobs, with_secret: bool) -> None:
    job_id = "f" * 32  # well formed; no job has it
    secret = webhook_secret(signing_key(stack), job_id)
    headers = {"x-webhook-secret": secret} if with_secret else {}

    response = httpx.post(callback_url(stack, job_id), json=WEBHOOK_BODY, headers=headers)

    assert_refused(response, 401, "webhook_unauthorized", secret)
    item = stack.ddb.get_item(TableName=stack.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
    assert "Item" not in item


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("not-a-job-id", id="words"),
        pytest.param("0123456789ABCDEF0123456789ABCDEF", id="upper-case-hex"),
        pytest.param("0123456789abcdef0123456789abcde", id="31-hex"),
        pytest.param("0123456789abcdef0123456789abcdef0", id="33-hex"),
        pytest.param("0123456789abcdef' OR '1'='1", id="injection"),
    ],
)
def test_callback_with_a_malformed_job_id_is_refused(stack: Stack, jobs: Jobs, job_id: str) -> None:
    before = stack.get_job(jobs.running.job_id)

    response = httpx.post(
        callback_url(stack, quote(job_id, safe="")),
        json=WEBHOOK_BODY,
        headers={"x-webhook-secret": jobs.running_secret},
    )

    assert_refused(response, 401, "webhook_unauthorized", jobs.running_secret)
    item = stack.ddb.get_item(TableName=stack.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
    assert "Item" not in item
    assert stack.get_job(jobs.running.job_id) == before


def test_genuine_webhook_replayed_after_the_job_ended_changes_nothing(stack: Stack, jobs: Jobs) -> None:
    job = jobs.finished
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    data = httpx.get(f"{stack.piapi.url}/api/v1/task/{task.task_id}", headers={"x-api-key": stack.piapi.api_key})
    genuine = {"timestamp": int(time.time()), "data": data.json()["data"]}  # what PiAPI sends, as it sends it
    before = stack.get_job(job.job_id)

    responses = [
        httpx.post(callback_url(stack, job.job_id), json=genuine, headers={"x-webhook-secret": task.webhook_secret})
        for _ in range(2)
    ]

    for response in responses:
        assert response.status_code == 200
        assert response.json() == {"job_id": job.job_id, "status": "SUCCEEDED"}
        assert jobs.finished_secret not in response.text
    after = stack.get_job(job.job_id)
    assert after == before and after.state is JobState.SUCCEEDED and after.result == job.result
    versions = stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)["Versions"]
    assert len([v for v in versions if v["Key"] == job.result_key]) == 1
    ended = [e["detail-type"] for e in stack.events() if e["detail"]["job_id"] == job.job_id]
    assert ended == ["Job Succeeded"]


# --------------------------------------------------------------------------------- part 2: result URLs (stack)


@pytest.fixture(scope="module")
def result_host() -> Iterator[ResultHost]:
    host = ResultHost()
    yield host
    host.stop()


NOT_ALLOWED = "not on the provider's allow-list"

# In the local stack PiAPI's result hosts are 127.0.0.1 and localhost: every other host is stopped by the allow-list
# before DNS, so the address checks are proven in part 3. ``reason`` is what the job's error message says.
HOSTILE_URLS = [
    pytest.param("http://example.com/result.png", NOT_ALLOWED, id="plain-http-public-host"),
    pytest.param("file:///etc/passwd", "scheme 'file' is not allowed", id="file-scheme"),
    pytest.param("https://[::1]/x.png", NOT_ALLOWED, id="https-ipv6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]/", NOT_ALLOWED, id="http-v4-mapped-loopback"),
    pytest.param("http://0x7f000001/", NOT_ALLOWED, id="http-hex-loopback"),
    pytest.param("http://169.254.169.254/latest/meta-data/iam/security-credentials/", NOT_ALLOWED, id="metadata"),
    pytest.param("https://10.0.0.1/x.png", NOT_ALLOWED, id="private-10"),
    pytest.param("https://172.16.0.1/x.png", NOT_ALLOWED, id="private-172-16"),
    pytest.param("https://192.168.1.1/x.png", NOT_ALLOWED, id="private-192-168"),
    pytest.param("https://100.64.0.1/x.png", NOT_ALLOWED, id="shared-100-64"),
    pytest.param("https://[fd00::1]/x.png", NOT_ALLOWED, id="unique-local-fd00"),
    pytest.param("https://[::ffff:10.0.0.1]/x.png", NOT_ALLOWED, id="v4-mapped-private"),
    pytest.param("https://results.evil.example/x.png", NOT_ALLOWED, id="host-not-on-allow-list"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_URLS)
def test_hostile_result_url_fails_the_job_and_stores_nothing(
    stack: Stack, quick_swaps: None, request: pytest.FixtureRequest, url: str, reason: str
) -> None:
    stack.piapi.faults.result_url = url

    job = run_job(stack, f"url-{request.node.callspec.id}")

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "result_url_refused", job.error
    assert reason in job.error["message"]
    assert nothing_stored(stack, job)


# ``hops``: the requests one download makes to the server (the callback and the poller may both download).
HOSTILE_HOSTS = [
    pytest.param("/redirect?to=http://10.0.0.1/x", "result_url_refused", NOT_ALLOWED, 1, id="redirect-to-private-10"),
    pytest.param(
        "/redirect?to=http://169.254.169.254/latest/meta-data/",
        "result_url_refused",
        NOT_ALLOWED,
        1,
        id="redirect-to-metadata",
    ),
    pytest.param("/redirect?to=file:///etc/passwd", "result_url_refused", "scheme 'file'", 1, id="redirect-to-file"),
    pytest.param("/loop", "result_url_refused", "redirected more than 3 times", 4, id="redirect-loop"),
    pytest.param("/html", "invalid_result", "content type 'text/html'", 1, id="text-html"),
    pytest.param("/fake.png", "invalid_result", "magic bytes", 1, id="png-label-html-bytes"),
    pytest.param("/endless.png", "result_too_large", "larger than the cap", 1, id="over-cap-streamed-without-length"),
]


@pytest.mark.parametrize(("path", "code", "reason", "hops"), HOSTILE_HOSTS)
def test_hostile_result_host_fails_the_job_and_stores_nothing(
    stack: Stack,
    quick_swaps: None,
    result_host: ResultHost,
    request: pytest.FixtureRequest,
    path: str,
    code: str,
    reason: str,
    hops: int,
) -> None:
    stack.piapi.faults.result_url = result_host.url(path)
    seen = len(result_host.requests)

    job = run_job(stack, f"host-{request.node.callspec.id}")

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == code, job.error
    assert reason in job.error["message"]
    assert nothing_stored(stack, job)
    made = len(result_host.requests) - seen  # the first hop was fetched; no refused target was
    assert made >= hops and made % hops == 0, result_host.requests[seen:]


def test_result_one_byte_over_the_cap_fails_the_job_and_stores_nothing(stack: Stack, quick_swaps: None) -> None:
    stack.piapi.faults.result_bytes = RESULT_MAX_BYTES + 1

    job = run_job(stack, "over-cap-by-one")

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "result_too_large", job.error
    assert "over the cap" in job.error["message"]  # refused on its Content-Length, before the body
    assert nothing_stored(stack, job)


def test_control_the_result_host_serving_an_image_succeeds(
    stack: Stack, quick_swaps: None, result_host: ResultHost
) -> None:
    """The refusals above come from the checks: the same server's image, via the same path, is kept."""
    stack.piapi.faults.result_url = result_host.url("/redirect?to=" + quote(result_host.url("/image.png"), safe=""))

    job = run_job(stack, "control-image")

    assert job.state is JobState.SUCCEEDED, job.error
    stored = stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result_key)["Body"].read()
    assert stored == PNG


# -------------------------------------------------------------------------- part 3: the fetcher, AWS settings


@dataclass
class Servers:
    """Real result hosts on loopback: ``plain`` (http) and ``tls`` (https, trusted by ``client_context``)."""

    plain: ResultHost
    tls: ResultHost
    client_context: ssl.SSLContext

    def requests(self) -> int:
        return len(self.plain.requests) + len(self.tls.requests)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost``, ``127.0.0.1``, ``::1`` and ``::ffff:127.0.0.1`` (so that a fetch the checks
    failed to stop would really complete), and its key: ``(cert.pem, key.pem)`` in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    names = [x509.DNSName("localhost")] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    plain, tls = ResultHost(), ResultHost(ssl_context=server_context)
    yield Servers(plain, tls, ssl.create_default_context(cafile=str(cert_file)))
    plain.stop()
    tls.stop()


def fake_dns(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """The attacker's DNS: names in ``table`` get its answers; anything else the system resolver's (IP literals
    and ``localhost`` resolve without a network)."""

    def resolve(host: str, port: int) -> list[str]:
        return table[host] if host in table else resolve_host(host, port)

    return resolve


@pytest.fixture
def open_result(servers: Servers) -> Iterator[Callable[..., bytes]]:
    """Fetch a URL with the real fetcher over a real client: ``allow_loopback=False`` unless asked."""
    client = httpx.Client(verify=servers.client_context, timeout=httpx.Timeout(5.0), follow_redirects=False)

    def fetch(
        url: str, *, hosts: tuple[str, ...], dns: dict[str, list[str]] | None = None, allow_loopback: bool = False
    ) -> bytes:
        fetcher = ResultFetcher(
            client, max_bytes=RESULT_MAX_BYTES, allow_loopback=allow_loopback, resolve=fake_dns(dns or {})
        )
        with fetcher.open(url, allowed_hosts=hosts) as stream:
            return b"".join(stream.chunks())

    yield fetch
    client.close()


def test_fetcher_control_https_to_the_test_server_works_when_loopback_is_allowed(
    servers: Servers, open_result: Callable[..., bytes]
) -> None:
    """The TLS server and the client's trust work, so the refusals below are the fetcher's doing."""
    assert open_result(servers.tls.url("/image.png", "localhost"), hosts=("localhost",), allow_loopback=True) == PNG


@pytest.mark.parametrize(
    ("server", "host"),
    [
        pytest.param("tls", "localhost", id="https-localhost"),
        pytest.param("tls", "127.0.0.1", id="https-127.0.0.1"),
        pytest.param("plain", "127.0.0.1", id="http-127.0.0.1"),
        pytest.param("tls", "0x7f000001", id="https-hex-0x7f000001"),
        pytest.param("tls", "2130706433", id="https-decimal-2130706433"),
        pytest.param("tls", "127.1", id="https-short-127.1"),
        pytest.param("tls", "[::1]", id="https-ipv6-loopback"),
        pytest.param("tls", "[::ffff:127.0.0.1]", id="https-v4-mapped-loopback"),
    ],
)
def test_fetcher_refuses_loopback_before_connecting(
    servers: Servers, open_result: Callable[..., bytes], server: str, host: str
) -> None:
    host_server: ResultHost = getattr(servers, server)
    before = servers.requests()

    with pytest.raises(ResultUrlRefused) as refused:
        open_result(host_server.url("/image.png", host), hosts=(host.strip("[]"),))

    assert refused.value.code == "result_url_refused"
    assert servers.requests() == before


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(["10.0.0.1"], id="private-10"),
        pytest.param(["169.254.169.254"], id="metadata"),
        pytest.param(["100.64.0.1"], id="shared-100-64"),
        pytest.param(["fd00::1"], id="unique-local-fd00"),
        pytest.param(["::ffff:192.168.1.1"], id="v4-mapped-private"),
        pytest.param([PUBLIC_IP, "172.16.0.1"], id="one-private-among-public"),
    ],
)
def test_fetcher_refuses_an_allowed_name_resolving_to_a_private_address(
    servers: Servers, open_result: Callable[..., bytes], answer: list[str]
) -> None:
    """The name is ``localhost`` so that, were the address check missing, the request would really go out (to the
    https server on loopback) and be seen; the attacker's DNS answer is what the fetcher must judge."""
    before = servers.requests()

    with pytest.raises(ResultUrlRefused, match="non-public address"):
        open_result(servers.tls.url("/image.png", "localhost"), hosts=("localhost",), dns={"localhost": answer})

    assert servers.requests() == before


def test_fetcher_refuses_dns_rebinding_at_the_connected_peer(
    servers: Servers, open_result: Callable[..., bytes]
) -> None:
    """DNS says public, the connection lands on loopback: the address actually connected to is checked."""
    with pytest.raises(ResultUrlRefused, match="non-public address"):
        open_result(servers.tls.url("/image.png", "localhost"), hosts=("localhost",), dns={"localhost": [PUBLIC_IP]})


def test_fetcher_refuses_a_redirect_to_a_name_resolving_to_a_private_address(
    servers: Servers, open_result: Callable[..., bytes]
) -> None:
    """With the local stack's ``allow_loopback=True`` (the first hop on loopback must be fetched) and the target
    name on the allow-list: only its DNS answer can refuse it, before it is requested."""
    before = list(servers.plain.requests)
    first_hop = servers.plain.url("/redirect?to=" + quote("https://internal.results.test/x.png", safe=""))

    with pytest.raises(ResultUrlRefused, match="non-public address"):
        open_result(
            first_hop,
            hosts=("127.0.0.1", "internal.results.test"),
            dns={"internal.results.test": ["10.0.0.1"]},
            allow_loopback=True,
        )

    assert servers.plain.requests[len(before) :] == ["/redirect"]
