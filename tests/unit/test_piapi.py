"""PiAPI adapter against providers.md §1, over httpx.MockTransport (no network)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from mock_http import SWAP, TARGET, Capture, Handler, adapter, answering, task_input

from faceswap.errors import (
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.model import TaskStatus
from faceswap.ports import TaskInput, Webhook
from faceswap.providers.piapi import PiAPIProvider

API_KEY = "k-secret"
BASE_URL = "https://api.piapi.ai"
TASK_ID = "0f8e4c2a-6f1d-4b53-9d1e-2f0e8b7c1a11"
WEBHOOK = Webhook(url="https://hooks.example.com/callbacks/piapi/abc", secret="per-job-secret")


def provider(handler: Handler) -> PiAPIProvider:
    return adapter("piapi", handler, api_key=API_KEY, result_hosts=("img.theapi.app",))


def task(name: str = "face-swap", **options: Any) -> TaskInput:
    return task_input(name, **options)


def created(task_id: str | None = TASK_ID, code: int = 200) -> httpx.Response:
    data: dict[str, Any] = {"model": "Qubico/image-toolkit", "task_type": "face-swap", "status": "pending"}
    if task_id is not None:
        data["task_id"] = task_id
    return httpx.Response(200, json={"code": code, "data": data, "message": "success"})


def task_body(status: str, *, output: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "task_id": TASK_ID,
        "model": "Qubico/image-toolkit",
        "task_type": "face-swap",
        "status": status,
        "output": output,
        "error": error or {"code": 0, "raw_message": "", "message": "", "detail": None},
    }


# --- Create task: the request -----------------------------------------------------------------------------------------


def test_create_posts_to_unified_task_endpoint_with_api_key_header() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), WEBHOOK)
    (request,) = capture.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.piapi.ai/api/v1/task"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"


def test_create_body_names_model_task_and_base64_images() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), WEBHOOK)
    body = capture.body
    assert body["model"] == "Qubico/image-toolkit"
    assert body["task_type"] == "face-swap"
    assert base64.b64decode(body["input"]["target_image"]) == TARGET.data
    assert base64.b64decode(body["input"]["swap_image"]) == SWAP.data
    assert "swap_faces_index" not in body["input"]
    assert "target_faces_index" not in body["input"]


def test_create_sends_webhook_endpoint_and_secret_in_config() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), WEBHOOK)
    assert capture.body["config"]["webhook_config"] == {"endpoint": WEBHOOK.url, "secret": WEBHOOK.secret}


def test_create_without_webhook_sends_no_webhook_config() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), None)
    assert "webhook_config" not in capture.body.get("config", {})


def test_multi_face_swap_passes_face_indices_as_strings() -> None:
    capture = Capture(created())
    provider(capture).create_task(task("multi-face-swap", swap_faces_index="1,0", target_faces_index=1), WEBHOOK)
    body = capture.body
    assert body["task_type"] == "multi-face-swap"
    assert body["input"]["swap_faces_index"] == "1,0"
    assert body["input"]["target_faces_index"] == "1"


def test_create_returns_task_id() -> None:
    assert provider(answering(created())).create_task(task(), WEBHOOK) == TASK_ID


def test_create_refuses_unknown_task_without_calling_piapi() -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected):
        provider(capture).create_task(task("video-face-swap"), WEBHOOK)
    assert capture.requests == []


# --- Create task: classifying answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_create_auth_failure_is_provider_rejected(status: int) -> None:
    response = httpx.Response(status, json={"code": status, "message": "unauthorized"})
    with pytest.raises(ProviderRejected) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert not caught.value.retryable


def test_create_402_is_provider_out_of_credit() -> None:
    response = httpx.Response(402, json={"code": 402, "message": "insufficient credits"})
    with pytest.raises(ProviderOutOfCredit) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert caught.value.code == "provider_out_of_credit"


def test_create_400_is_provider_rejected_with_piapi_message() -> None:
    response = httpx.Response(400, json={"code": 400, "message": "swap_image is invalid"})
    with pytest.raises(ProviderRejected) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert "swap_image is invalid" in str(caught.value)


def test_create_429_is_provider_unavailable_with_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "7"}, json={"code": 429, "message": "slow down"})
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert caught.value.retry_after == 7.0
    assert caught.value.retryable


def test_create_429_without_retry_after_has_no_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(httpx.Response(429))).create_task(task(), WEBHOOK)
    assert caught.value.retry_after is None


def test_create_body_code_other_than_200_is_provider_rejected() -> None:
    response = httpx.Response(200, json={"code": 10001, "data": None, "message": "invalid model"})
    with pytest.raises(ProviderRejected) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert "invalid model" in str(caught.value)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(created(task_id=None), id="data-without-task-id"),
        pytest.param(created(task_id=""), id="empty-task-id"),
        pytest.param(httpx.Response(200, json={"code": 200, "data": None}), id="data-null"),
        pytest.param(httpx.Response(200, text="<html>ok</html>"), id="not-json"),
    ],
)
def test_create_success_without_task_id_is_submit_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(SubmitOutcomeUnknown) as caught:
        provider(answering(response)).create_task(task(), WEBHOOK)
    assert caught.value.retryable


# --- Get task ---------------------------------------------------------------------------------------------------------


def get_answer(status: str, **kwargs: Any) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "data": task_body(status, **kwargs), "message": "success"})


def test_get_task_reads_unified_task_endpoint_with_api_key() -> None:
    capture = Capture(get_answer("pending"))
    provider(capture).get_task(TASK_ID)
    (request,) = capture.requests
    assert request.method == "GET"
    assert str(request.url) == f"https://api.piapi.ai/api/v1/task/{TASK_ID}"
    assert request.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Completed", TaskStatus.SUCCEEDED),
        ("COMPLETED", TaskStatus.SUCCEEDED),
        ("completed", TaskStatus.SUCCEEDED),
        ("Pending", TaskStatus.QUEUED),
        ("staged", TaskStatus.QUEUED),
        ("Staged", TaskStatus.QUEUED),
        ("Processing", TaskStatus.RUNNING),
        ("Failed", TaskStatus.FAILED),
        ("failed", TaskStatus.FAILED),
        ("retrying", TaskStatus.RUNNING),
        ("", TaskStatus.RUNNING),
    ],
)
def test_get_task_maps_status_case_insensitively(status: str, expected: TaskStatus) -> None:
    output = {"image_url": "https://img.theapi.app/r.png"}
    snapshot = provider(answering(get_answer(status, output=output))).get_task(TASK_ID)
    assert snapshot.status is expected
    assert snapshot.task_id == TASK_ID


@pytest.mark.parametrize("field", ["image_url", "url", "output_url"])
def test_completed_task_result_url_comes_from_output(field: str) -> None:
    url = "https://img.theapi.app/temp/abc.png"
    snapshot = provider(answering(get_answer("completed", output={field: url}))).get_task(TASK_ID)
    assert snapshot.result_url == url
    assert snapshot.result_url_expires_at is not None


def test_completed_task_prefers_image_url() -> None:
    output = {"url": "https://img.theapi.app/other.png", "image_url": "https://img.theapi.app/image.png"}
    snapshot = provider(answering(get_answer("completed", output=output))).get_task(TASK_ID)
    assert snapshot.result_url == "https://img.theapi.app/image.png"


@pytest.mark.parametrize("output", [None, {}, {"image_url": None}, {"image_url": 42}])
def test_completed_task_without_url_has_no_result_url(output: Any) -> None:
    snapshot = provider(answering(get_answer("completed", output=output))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.SUCCEEDED
    assert snapshot.result_url is None


def test_failed_task_with_no_face_message_is_no_face_detected() -> None:
    error = {"code": 10000, "raw_message": "", "message": "No face detected in swap image", "detail": None}
    snapshot = provider(answering(get_answer("failed", error=error))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, NoFaceDetected)
    assert snapshot.error.code == "no_face_detected"


def test_failed_task_with_no_face_in_raw_message_is_no_face_detected() -> None:
    error = {"code": 10000, "raw_message": "inference error: no face found", "message": "task failed"}
    snapshot = provider(answering(get_answer("failed", error=error))).get_task(TASK_ID)
    assert isinstance(snapshot.error, NoFaceDetected)


def test_failed_task_for_a_face_index_out_of_range_is_no_face_detected_once_worded() -> None:
    text = "face index 99 is out of range (1 face found)"
    error = {"code": 10000, "raw_message": text, "message": text, "detail": None}
    snapshot = provider(answering(get_answer("failed", error=error))).get_task(TASK_ID)
    assert isinstance(snapshot.error, NoFaceDetected) and not snapshot.error.retryable
    assert str(snapshot.error).count("out of range") == 1


def test_failed_task_with_other_error_is_provider_task_failed() -> None:
    error = {"code": 10000, "raw_message": "gpu worker crashed", "message": "internal error", "detail": None}
    snapshot = provider(answering(get_answer("failed", error=error))).get_task(TASK_ID)
    assert isinstance(snapshot.error, ProviderTaskFailed)
    assert snapshot.error.code == "provider_task_failed"
    assert "internal error" in str(snapshot.error)


def test_failed_task_without_error_object_is_provider_task_failed() -> None:
    body = task_body("failed")
    body["error"] = None
    response = httpx.Response(200, json={"code": 200, "data": body})
    snapshot = provider(answering(response)).get_task(TASK_ID)
    assert isinstance(snapshot.error, ProviderTaskFailed)


def test_get_task_404_is_provider_rejected() -> None:
    response = httpx.Response(404, json={"code": 404, "message": "task not found"})
    with pytest.raises(ProviderRejected):
        provider(answering(response)).get_task(TASK_ID)


# --- Callbacks --------------------------------------------------------------------------------------------------------


def test_task_id_from_callback_reads_data_task_id() -> None:
    body = json.dumps({"timestamp": 1724511853, "data": task_body("completed")}).encode()
    assert provider(answering(created())).task_id_from_callback(body) == TASK_ID


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": []}',
        b'{"data": {"task_id": 123}}',
        b'{"task_id": "top-level-is-not-the-contract"}',
    ],
)
def test_task_id_from_callback_is_only_data_task_id_as_text(body: bytes) -> None:
    assert provider(answering(created())).task_id_from_callback(body) is None


# --- Secrets ----------------------------------------------------------------------------------------------------------


def raise_with_key(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


ANSWERS: dict[str, Handler] = {
    "401": answering(httpx.Response(401, json={"code": 401, "message": "Invalid API key"})),
    "402": answering(httpx.Response(402)),
    "429": answering(httpx.Response(429, headers={"Retry-After": "3"})),
    "500": answering(httpx.Response(500, text="oops")),
    "body-code": answering(httpx.Response(200, json={"code": 500, "message": "bad"})),
    "no-task-id": answering(httpx.Response(200, json={"code": 200, "data": {}})),
    "read-timeout": raise_with_key,
    "failed-task": answering(get_answer("failed", error={"message": "no face", "raw_message": "x"})),
}


def all_errors(handler: Handler) -> list[BaseException]:
    """Every exception (and its causes) the adapter raises or returns for ``handler``."""
    found: list[BaseException] = []
    adapter = provider(handler)
    for call in (lambda: adapter.create_task(task(), WEBHOOK), lambda: adapter.get_task(TASK_ID)):
        try:
            snapshot = call()
        except PipelineError as e:
            found.append(e)
        else:
            if not isinstance(snapshot, str) and snapshot.error is not None:
                found.append(snapshot.error)
    return found


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_api_key_never_appears_in_error_messages(answer: str) -> None:
    errors = all_errors(ANSWERS[answer])
    assert errors
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
