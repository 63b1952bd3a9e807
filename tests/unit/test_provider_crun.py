"""CRUN adapter against providers.md §3, over httpx.MockTransport (no network)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from mock_http import Handler, adapter, answering, task_input

from faceswap.errors import (
    NoFaceDetected,
    PipelineError,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    ReferenceFaceNotFound,
    SubmitOutcomeUnknown,
)
from faceswap.images import PreparedImage
from faceswap.model import TaskStatus
from faceswap.ports import FaceInput, TaskInput, Webhook
from faceswap.providers.crun import CRUNProvider
from faceswap.providers.registry import PROVIDERS

API_KEY = "crun-k-secret"
BASE_URL = "https://api.crun.ai"
TASK_ID = "task_12345678"
TARGET_URL = "https://inputs.s3.amazonaws.com/prepared/job/target.jpg?X-Amz-Signature=abc&X-Amz-Expires=3600"
SWAP_URL = "https://inputs.s3.amazonaws.com/prepared/job/swap.png?X-Amz-Signature=def&X-Amz-Expires=3600"
IMAGE = PreparedImage(b"\xff\xd8\xff jpeg", "image/jpeg", 64, 64)
WEBHOOK = Webhook(url="https://api.example.com/callbacks/crun/job-1", secret="per-job s3cret/+=")
RESULT_URL = "https://file.crun.ai/results/result.png?expires=1700000000&sig=x"


def provider(handler: Handler, *, sleeps: list[float] | None = None, attempts: int = 10) -> CRUNProvider:
    return adapter(
        "crun",
        handler,
        api_key=API_KEY,
        result_hosts=("file.crun.ai",),
        detect_attempts=attempts,
        sleep=(sleeps.append if sleeps is not None else lambda seconds: None),
    )


def task(name: str = "face-swap", *, urls: bool = True, **options: Any) -> TaskInput:
    urls_of = (lambda: (TARGET_URL, SWAP_URL)) if urls else None
    return task_input(name, target=IMAGE, swap=IMAGE, image_urls=urls_of, **options)


def ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "message": "success", "data": data})


def created(task_id: Any = TASK_ID) -> httpx.Response:
    return ok({"task_id": task_id})


def refused(
    status: int, message: str = "refused", *, in_body: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(200 if in_body else status, headers=headers, json={"code": status, "message": message})


def task_info(status: str, result: Any = None) -> httpx.Response:
    return ok(
        {
            "task_id": TASK_ID,
            "provider": "crun",
            "model_version": "image-face-swap",
            "status": status,
            "param": {"model": "image-face-swap", "callback_url": "https://x/?token=t", "input": {}},
            "create_at": "2026-01-01T00:00:00Z",
            "result": result,
            "source": "api",
        }
    )


class Router:
    """Answers by path from queues of responses, recording every request."""

    def __init__(self, **routes: list[httpx.Response]) -> None:
        self.routes = {path.replace("_", "-"): list(responses) for path, responses in routes.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        name = request.url.path.rsplit("/", 1)[1]
        queue = self.routes[name]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def to(self, name: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/" + name)]


def detection(faces: list[dict[str, Any]], *, detect_id: str = "det_1") -> Router:
    return Router(
        detect_face_image=[ok({"detect_task_id": "dt_1"})],
        detect_face_result=[
            ok({"status": "starting", "result": None}),
            ok({"status": "processing", "result": None}),
            ok({"status": "succeeded", "result": {"id": detect_id, "faces": faces}}),
        ],
        CreateTask=[created()],
    )


TWO_FACES = [{"id": 0, "link": "https://file.crun.ai/f0.png"}, {"id": 1, "link": "https://file.crun.ai/f1.png"}]


# --- Create task: single face -----------------------------------------------------------------------------------------


def test_create_posts_json_to_create_task_with_api_key_header() -> None:
    router = Router(CreateTask=[created()])
    provider(router).create_task(task(), WEBHOOK)
    (request,) = router.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.crun.ai/api/v1/client/job/CreateTask"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"


def test_single_face_body_is_image_face_swap_with_urls_and_tokened_callback() -> None:
    router = Router(CreateTask=[created()])
    provider(router).create_task(task(), WEBHOOK)
    body = json.loads(router.requests[0].content)
    callback = body.pop("callback_url")
    assert body == {
        "model": "image-face-swap",
        "input": {"image_url": TARGET_URL, "new_face": SWAP_URL, "disable_safety_checker": False},
    }
    parts = urlsplit(callback)
    assert callback.startswith(WEBHOOK.url + "?")
    assert parse_qs(parts.query) == {"token": [WEBHOOK.secret]}


def test_callback_url_with_a_query_already_appends_the_token() -> None:
    router = Router(CreateTask=[created()])
    provider(router).create_task(task(), Webhook(url="https://api.example.com/cb?stage=dev", secret="s"))
    callback = json.loads(router.requests[0].content)["callback_url"]
    assert parse_qs(urlsplit(callback).query) == {"stage": ["dev"], "token": ["s"]}


def test_create_without_webhook_sends_no_callback_url() -> None:
    router = Router(CreateTask=[created()])
    provider(router).create_task(task(), None)
    assert "callback_url" not in json.loads(router.requests[0].content)


def test_create_returns_task_id() -> None:
    assert provider(answering(created())).create_task(task(), WEBHOOK) == TASK_ID


def test_create_without_image_urls_is_rejected_without_calling_crun() -> None:
    router = Router(CreateTask=[created()])
    with pytest.raises(ProviderRejected, match="URLs"):
        provider(router).create_task(task(urls=False), WEBHOOK)
    assert router.requests == []


def test_image_urls_are_asked_for_once_per_create() -> None:
    calls: list[int] = []

    def urls() -> tuple[str, str]:
        calls.append(1)
        return TARGET_URL, SWAP_URL

    single = TaskInput(
        job_id="b" * 32, task="face-swap", target_image=IMAGE, swap_image=IMAGE, options={}, image_urls=urls
    )
    provider(answering(created())).create_task(single, WEBHOOK)
    assert calls == [1]


def test_unknown_task_is_refused_without_calling_crun() -> None:
    router = Router(CreateTask=[created()])
    with pytest.raises(ProviderRejected):
        provider(router).create_task(task("video-face-swap"), WEBHOOK)
    assert router.requests == []


# --- Create task: multi face ------------------------------------------------------------------------------------------


def test_multi_face_detects_on_the_target_url_then_creates_with_detect_id() -> None:
    router = detection(TWO_FACES, detect_id="det_abc")
    sleeps: list[float] = []
    task_id = provider(router, sleeps=sleeps).create_task(task("multi-face-swap", target_faces_index="1"), WEBHOOK)

    assert task_id == TASK_ID
    (detect,) = router.to("detect-face-image")
    assert detect.method == "POST"
    assert str(detect.url) == "https://api.crun.ai/api/v1/client/job/detect-face-image"
    assert json.loads(detect.content) == {"image_url": TARGET_URL}
    assert detect.headers["x-api-key"] == API_KEY
    results = router.to("detect-face-result")
    assert len(results) == 3
    assert all(r.method == "GET" and r.url.params["detect_task_id"] == "dt_1" for r in results)
    assert sleeps == [1.05] * 4, "a window after each answer: 3 reads, then the create"
    body = json.loads(router.to("CreateTask")[0].content)
    assert body["model"] == "image-face-swap-multi"
    assert body["input"] == {
        "detect_id": "det_abc",
        "image_url": TARGET_URL,
        "faces": [{"face_id": 1, "target": SWAP_URL}],
        "disable_safety_checker": False,
    }
    assert parse_qs(urlsplit(body["callback_url"]).query) == {"token": [WEBHOOK.secret]}


@pytest.mark.parametrize(("option", "face_ids"), [(None, [0]), ("0", [0]), ("0,1", [0, 1]), ("1,0", [1, 0])])
def test_multi_face_swaps_onto_each_target_face_index(option: str | None, face_ids: list[int]) -> None:
    router = detection(TWO_FACES)
    options: dict[str, Any] = {"target_faces_index": option} if option is not None else {}
    provider(router).create_task(task("multi-face-swap", **options), WEBHOOK)
    faces = json.loads(router.to("CreateTask")[0].content)["input"]["faces"]
    assert faces == [{"face_id": i, "target": SWAP_URL} for i in face_ids]


def test_multi_face_uses_the_face_ids_crun_detected() -> None:
    faces = [{"id": "f-left", "link": "https://x/l.png"}, {"id": "f-right", "link": "https://x/r.png"}]
    router = detection(faces)
    provider(router).create_task(task("multi-face-swap", target_faces_index="1"), WEBHOOK)
    assert json.loads(router.to("CreateTask")[0].content)["input"]["faces"][0]["face_id"] == "f-right"


def test_multi_face_index_beyond_detected_faces_is_rejected_before_create() -> None:
    router = detection(TWO_FACES)
    with pytest.raises(ProviderRejected, match="out of range"):
        provider(router).create_task(task("multi-face-swap", target_faces_index="2"), WEBHOOK)
    assert router.to("CreateTask") == []


def test_multi_face_with_a_non_zero_swap_face_is_rejected_without_calls() -> None:
    router = detection(TWO_FACES)
    with pytest.raises(ProviderRejected, match="swap_faces_index"):
        provider(router).create_task(task("multi-face-swap", swap_faces_index="1", target_faces_index="0"), WEBHOOK)
    assert router.requests == []


def test_multi_face_detection_without_faces_is_no_face_detected() -> None:
    router = detection([])
    with pytest.raises(NoFaceDetected):
        provider(router).create_task(task("multi-face-swap"), WEBHOOK)
    assert router.to("CreateTask") == []


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"code": 422, "message": "no face detected in image"}, NoFaceDetected),
        ({"code": 500, "message": "detector crashed"}, ProviderTaskFailed),
        (None, ProviderTaskFailed),
    ],
)
def test_multi_face_failed_detection_is_classified(result: Any, expected: type[PipelineError]) -> None:
    router = Router(
        detect_face_image=[ok({"detect_task_id": "dt_1"})],
        detect_face_result=[ok({"status": "FAILED", "result": result})],
        CreateTask=[created()],
    )
    with pytest.raises(expected):
        provider(router).create_task(task("multi-face-swap"), WEBHOOK)
    assert router.to("CreateTask") == []


def test_multi_face_detection_that_never_finishes_is_unavailable_after_bounded_tries() -> None:
    router = Router(
        detect_face_image=[ok({"detect_task_id": "dt_1"})],
        detect_face_result=[ok({"status": "processing", "result": None})],
        CreateTask=[created()],
    )
    sleeps: list[float] = []
    with pytest.raises(ProviderUnavailable, match="did not finish"):
        provider(router, sleeps=sleeps, attempts=4).create_task(task("multi-face-swap"), WEBHOOK)
    assert len(router.to("detect-face-result")) == 4
    assert sleeps == [1.05] * 4
    assert router.to("CreateTask") == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (refused(402, "insufficient credits"), ProviderOutOfCredit),
        (refused(500), ProviderUnavailable),
        (refused(401), ProviderRejected),
        (ok({}), ProviderUnavailable),
    ],
)
def test_multi_face_detection_start_failures(answer: httpx.Response, expected: type[PipelineError]) -> None:
    router = Router(detect_face_image=[answer], detect_face_result=[ok({})], CreateTask=[created()])
    with pytest.raises(expected):
        provider(router).create_task(task("multi-face-swap"), WEBHOOK)
    assert router.to("CreateTask") == []


def test_multi_face_detection_read_timeout_is_unavailable_since_nothing_is_paid_yet() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderUnavailable):
        provider(handler).create_task(task("multi-face-swap"), WEBHOOK)


# --- Create task: classifying answers ---------------------------------------------------------------------------------

CREATE_CODES = [
    (401, ProviderRejected),
    (402, ProviderOutOfCredit),
    (404, ProviderRejected),
    (422, ProviderRejected),
    (429, ProviderUnavailable),
    (455, ProviderUnavailable),
    (500, ProviderUnavailable),
    (501, ProviderTaskFailed),
    (505, ProviderRejected),
]


@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
@pytest.mark.parametrize(("code", "expected"), CREATE_CODES)
def test_create_classifies_http_status_and_body_code(code: int, expected: type[PipelineError], in_body: bool) -> None:
    router = Router(CreateTask=[refused(code, in_body=in_body)])
    with pytest.raises(expected) as caught:
        provider(router).create_task(task(), WEBHOOK)
    assert type(caught.value) is expected
    assert len(router.requests) == 1  # CreateTask is never retried by the adapter


def test_generation_failed_is_retryable_and_feature_disabled_is_not() -> None:
    with pytest.raises(ProviderTaskFailed) as failed:
        provider(answering(refused(501))).create_task(task(), WEBHOOK)
    with pytest.raises(ProviderRejected) as disabled:
        provider(answering(refused(505))).create_task(task(), WEBHOOK)
    assert failed.value.retryable
    assert not disabled.value.retryable


@pytest.mark.parametrize("code", [429, 455])
def test_create_honours_retry_after(code: int) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        provider(answering(refused(code, headers={"Retry-After": "30"}))).create_task(task(), WEBHOOK)
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(created(task_id=""), id="empty"),
        pytest.param(created(task_id=None), id="null"),
        pytest.param(ok(None), id="data-null"),
        pytest.param(httpx.Response(200, text="<html>ok</html>"), id="not-json"),
    ],
)
def test_create_success_without_task_id_is_submit_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(SubmitOutcomeUnknown):
        provider(answering(response)).create_task(task(), WEBHOOK)


# --- Get task ---------------------------------------------------------------------------------------------------------


def test_get_task_reads_task_info_with_task_id_and_key() -> None:
    router = Router(TaskInfo=[task_info("running")])
    provider(router).get_task(TASK_ID)
    (request,) = router.requests
    assert request.method == "GET"
    assert str(request.url) == f"https://api.crun.ai/api/v1/client/job/TaskInfo?task_id={TASK_ID}"
    assert request.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("pending", TaskStatus.QUEUED),
        ("PENDING", TaskStatus.QUEUED),
        ("running", TaskStatus.RUNNING),
        ("Running", TaskStatus.RUNNING),
        ("success", TaskStatus.SUCCEEDED),
        ("SUCCESS", TaskStatus.SUCCEEDED),
        ("succeeded", TaskStatus.SUCCEEDED),
        ("completed", TaskStatus.SUCCEEDED),
        ("failed", TaskStatus.FAILED),
        ("Failed", TaskStatus.FAILED),
        ("mystery", TaskStatus.RUNNING),
        ("", TaskStatus.RUNNING),
    ],
)
def test_get_task_maps_status_case_insensitively(status: str, expected: TaskStatus) -> None:
    snapshot = provider(answering(task_info(status, {"media_urls": [RESULT_URL]}))).get_task(TASK_ID)
    assert snapshot.status is expected
    assert snapshot.task_id == TASK_ID


def test_succeeded_task_result_url_is_the_first_media_url_with_unknown_expiry() -> None:
    result = {"media_urls": [RESULT_URL, "https://file.crun.ai/other.png"]}
    snapshot = provider(answering(task_info("success", result))).get_task(TASK_ID)
    assert snapshot.result_url == RESULT_URL
    assert snapshot.result_url_expires_at is None


@pytest.mark.parametrize("result", [None, {}, {"media_urls": []}, {"media_urls": [None]}, {"media_urls": "x"}])
def test_succeeded_task_without_media_urls_has_no_result_url(result: Any) -> None:
    snapshot = provider(answering(task_info("success", result))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.SUCCEEDED
    assert snapshot.result_url is None


@pytest.mark.parametrize(
    ("result", "expected", "retryable"),
    [
        ({"code": 422, "message": "No face detected in the target image"}, NoFaceDetected, False),
        ({"code": 501, "message": "generation failed"}, ProviderTaskFailed, True),
        ({"code": 422, "message": "image_url could not be downloaded"}, ProviderTaskFailed, False),
        ({"code": 402, "message": "insufficient credits"}, ProviderOutOfCredit, False),
        (None, ProviderTaskFailed, True),
    ],
)
def test_failed_task_reads_result_code_and_message(result: Any, expected: type[PipelineError], retryable: bool) -> None:
    snapshot = provider(answering(task_info("failed", result))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert type(snapshot.error) is expected
    assert isinstance(snapshot.error, PipelineError)
    assert snapshot.error.retryable is retryable


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(refused(429), ProviderUnavailable, id="429"),
        pytest.param(refused(455), ProviderUnavailable, id="455"),
        pytest.param(refused(500), ProviderUnavailable, id="500"),
        pytest.param(refused(500, in_body=True), ProviderUnavailable, id="500-in-body"),
        pytest.param(refused(404, "task not found"), ProviderRejected, id="404"),
        pytest.param(refused(401), ProviderRejected, id="401"),
        pytest.param(httpx.Response(200, text="nope"), ProviderUnavailable, id="unreadable"),
        pytest.param(ok(None), ProviderUnavailable, id="data-null"),
    ],
)
def test_get_task_read_failures_raise(response: httpx.Response, expected: type[PipelineError]) -> None:
    with pytest.raises(expected):
        provider(answering(response)).get_task(TASK_ID)


def test_get_task_generation_failed_code_is_a_failed_snapshot() -> None:
    snapshot = provider(answering(refused(501, "generation failed"))).get_task(TASK_ID)
    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, ProviderTaskFailed)


# --- Callbacks --------------------------------------------------------------------------------------------------------


def test_presented_secret_is_the_token_query_parameter() -> None:
    adapter = provider(answering(created()))
    assert adapter.presented_secret({}, {"token": "abc"}) == "abc"
    assert adapter.presented_secret({"x-webhook-secret": "abc"}, {}) is None
    assert adapter.presented_secret({}, {"other": "abc"}) is None


def test_adapter_uses_the_callback_with_polling_as_safety_net() -> None:
    adapter = provider(answering(created()))
    assert adapter.uses_webhook is True
    assert PROVIDERS["crun"].poll_delays == (30.0, 1.5, 120.0)
    assert adapter.image_limits.formats == ("JPEG", "PNG", "WEBP")


@pytest.mark.parametrize(
    "body",
    [
        {"task_id": TASK_ID, "status": "success"},
        {"code": 200, "data": {"task_id": TASK_ID, "status": "success"}},
        {"data": {"task_id": TASK_ID}, "task_id": "top-level-loses"},
        {"data": {"status": "success"}, "task_id": TASK_ID},
        {"data": "text", "task_id": TASK_ID},
    ],
)
def test_task_id_from_callback_tries_data_then_top_level(body: dict[str, Any]) -> None:
    assert provider(answering(created())).task_id_from_callback(json.dumps(body).encode()) == TASK_ID


@pytest.mark.parametrize(
    "body",
    [b'{"task_id": 5}', b'{"data": {"task_id": 5}}'],
)
def test_task_id_from_callback_is_none_for_a_task_id_that_is_not_text(body: bytes) -> None:
    assert provider(answering(created())).task_id_from_callback(body) is None


# --- Secrets ----------------------------------------------------------------------------------------------------------


def test_api_key_in_a_failed_task_message_is_redacted() -> None:
    snapshot = provider(answering(task_info("failed", {"code": 501, "message": f"bad key {API_KEY}"}))).get_task(
        TASK_ID
    )
    assert API_KEY not in str(snapshot.error)


def test_create_accepts_any_2xx_whose_body_code_is_200() -> None:
    response = httpx.Response(201, json={"code": 200, "message": "success", "data": {"task_id": TASK_ID}})
    assert provider(answering(response)).create_task(task(), WEBHOOK) == TASK_ID


# --- Face maps (detect-crop) ------------------------------------------------------------------------------------------


def face_map_task(match: Any) -> TaskInput:
    face = FaceInput((0, 0, 10, 10), IMAGE, IMAGE)
    return TaskInput(
        job_id="job-1",
        task="face-swap",
        target_image=IMAGE,
        swap_image=IMAGE,
        options={},
        image_urls=lambda: (TARGET_URL, SWAP_URL),
        faces=(face,),
        face_urls=lambda: ("https://inputs.s3.amazonaws.com/prepared/job/face-0.png?sig",),
        match_crops=match,
    )


def test_a_face_map_sends_the_face_id_whose_crop_the_matcher_chose() -> None:
    router = detection(
        [{"id": "a", "link": "https://file.crun.ai/f0.png"}, {"id": "b", "link": "https://file.crun.ai/f1.png"}]
    )
    router.routes["f0.png"] = [httpx.Response(200, content=b"crop-0")]
    router.routes["f1.png"] = [httpx.Response(200, content=b"crop-1")]
    seen: list[list[bytes]] = []

    def match(crops: list[bytes]) -> list[int]:
        seen.append(list(crops))
        return [1]

    assert provider(router).create_task(face_map_task(match), WEBHOOK) == TASK_ID
    assert seen == [[b"crop-0", b"crop-1"]]
    body = json.loads(router.to("CreateTask")[0].content)
    assert body["model"] == "image-face-swap-multi" and body["input"]["detect_id"] == "det_1"
    assert body["input"]["image_url"] == TARGET_URL  # the URL detection ran on
    assert body["input"]["faces"] == [
        {"face_id": "b", "target": "https://inputs.s3.amazonaws.com/prepared/job/face-0.png?sig"}
    ]
    assert all("x-api-key" not in r.headers for r in router.requests if r.url.path.endswith(".png"))


def test_a_face_crop_outside_the_result_hosts_is_never_read() -> None:
    router = detection([{"id": 0, "link": "https://metadata.internal/latest"}])
    with pytest.raises(ProviderUnavailable, match="outside its result hosts"):
        provider(router).create_task(face_map_task(lambda crops: [0]), WEBHOOK)
    assert router.to("CreateTask") == [] and router.to("latest") == []


def test_a_face_map_whose_crops_match_no_one_creates_nothing() -> None:
    router = detection([{"id": 0, "link": "https://file.crun.ai/f0.png"}])
    router.routes["f0.png"] = [httpx.Response(200, content=b"crop-0")]

    def match(crops: list[bytes]) -> list[int]:
        raise ReferenceFaceNotFound("no one")

    with pytest.raises(ReferenceFaceNotFound):
        provider(router).create_task(face_map_task(match), WEBHOOK)
    assert router.to("CreateTask") == []
