"""AILabAPI adapter against providers.md §2, over httpx.MockTransport (no network)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mock_http import SWAP, TARGET, Capture, Handler, adapter, answering, multipart_parts, task_input

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.model import TaskStatus
from faceswap.ports import TaskInput
from faceswap.providers.ailabapi import AILabAPIProvider
from faceswap.providers.registry import PROVIDERS

API_KEY = "ailab-k-secret"
BASE_URL = "https://www.ailabapi.com"
TASK_ID = "A1B2C3D4E5F6"


def provider(handler: Handler) -> AILabAPIProvider:
    hosts = ("ai-result-rapidapi.ailabtools.com",)
    return adapter("ailabapi", handler, api_key=API_KEY, result_hosts=hosts)


def task(name: str = "face-swap") -> TaskInput:
    return task_input(name)


def envelope(status: int = 200, code: str = "", message: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "request_id": "r-1",
        "log_id": "L1",
        "error_code": 0 if status == 200 else status,
        "error_code_str": code,
        "error_msg": message,
        "error_detail": {"status_code": status, "code": code, "code_message": message, "message": message},
        **extra,
    }


def created(task_id: str = TASK_ID) -> httpx.Response:
    return httpx.Response(200, json=envelope(task_type="async", task_id=task_id))


def failure(status: int, code: str, message: str = "refused", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json=envelope(status, code, message))


def queried(task_status: int, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json=envelope(task_status=task_status, **extra))


# --- Create task: the request -----------------------------------------------------------------------------------------


def test_create_posts_multipart_to_face_swap_endpoint_with_api_key_header() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), None)
    (request,) = capture.requests
    assert request.method == "POST"
    assert str(request.url) == "https://www.ailabapi.com/api/portrait/editing/ai-face-swap"
    assert request.headers["ailabapi-api-key"] == API_KEY
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_create_sends_target_as_image_target_and_swap_face_as_image_template() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), None)
    parts = multipart_parts(capture.requests[0])
    assert set(parts) == {"image_target", "image_template"}
    assert parts["image_target"] == ("target.jpg", "image/jpeg", TARGET.data)
    assert parts["image_template"] == ("swap.png", "image/png", SWAP.data)


def test_create_returns_task_id() -> None:
    assert provider(answering(created())).create_task(task(), None) == TASK_ID


def test_multi_face_swap_is_refused_without_calling_ailabapi() -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected, match="does not offer multi-face-swap"):
        provider(capture).create_task(task("multi-face-swap"), None)
    assert capture.requests == []


def test_unknown_task_is_refused_without_calling_ailabapi() -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected):
        provider(capture).create_task(task("video-face-swap"), None)
    assert capture.requests == []


def test_image_limits_follow_the_documented_jpeg_png_5mb_under_4096() -> None:
    limits = provider(answering(created())).image_limits
    assert limits.formats == ("JPEG", "PNG")
    assert limits.max_bytes == 5 * 1024 * 1024
    assert limits.max_side == 4095


def test_adapter_is_polling_only() -> None:
    adapter = provider(answering(created()))
    assert adapter.uses_webhook is False
    assert PROVIDERS["ailabapi"].poll_delays == (5.0, 1.0, 5.0)
    assert adapter.presented_secret({"x-webhook-secret": "s"}, {"token": "s"}) is None
    assert adapter.task_id_from_callback(b'{"task_id": "x"}') is None


# --- Create task: classifying answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(failure(429, "ERROR_NOT_ENOUGH_CREDITS"), ProviderOutOfCredit, id="429-credits"),
        pytest.param(failure(429, "EXCEEDING_LIMITS"), ProviderUnavailable, id="429-limits"),
        pytest.param(failure(422, "ERROR_NO_FACE_IN_FILE"), NoFaceDetected, id="422-no-face"),
        pytest.param(failure(422, "FILE_DECODING_FAILURE"), InvalidImage, id="422-decoding"),
        pytest.param(failure(422, "ERROR_FACE_COUNT_INVALID"), ProviderRejected, id="422-face-count"),
        pytest.param(failure(422, "ERROR_CONTENT_NON_COMPLIANCE"), ProviderRejected, id="422-content"),
        pytest.param(failure(413, "FILE_SIZE_EXCEEDS_LIMIT"), InvalidImage, id="413-size"),
        pytest.param(failure(413, "FILE_RESOLUTION_EXCEEDS_LIMITS"), InvalidImage, id="413-resolution"),
        pytest.param(failure(415, "UNSUPPORTED_FILE_TYPES"), InvalidImage, id="415-type"),
        pytest.param(failure(400, "ERROR_PARAMETERS"), ProviderRejected, id="400"),
        pytest.param(failure(401, "ERROR_APPLICATIONS_NOT_EXISTS"), ProviderRejected, id="401"),
        pytest.param(failure(403, "ERROR_USER_LOCKED"), ProviderRejected, id="403"),
        pytest.param(failure(500, "PROCESSING_FAILURE"), ProviderUnavailable, id="500"),
        pytest.param(failure(502, "ERROR_FILE_DOWNLOAD_FAILED"), ProviderUnavailable, id="502"),
        pytest.param(failure(503, "AI_SERVICE_FLOW_RESTRICTION"), ProviderUnavailable, id="503"),
        pytest.param(failure(504, "AI_SERVICE_TIMEOUT"), ProviderUnavailable, id="504"),
        pytest.param(httpx.Response(502, text="<html>bad gateway</html>"), ProviderUnavailable, id="502-html"),
    ],
)
def test_create_classifies_error_detail_code(response: httpx.Response, expected: type[PipelineError]) -> None:
    with pytest.raises(expected) as caught:
        provider(answering(response)).create_task(task(), None)
    assert type(caught.value) is expected


def test_out_of_credit_is_terminal_and_other_429_is_retryable() -> None:
    with pytest.raises(ProviderOutOfCredit) as credit:
        provider(answering(failure(429, "ERROR_NOT_ENOUGH_CREDITS"))).create_task(task(), None)
    with pytest.raises(ProviderUnavailable) as limited:
        provider(answering(failure(429, "EXCEEDING_LIMITS"))).create_task(task(), None)
    assert not credit.value.retryable
    assert limited.value.retryable


def test_rate_limit_honours_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(failure(429, "EXCEEDING_LIMITS", **{"Retry-After": "12"}))).create_task(task(), None)
    assert caught.value.retry_after == 12.0


def test_rate_limit_without_retry_after_has_none() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(failure(429, "EXCEEDING_LIMITS"))).create_task(task(), None)
    assert caught.value.retry_after is None


def test_error_code_str_is_the_fallback_when_error_detail_has_no_code() -> None:
    body = envelope(429, "ERROR_NOT_ENOUGH_CREDITS", "no credits")
    body["error_detail"] = {"status_code": 429, "message": "no credits"}
    with pytest.raises(ProviderOutOfCredit):
        provider(answering(httpx.Response(429, json=body))).create_task(task(), None)


def test_error_detail_code_wins_over_deprecated_error_code_str() -> None:
    body = envelope(422, "ERROR_NO_FACE_IN_FILE", "no face")
    body["error_code_str"] = "ERROR_SOMETHING_ELSE"
    with pytest.raises(NoFaceDetected):
        provider(answering(httpx.Response(422, json=body))).create_task(task(), None)


def test_http_200_with_nonzero_error_code_is_a_failure() -> None:
    body = envelope(422, "ERROR_NO_FACE_IN_FILE", "no face")
    with pytest.raises(NoFaceDetected):
        provider(answering(httpx.Response(200, json=body))).create_task(task(), None)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(created(task_id=""), id="empty-task-id"),
        pytest.param(httpx.Response(200, json=envelope(task_type="async")), id="no-task-id"),
        pytest.param(httpx.Response(200, text="<html>ok</html>"), id="not-json"),
        pytest.param(httpx.Response(200, json=[]), id="json-list"),
    ],
)
def test_create_success_without_task_id_is_submit_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        provider(answering(response)).create_task(task(), None)


# --- Get task ---------------------------------------------------------------------------------------------------------


def test_get_task_queries_the_async_result_endpoint_with_task_id_and_key() -> None:
    capture = Capture(queried(0))
    provider(capture).get_task(TASK_ID)
    (request,) = capture.requests
    assert request.method == "GET"
    assert str(request.url) == f"https://www.ailabapi.com/api/common/query-async-task-result?task_id={TASK_ID}"
    assert request.headers["ailabapi-api-key"] == API_KEY


@pytest.mark.parametrize(
    ("task_status", "expected"),
    [
        (0, TaskStatus.QUEUED),
        (1, TaskStatus.RUNNING),
        (2, TaskStatus.SUCCEEDED),
        ("1", TaskStatus.RUNNING),
        (7, TaskStatus.RUNNING),
        (None, TaskStatus.RUNNING),
    ],
)
def test_get_task_maps_task_status(task_status: Any, expected: TaskStatus) -> None:
    response = queried(task_status, data={"image": "https://ai-result-rapidapi.ailabtools.com/r.jpg"})
    snapshot = provider(answering(response)).get_task(TASK_ID)
    assert snapshot.status is expected
    assert snapshot.task_id == TASK_ID


def test_succeeded_task_result_url_is_data_image_valid_24_hours() -> None:
    url = "https://ai-result-rapidapi.ailabtools.com/image/abc.jpg"
    snapshot = provider(answering(queried(2, data={"image": url}))).get_task(TASK_ID)
    assert snapshot.result_url == url
    assert snapshot.result_url_expires_at is not None


@pytest.mark.parametrize("data", [None, {}, {"image": ""}, {"image": 5}, []])
def test_succeeded_task_without_image_has_no_result_url(data: Any) -> None:
    snapshot = provider(answering(queried(2, data=data))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.SUCCEEDED
    assert snapshot.result_url is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(failure(422, "ERROR_NO_FACE_IN_FILE", "no face in file"), NoFaceDetected, id="no-face"),
        pytest.param(failure(422, "FILE_DECODING_FAILURE"), InvalidImage, id="decoding"),
        pytest.param(failure(422, "ERROR_FACE_COUNT_INVALID"), ProviderRejected, id="face-count"),
        pytest.param(failure(413, "FILE_SIZE_EXCEEDS_LIMIT"), InvalidImage, id="size"),
        pytest.param(failure(429, "ERROR_NOT_ENOUGH_CREDITS"), ProviderOutOfCredit, id="credits"),
        pytest.param(
            httpx.Response(200, json=envelope(422, "ERROR_NO_FACE_IN_FILE", "x")), NoFaceDetected, id="http-200"
        ),
    ],
)
def test_task_level_failure_is_a_failed_snapshot(response: httpx.Response, expected: type[PipelineError]) -> None:
    snapshot = provider(answering(response)).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert type(snapshot.error) is expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(failure(429, "EXCEEDING_LIMITS"), ProviderUnavailable, id="429"),
        pytest.param(failure(500, "UNKNOWN_ERROR"), ProviderUnavailable, id="500"),
        pytest.param(failure(503, "AI_SERVICE_FLOW_RESTRICTION"), ProviderUnavailable, id="503"),
        pytest.param(httpx.Response(200, text="not json"), ProviderUnavailable, id="unreadable"),
        pytest.param(failure(400, "ERROR_PARAMETERS", "task_id does not exist"), ProviderRejected, id="400"),
        pytest.param(failure(401, "ERROR_APPLICATIONS_NOT_EXISTS"), ProviderRejected, id="401"),
    ],
)
def test_get_task_read_failures_raise(response: httpx.Response, expected: type[PipelineError]) -> None:
    with pytest.raises(expected):
        provider(answering(response)).get_task(TASK_ID)


# --- Secrets ----------------------------------------------------------------------------------------------------------


def test_create_accepts_any_2xx_with_error_code_0() -> None:
    response = httpx.Response(201, json=envelope(task_type="async", task_id=TASK_ID))
    assert provider(answering(response)).create_task(task(), None) == TASK_ID
