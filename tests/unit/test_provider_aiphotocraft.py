"""AIPhotoCraft adapter against providers.md §4, over httpx.MockTransport (no network)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mock_http import SWAP, TARGET, Capture, Handler, adapter, answering, multipart_parts, task_input

from faceswap.errors import (
    InvalidImage,
    NoFaceDetected,
    PipelineError,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.model import TaskStatus
from faceswap.ports import TaskInput
from faceswap.providers.aiphotocraft import AIPhotoCraftProvider
from faceswap.providers.registry import PROVIDERS

API_KEY = "apc-k-secret"
BASE_URL = "https://aiapi.aiphotocraft.com"
TASK_ID = "7c9e6679"
NOW = 1_750_000_000.0
RESULT_URL = "https://aiapi.aiphotocraft.com/results/swapped_image.jpg"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def provider(handler: Handler, clock: Clock | None = None) -> AIPhotoCraftProvider:
    hosts = ("aiapi.aiphotocraft.com",)
    return adapter("aiphotocraft", handler, api_key=API_KEY, result_hosts=hosts, clock=clock or Clock())


def task(name: str = "face-swap", **options: Any) -> TaskInput:
    return task_input(name, **options)


def quota(limit: int = 50, remaining: int = 40, reset: float = NOW + 1800) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(reset)),
    }


def created(body: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"task_id": TASK_ID} if body is None else body)


def refused(status: int, code: str, message: str = "refused", details: Any = None, **headers: str) -> httpx.Response:
    error = {"code": code, "message": message, "details": details or {}}
    return httpx.Response(status, headers=headers, json={"success": False, "error": error})


def status_answer(body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(200, headers=headers, json=body)


# --- Create task: the request -----------------------------------------------------------------------------------------


def test_face_swap_posts_multipart_to_basicswap_with_api_key_header() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), None)
    (request,) = capture.requests
    assert request.method == "POST"
    assert str(request.url) == "https://aiapi.aiphotocraft.com/api/faceswap/basicswap"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_swap_face_is_srcimage_and_target_is_targetimage() -> None:
    capture = Capture(created())
    provider(capture).create_task(task(), None)
    parts = multipart_parts(capture.requests[0], with_content_type=False)
    assert set(parts) == {"srcimage", "targetimage", "enhance"}
    assert parts["srcimage"] == ("swap.png", SWAP.data)
    assert parts["targetimage"] == ("target.jpg", TARGET.data)
    assert parts["enhance"] == (None, b"false")


@pytest.mark.parametrize(
    ("value", "sent"), [(True, b"true"), (False, b"false"), ("TRUE", b"true"), ("false", b"false")]
)
def test_enhance_option_is_sent_as_true_or_false(value: Any, sent: bytes) -> None:
    capture = Capture(created())
    provider(capture).create_task(task(enhance=value), None)
    assert multipart_parts(capture.requests[0], with_content_type=False)["enhance"] == (None, sent)


def test_invalid_enhance_option_is_rejected_without_calling() -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected, match="enhance"):
        provider(capture).create_task(task(enhance="maybe"), None)
    assert capture.requests == []


def test_multi_face_swap_posts_to_faceswap2_with_enhance() -> None:
    capture = Capture(created())
    provider(capture).create_task(task("multi-face-swap"), None)
    request = capture.requests[0]
    assert str(request.url) == "https://aiapi.aiphotocraft.com/api/faceswap/faceswap2"
    parts = multipart_parts(request, with_content_type=False)
    assert set(parts) == {"srcimage", "targetimage", "enhance"}  # no swap_index: faces map by position


@pytest.mark.parametrize(
    ("options", "swap_index"),
    [
        ({"swap_index": "2,1"}, b"2,1"),
        ({"swap_index": "1, 2"}, b"1,2"),
        ({"swap_faces_index": "0,1", "target_faces_index": "1,0"}, b"2,1"),
        ({"swap_faces_index": "1,0", "target_faces_index": "0,1"}, b"2,1"),
        ({"swap_faces_index": "0,1", "target_faces_index": "0,1"}, b"1,2"),
        ({"swap_faces_index": "1", "target_faces_index": "0,1"}, b"2,2"),
        ({"target_faces_index": "1,0"}, b"1,1"),
        ({"swap_faces_index": "1,0"}, b"2,1"),
    ],
)
def test_multi_face_swap_index_from_options(options: dict[str, str], swap_index: bytes) -> None:
    capture = Capture(created())
    provider(capture).create_task(task("multi-face-swap", **options), None)
    assert multipart_parts(capture.requests[0], with_content_type=False)["swap_index"] == (None, swap_index)


@pytest.mark.parametrize(
    "options",
    [
        {"target_faces_index": "1"},
        {"target_faces_index": "0,2"},
        {"target_faces_index": "0,0"},
        {"swap_faces_index": "2", "target_faces_index": "0,1"},
        {"swap_faces_index": "0,1,0", "target_faces_index": "0,1"},
        {"swap_faces_index": "x", "target_faces_index": "0,1"},
        {"swap_index": "a,b"},
        {"swap_index": "0,1"},
        {"swap_index": "1"},
    ],
)
def test_multi_face_options_that_do_not_map_are_rejected_without_calling(options: dict[str, str]) -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected):
        provider(capture).create_task(task("multi-face-swap", **options), None)
    assert capture.requests == []


@pytest.mark.parametrize("name", ["swap1from2", "swapfacesameimage", "video-face-swap"])
def test_tasks_not_offered_are_rejected_without_calling(name: str) -> None:
    capture = Capture(created())
    with pytest.raises(ProviderRejected):
        provider(capture).create_task(task(name), None)
    assert capture.requests == []


@pytest.mark.parametrize(
    "response",
    [
        created({"task_id": TASK_ID}),
        created({"task_id": TASK_ID, "status": "pending"}, status=201),
        created({"success": True, "data": {"task_id": TASK_ID}}),
        created({"id": TASK_ID}),
    ],
)
def test_create_reads_the_task_id_defensively(response: httpx.Response) -> None:
    assert provider(answering(response)).create_task(task(), None) == TASK_ID


def test_numeric_task_id_is_returned_as_text() -> None:
    assert provider(answering(created({"task_id": 42}))).create_task(task(), None) == "42"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(created({}), id="empty"),
        pytest.param(created({"task_id": ""}), id="empty-id"),
        pytest.param(created({"image_url": RESULT_URL}), id="sync-image"),
        pytest.param(httpx.Response(200, text="<html/>"), id="not-json"),
    ],
)
def test_create_without_a_task_id_is_submit_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        provider(answering(response)).create_task(task(), None)


# --- Create task: classifying answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (refused(400, "no_face_detected"), NoFaceDetected),
        (refused(400, "face_count_mismatch"), ProviderRejected),
        (refused(400, "face_index_out_of_range"), ProviderRejected),
        (refused(400, "invalid_image_format"), InvalidImage),
        (refused(400, "invalid_parameter"), ProviderRejected),
        (refused(401, "invalid_api_key"), ProviderRejected),
        (refused(401, "api_key_required"), ProviderRejected),
        (refused(403, "forbidden"), ProviderRejected),
        (refused(404, "not_found"), ProviderRejected),
        (refused(429, "rate_limit_exceeded"), ProviderUnavailable),
        (refused(500, "server_error"), ProviderUnavailable),
        (httpx.Response(502, text="<html>bad gateway</html>"), ProviderUnavailable),
        (refused(200, "no_face_detected"), NoFaceDetected),
    ],
)
def test_create_classifies_error_codes(response: httpx.Response, expected: type[PipelineError]) -> None:
    with pytest.raises(expected) as caught:
        provider(answering(response)).create_task(task(), None)
    assert type(caught.value) is expected


def test_rate_limit_retry_after_comes_from_details_reset_at() -> None:
    response = refused(429, "rate_limit_exceeded", details={"reset_at": NOW + 600})
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(response)).create_task(task(), None)
    assert caught.value.retry_after == 600.0


def test_rate_limit_retry_after_falls_back_to_the_reset_header() -> None:
    response = refused(429, "rate_limit_exceeded", **quota(remaining=0, reset=NOW + 120))
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(response)).create_task(task(), None)
    assert caught.value.retry_after == 120.0


def test_rate_limit_with_a_past_reset_still_waits_a_little() -> None:
    response = refused(429, "rate_limit_exceeded", details={"reset_at": NOW - 5})
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(response)).create_task(task(), None)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


# --- Get task ---------------------------------------------------------------------------------------------------------


def test_get_task_reads_task_status_with_key() -> None:
    capture = Capture(status_answer({"status": "processing"}))
    provider(capture).get_task(TASK_ID)
    (request,) = capture.requests
    assert request.method == "GET"
    assert str(request.url) == f"https://aiapi.aiphotocraft.com/api/task-status/{TASK_ID}"
    assert request.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize(
    ("body", "status", "url"),
    [
        ({"status": "completed", "image_url": RESULT_URL}, TaskStatus.SUCCEEDED, RESULT_URL),
        ({"status": "COMPLETED", "result": RESULT_URL}, TaskStatus.SUCCEEDED, RESULT_URL),
        ({"status": "Completed", "result": {"image_url": RESULT_URL}}, TaskStatus.SUCCEEDED, RESULT_URL),
        ({"image_url": RESULT_URL}, TaskStatus.SUCCEEDED, RESULT_URL),
        ({"data": {"status": "completed", "image_url": RESULT_URL}}, TaskStatus.SUCCEEDED, RESULT_URL),
        ({"status": "completed"}, TaskStatus.SUCCEEDED, None),
        ({"status": "completed", "result": "done"}, TaskStatus.SUCCEEDED, None),
        ({"status": "pending"}, TaskStatus.RUNNING, None),
        ({"status": "processing"}, TaskStatus.RUNNING, None),
        ({"status": "queued"}, TaskStatus.RUNNING, None),
        ({}, TaskStatus.RUNNING, None),
    ],
)
def test_get_task_maps_status_and_result_url(body: dict[str, Any], status: TaskStatus, url: str | None) -> None:
    snapshot = provider(answering(status_answer(body))).get_task(TASK_ID)
    assert snapshot.status is status
    assert snapshot.result_url == url
    assert snapshot.result_url_expires_at is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "failed", "message": "No face detected in source image"}, NoFaceDetected),
        ({"status": "FAILED", "error": {"code": "no_face_detected", "message": "x"}}, NoFaceDetected),
        ({"status": "failed", "error": {"code": "invalid_image_format", "message": "x"}}, InvalidImage),
        ({"status": "failed", "error": {"code": "face_count_mismatch", "message": "2 faces"}}, ProviderRejected),
        ({"status": "failed", "message": "GPU out of memory"}, ProviderTaskFailed),
        ({"status": "failed", "error": "worker died"}, ProviderTaskFailed),
        ({"status": "failed"}, ProviderTaskFailed),
    ],
)
def test_failed_task_is_classified(body: dict[str, Any], expected: type[PipelineError]) -> None:
    snapshot = provider(answering(status_answer(body))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert type(snapshot.error) is expected


def test_failed_task_message_is_kept() -> None:
    snapshot = provider(answering(status_answer({"status": "failed", "message": "GPU out of memory"}))).get_task("t")
    assert "GPU out of memory" in str(snapshot.error)


def test_task_status_error_envelope_about_the_images_is_a_failed_snapshot() -> None:
    snapshot = provider(answering(refused(400, "no_face_detected", "no face"))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, NoFaceDetected)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (refused(429, "rate_limit_exceeded"), ProviderUnavailable),
        (refused(500, "server_error"), ProviderUnavailable),
        (refused(404, "not_found"), ProviderRejected),
        (refused(401, "invalid_api_key"), ProviderRejected),
        (httpx.Response(200, text="nope"), ProviderUnavailable),
    ],
)
def test_get_task_read_failures_raise(response: httpx.Response, expected: type[PipelineError]) -> None:
    with pytest.raises(expected):
        provider(answering(response)).get_task(TASK_ID)


def test_adapter_is_polling_only_and_polls_slowly() -> None:
    adapter = provider(answering(created()))
    assert adapter.uses_webhook is False
    assert PROVIDERS["aiphotocraft"].poll_delays == (15.0, 1.5, 300.0)
    assert adapter.presented_secret({"x-webhook-secret": "s"}, {"token": "s"}) is None
    assert adapter.task_id_from_callback(b'{"task_id": "x"}') is None


# --- Rate-limit awareness ---------------------------------------------------------------------------------------------


def test_quota_is_unknown_before_any_answer() -> None:
    assert provider(answering(created())).quota_delay() is None


def test_rate_limit_headers_of_the_last_answer_are_recorded() -> None:
    adapter = provider(answering(status_answer({"status": "processing"}, **quota(50, 17, NOW + 900))))
    adapter.get_task(TASK_ID)
    assert (adapter.rate_limit.limit, adapter.rate_limit.remaining, adapter.rate_limit.reset_at) == (50, 17, NOW + 900)


@pytest.mark.parametrize(
    ("limit", "remaining", "delay"),
    [
        (50, 40, None),
        (50, 3, None),
        (50, 2, 900.0),
        (50, 1, 900.0),
        (50, 0, 900.0),
        (1000, 51, None),
        (1000, 50, 900.0),
        (10, 1, 900.0),
        (10, 2, None),
    ],
)
def test_quota_delay_waits_for_the_reset_when_at_most_5_percent_remains(
    limit: int, remaining: int, delay: float | None
) -> None:
    adapter = provider(answering(status_answer({"status": "processing"}, **quota(limit, remaining, NOW + 900))))
    adapter.get_task(TASK_ID)
    assert adapter.quota_delay() == delay


def test_quota_delay_ends_when_the_reset_time_passes() -> None:
    clock = Clock()
    adapter = provider(answering(status_answer({"status": "processing"}, **quota(50, 1, NOW + 60))), clock)
    adapter.get_task(TASK_ID)
    assert adapter.quota_delay() == 60.0
    clock.now += 61
    assert adapter.quota_delay() is None


def test_quota_is_recorded_from_error_answers_too() -> None:
    adapter = provider(answering(refused(500, "server_error", **quota(200, 5, NOW + 30))))
    with pytest.raises(ProviderUnavailable):
        adapter.get_task(TASK_ID)
    assert adapter.rate_limit.remaining == 5
    assert adapter.quota_delay() == 30.0


def test_spent_quota_refuses_calls_locally_until_the_reset() -> None:
    clock = Clock()
    capture = Capture(status_answer({"status": "processing"}, **quota(50, 0, NOW + 300)))
    adapter = provider(capture, clock)
    adapter.get_task(TASK_ID)

    with pytest.raises(ProviderUnavailable) as polling:
        adapter.get_task(TASK_ID)
    with pytest.raises(ProviderUnavailable) as creating:
        adapter.create_task(task(), None)
    assert polling.value.retry_after == creating.value.retry_after == 300.0
    assert len(capture.requests) == 1

    clock.now += 301
    adapter.get_task(TASK_ID)
    assert len(capture.requests) == 2


# --- Secrets ----------------------------------------------------------------------------------------------------------


def test_api_key_in_a_failed_task_message_is_redacted() -> None:
    body = {"status": "failed", "message": f"quota for {API_KEY} exceeded"}
    snapshot = provider(answering(status_answer(body))).get_task(TASK_ID)
    assert API_KEY not in str(snapshot.error)


def test_same_image_swap_posts_only_the_target_as_srcimage_to_swapfacesameimage() -> None:
    capture = Capture(created())
    provider(capture).create_task(task("same-image-swap"), None)
    request = capture.requests[0]
    assert str(request.url) == "https://aiapi.aiphotocraft.com/api/faceswap/swapfacesameimage"
    assert multipart_parts(request, with_content_type=False) == {"srcimage": ("target.jpg", TARGET.data)}
