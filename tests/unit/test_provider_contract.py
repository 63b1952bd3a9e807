"""The contract every provider adapter keeps, run over each entry of the provider registry (httpx.MockTransport).

Each adapter is made as the wiring makes it (its registry entry's class, base URL, result hosts and, where it needs
one, API key), and answered with generic HTTP: whatever a provider's own answer format, these hold for all of them:

- a create that could not connect made no task (``provider_unavailable``, retryable); one cut off after the request
  was sent may have made one (``submit_outcome_unknown``: never sent again);
- 5xx and 429 are ``provider_unavailable`` (retryable), with the ``Retry-After`` seconds where the provider sends
  them; a read that fails the same way is ``provider_unavailable`` too;
- the API key is in no error, however the provider echoes it back (whole, or cut at a message's length limit);
- a provider that calls back finds its per-job secret in its own callback, and no secret in a callback without it.

What differs per provider (request shapes, answer formats, status vocabularies) stays in its own test module.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from mock_http import adapter as make_adapter
from mock_http import task_input as make_task_input

from faceswap.errors import PipelineError, ProviderUnavailable, SubmitOutcomeUnknown
from faceswap.ports import Provider, TaskInput, Webhook
from faceswap.providers.registry import PROVIDERS, ProviderSpec

API_KEY = "sk-contract-5f0c1e9a7b3d"
SECRET = "per-job-secret-31c4"
WEBHOOK = Webhook(url="https://api.example.com/callbacks/x/" + "a" * 32, secret=SECRET)
SPECS = list(PROVIDERS.values())
KEYED = [spec for spec in SPECS if spec.api_key]

CALLBACKS: dict[str, Callable[[str], tuple[dict[str, str], dict[str, str]]]] = {
    "piapi": lambda secret: ({"x-webhook-secret": secret}, {}),  # providers.md §1.2: the header PiAPI sends
    "crun": lambda secret: ({}, {"token": secret}),  # providers.md §3.2: the callback URL's own query
    "selfhosted": lambda secret: ({"x-webhook-secret": secret}, {}),  # engine/faceswap_engine/server.py
}
"""How each provider that calls back presents the per-job secret (headers, query parameters)."""


def adapter(spec: ProviderSpec, handler: Callable[[httpx.Request], httpx.Response]) -> Provider:
    """The adapter as :func:`faceswap.wiring.build_providers` makes it, over ``handler``."""
    return make_adapter(spec.name, handler, api_key=API_KEY)


def task_input() -> TaskInput:
    urls = ("https://inputs.example.com/t.jpg?sig", "https://inputs.example.com/s.png?sig")
    return make_task_input(image_urls=lambda: urls)


def raising(error: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("network", request=request)  # type: ignore[call-arg]

    return handler


@pytest.fixture(params=SPECS, ids=lambda spec: spec.name)
def spec(request: pytest.FixtureRequest) -> ProviderSpec:
    return request.param


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout])
def test_a_create_that_could_not_connect_made_no_task(spec: ProviderSpec, error: type[httpx.HTTPError]) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        adapter(spec, raising(error)).create_task(task_input(), WEBHOOK)
    assert caught.value.retryable


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError])
def test_a_create_cut_off_after_sending_may_have_made_a_task_and_is_not_sent_again(
    spec: ProviderSpec, error: type[httpx.HTTPError]
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise error("lost", request=request)  # type: ignore[call-arg]

    with pytest.raises(SubmitOutcomeUnknown):
        adapter(spec, handler).create_task(task_input(), WEBHOOK)
    assert len(sent) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_provider_unavailable_for_creates_and_reads(spec: ProviderSpec, status: int) -> None:
    answer = httpx.Response(status, json={"code": status, "message": "busy"})
    with pytest.raises(ProviderUnavailable) as created:
        adapter(spec, lambda request: answer).create_task(task_input(), WEBHOOK)
    with pytest.raises(ProviderUnavailable):
        adapter(spec, lambda request: answer).get_task("task-1")
    assert created.value.retryable


def test_too_many_requests_is_retryable_with_the_providers_retry_after(spec: ProviderSpec) -> None:
    answer = httpx.Response(429, headers={"retry-after": "7"}, json={"code": 429, "message": "slow down"})

    with pytest.raises(ProviderUnavailable) as caught:
        adapter(spec, lambda request: answer).create_task(task_input(), WEBHOOK)

    assert caught.value.retryable and caught.value.retry_after == 7


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
def test_a_read_that_fails_on_the_network_is_provider_unavailable(
    spec: ProviderSpec, error: type[httpx.HTTPError]
) -> None:
    with pytest.raises(ProviderUnavailable):
        adapter(spec, raising(error)).get_task("task-1")


def echoing(status: int, message: str) -> httpx.Response:
    """An answer that puts ``message`` in every field a provider reports errors in."""
    text = {"message": message, "msg": message, "error": message, "detail": message, "raw_message": message}
    return httpx.Response(
        status,
        json={
            "code": status,
            **text,
            "error_msg": message,
            "error_detail": {"code_message": message, "message": message, "status": status},
            "data": {"status": "failed", "error": {"message": message, "raw_message": message}, "message": message},
        },
    )


def errors_for(spec: ProviderSpec, answer: httpx.Response) -> list[BaseException]:
    """What a create and a read of ``answer`` raise (or report as a failed task's error)."""
    found: list[BaseException] = []
    for call in (
        lambda: adapter(spec, lambda request: answer).create_task(task_input(), WEBHOOK),
        lambda: adapter(spec, lambda request: answer).get_task("task-1"),
    ):
        try:
            outcome = call()
        except PipelineError as e:
            found.append(e)
        else:
            error = getattr(outcome, "error", None)
            if error is not None:
                found.append(error)
    return found


def _ailabapi(status: int, code: str, message: str) -> httpx.Response:
    detail = {"status_code": status, "code": code, "code_message": f"key {message}", "message": message}
    body = {"error_code": status, "error_code_str": code, "error_msg": message, "error_detail": detail}
    return httpx.Response(status, json=body)


def _aiphotocraft(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"success": False, "error": {"code": code, "message": message, "details": {}}})


