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
from typing import Any

import httpx
import pytest

from faceswap.errors import PipelineError, ProviderUnavailable, SubmitOutcomeUnknown
from faceswap.images import PreparedImage
from faceswap.ports import Provider, TaskInput, Webhook
from faceswap.providers.registry import PROVIDERS, ProviderSpec

API_KEY = "sk-contract-5f0c1e9a7b3d"
SECRET = "per-job-secret-31c4"
WEBHOOK = Webhook(url="https://api.example.com/callbacks/x/" + "a" * 32, secret=SECRET)
TARGET = PreparedImage(b"\xff\xd8\xff target bytes", "image/jpeg", 640, 480)
SWAP = PreparedImage(b"\x89PNG\r\n\x1a\n swap bytes", "image/png", 256, 256)
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
    options: dict[str, Any] = {"base_url": spec.base_url or "http://engine.internal:8080", "result_hosts": ("x.io",)}
    if spec.api_key:
        options["api_key"] = lambda: API_KEY
    return spec.adapter_class()(httpx.Client(transport=httpx.MockTransport(handler)), **options)


def task_input() -> TaskInput:
    return TaskInput(
        job_id="a" * 32,
        task="face-swap",
        target_image=TARGET,
        swap_image=SWAP,
        options={},
        image_urls=lambda: ("https://inputs.example.com/t.jpg?sig", "https://inputs.example.com/s.png?sig"),
    )


def raising(error: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("network", request=request)  # type: ignore[call-arg]

    return handler


@pytest.fixture(params=SPECS, ids=lambda spec: spec.name)
def spec(request: pytest.FixtureRequest) -> ProviderSpec:
    return request.param  # type: ignore[no-any-return]


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


@pytest.mark.parametrize("keyed", KEYED, ids=lambda spec: spec.name)
@pytest.mark.parametrize("status", [200, 400, 401, 402, 403, 404, 429, 500])
def test_the_api_key_is_in_no_error_however_the_provider_echoes_it(keyed: ProviderSpec, status: int) -> None:
    spec = keyed
    for message in (f"invalid key {API_KEY}", "x" * 190 + API_KEY):
        errors = errors_for(spec, echoing(status, message))
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