def _crun(status: int, in_body: bool, message: str) -> httpx.Response:
    return httpx.Response(200 if in_body else status, json={"code": status, "message": message})


ECHOES: list[tuple[str, Callable[[str], httpx.Response]]] = [
    *[(f"generic-{s}", lambda message, s=s: echoing(s, message)) for s in (200, 400, 401, 402, 403, 404, 429, 500)],
    *[
        (f"ailabapi-{status}-{code}", lambda message, s=status, c=code: _ailabapi(s, c, message))
        for status, code in [
            (400, "ERROR_PARAMETERS"),
            (401, "ERROR_APPLICATIONS_NOT_EXISTS"),
            (413, "FILE_SIZE_EXCEEDS_LIMIT"),
            (422, "ERROR_NO_FACE_IN_FILE"),
            (429, "ERROR_NOT_ENOUGH_CREDITS"),
            (429, "EXCEEDING_LIMITS"),
            (500, "PROCESSING_FAILURE"),
        ]
    ],
    *[
        (
            f"aiphotocraft-{status}-{code}",
            lambda message, status=status, code=code: _aiphotocraft(status, code, message),
        )
        for status, code in [
            (400, "invalid_parameter"),
            (400, "no_face_detected"),
            (400, "invalid_image_format"),
            (401, "invalid_api_key"),
            (404, "not_found"),
            (429, "rate_limit_exceeded"),
            (500, "server_error"),
        ]
    ],
    *[
        (f"crun-{status}-{'body' if in_body else 'http'}", lambda message, s=status, b=in_body: _crun(s, b, message))
        for status in (401, 402, 404, 422, 429, 455, 500, 501, 505)
        for in_body in (False, True)
    ],
]
"""Answers that echo the key back: generic ones (the key in every field any provider reports errors in) and each
provider's own error bodies with the codes it documents, so every error path is asked to redact."""


@pytest.mark.parametrize("keyed", KEYED, ids=lambda spec: spec.name)
@pytest.mark.parametrize(("case", "answer"), ECHOES, ids=[case for case, _ in ECHOES])
def test_the_api_key_is_in_no_error_however_the_provider_echoes_it(
    keyed: ProviderSpec, case: str, answer: Callable[[str], httpx.Response]
) -> None:
    for message in (f"invalid api key {API_KEY}", "x" * 190 + API_KEY):
        errors = errors_for(keyed, answer(message))
        assert errors, "an echoing answer is an error"
        for error in errors:
            assert API_KEY[:8] not in str(error) and API_KEY[:8] not in repr(error), error


def test_a_provider_that_calls_back_finds_its_secret_in_its_callback_and_none_without(spec: ProviderSpec) -> None:
    provider = adapter(spec, lambda request: httpx.Response(500))
    if not provider.uses_webhook:
        assert provider.presented_secret({"x-webhook-secret": SECRET}, {"token": SECRET}) is None
        return
    headers, query = CALLBACKS[spec.name](SECRET)

    assert provider.presented_secret(headers, query) == SECRET
    assert provider.presented_secret({}, {}) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"text"',
        b"{}",
        b'{"data": null}',
        b'{"data": {}}',
        b'{"task_id": ""}',
        b"\xff\xfe\x00",
    ],
)
def test_a_callback_body_that_names_no_task_gives_no_task_id(spec: ProviderSpec, body: bytes) -> None:
    assert adapter(spec, lambda request: httpx.Response(500)).task_id_from_callback(body) is None


def test_a_read_whose_answer_is_not_json_is_provider_unavailable(spec: ProviderSpec) -> None:
    with pytest.raises(ProviderUnavailable):
        adapter(spec, lambda request: httpx.Response(200, text="<html>maintenance</html>")).get_task("task-1")
