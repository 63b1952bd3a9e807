"""The AILabAPI, CRUN and AIPhotoCraft adapters driven over loopback HTTP against their emulators.

Each adapter is the real one and each emulator follows providers.md, so these tests check that both sides read
the contract the same way: create → poll until done → download the result; a target without a face; injected
server errors; out of credit; CRUN's detect-then-swap multi-face flow and its callback; AIPhotoCraft's hourly
quota. Only the emulators run here, not the local stack.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from werkzeug.wrappers import Request, Response

from faceswap.errors import (
    NoFaceDetected,
    ProviderOutOfCredit,
    ProviderRejected,
    ProviderUnavailable,
)
from faceswap.images import prepare_image
from faceswap.model import TaskSnapshot, TaskStatus
from faceswap.ports import Provider, TaskInput, Webhook
from faceswap.providers.ailabapi import AILabAPIProvider
from faceswap.providers.aiphotocraft import AIPhotoCraftProvider
from faceswap.providers.crun import CRUNProvider
from faceswap_local.emulators.ailabapi import AILabAPIEmulator
from faceswap_local.emulators.ailabapi import Faults as AILabFaults
from faceswap_local.emulators.aiphotocraft import AIPhotoCraftEmulator
from faceswap_local.emulators.aiphotocraft import Faults as AIPhotoCraftFaults
from faceswap_local.emulators.crun import CRUNEmulator
from faceswap_local.emulators.crun import Faults as CRUNFaults
from faceswap_local.engine_service import engine_swap
from faceswap_local.loopback import LoopbackServer

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
API_KEY = "emulated-provider-key"
TIMEOUT = httpx.Timeout(10.0, connect=2.0)


@pytest.fixture(autouse=True)
def reset_faults() -> Iterator[None]:
    """Replaces the local stack's autouse fixture of ``conftest.py``: these tests need only the emulators."""
    yield


# --- Loopback helpers -------------------------------------------------------------------------------------------------


class Files(LoopbackServer):
    """A tiny loopback server: serves images as presigned URLs would, and records callbacks posted to it."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.callbacks: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(self._app, name="test-files")

    def put(self, name: str, data: bytes) -> str:
        """Serve ``data``; returns a presigned-looking URL (with a query string) for it."""
        self.images[name] = data
        return f"{self.url}/images/{name}?X-Amz-Expires=3600&X-Amz-Signature=0123abcd"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        if request.method == "GET" and request.path.startswith("/images/"):
            data = self.images.get(request.path.removeprefix("/images/"))
            response = Response(data, content_type="image/jpeg") if data else Response(b"", status=404)
        elif request.method == "POST" and request.path.startswith("/callbacks/"):
            self.callbacks.append((request.path, dict(request.args.items()), request.get_data()))
            response = Response(b"", status=202)
        else:
            response = Response(b"", status=404)
        return response(environ, start_response)

    def __enter__(self) -> Files:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def face(name: str) -> bytes:
    return (FACES / name).read_bytes()


def gradient() -> bytes:
    """A 320x240 colour gradient: a valid photo-sized image with no face in it."""
    x = np.linspace(0, 255, 320, dtype=np.uint8)
    y = np.linspace(0, 255, 240, dtype=np.uint8)
    pixels = np.stack([np.tile(x, (240, 1)), np.tile(y[:, None], (1, 320)), np.full((240, 320), 128, np.uint8)], -1)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG")
    return out.getvalue()


def task_input(
    adapter: Provider,
    target: bytes,
    swap: bytes,
    *,
    task: str = "face-swap",
    files: Files | None = None,
    **options: str,
) -> TaskInput:
    """A create's input as the submit step makes it: images prepared to the adapter's limits (and URLs)."""
    target_image = prepare_image(target, adapter.image_limits, name="target image")
    swap_image = prepare_image(swap, adapter.image_limits, name="swap image")
    urls = None
    if files is not None:
        stamp = time.monotonic_ns()
        target_url = files.put(f"{stamp}-target.{target_image.extension}", target_image.data)
        swap_url = files.put(f"{stamp}-swap.{swap_image.extension}", swap_image.data)

        def urls() -> tuple[str, str]:
            return target_url, swap_url

    return TaskInput(
        job_id="j" * 32,
        task=task,
        target_image=target_image,
        swap_image=swap_image,
        options=options,
        image_urls=urls,
    )


def wait_until_done(adapter: Provider, task_id: str, *, timeout: float = 20.0) -> TaskSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = adapter.get_task(task_id)
        if snapshot.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.1)


def download_image(url: str | None) -> Image.Image:
    assert url is not None
    response = httpx.get(url, timeout=TIMEOUT)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


# --- Fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    with Files() as server:
        yield server


@pytest.fixture(scope="module")
def ailab_server() -> Iterator[AILabAPIEmulator]:
    emulator = AILabAPIEmulator(api_key=API_KEY, swap_fn=engine_swap)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def crun_server() -> Iterator[CRUNEmulator]:
    emulator = CRUNEmulator(api_key=API_KEY, swap_fn=engine_swap)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def aiphotocraft_server() -> Iterator[AIPhotoCraftEmulator]:
    emulator = AIPhotoCraftEmulator(api_key=API_KEY, swap_fn=engine_swap)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def ailab(ailab_server: AILabAPIEmulator) -> AILabAPIEmulator:
    ailab_server.faults = AILabFaults(processing_seconds=0.05)
    return ailab_server


@pytest.fixture
def crun(crun_server: CRUNEmulator) -> CRUNEmulator:
    crun_server.faults = CRUNFaults(processing_seconds=0.05, detect_seconds=0.05)
    return crun_server


@pytest.fixture
def aiphotocraft(aiphotocraft_server: AIPhotoCraftEmulator) -> AIPhotoCraftEmulator:
    aiphotocraft_server.faults = AIPhotoCraftFaults(processing_seconds=0.05, hourly_limit=1000)
    aiphotocraft_server.reset_quota()
    return aiphotocraft_server


def ailab_adapter(http: httpx.Client, emulator: AILabAPIEmulator, *, key: str = API_KEY) -> AILabAPIProvider:
    return AILabAPIProvider(http, api_key=lambda: key, base_url=emulator.url, result_hosts=("127.0.0.1",))


def crun_adapter(http: httpx.Client, emulator: CRUNEmulator) -> CRUNProvider:
    return CRUNProvider(
        http, api_key=lambda: API_KEY, base_url=emulator.url, result_hosts=("127.0.0.1",), detect_interval=0.05
    )


def aiphotocraft_adapter(http: httpx.Client, emulator: AIPhotoCraftEmulator) -> AIPhotoCraftProvider:
    return AIPhotoCraftProvider(http, api_key=lambda: API_KEY, base_url=emulator.url, result_hosts=("127.0.0.1",))


# --- AILabAPI ---------------------------------------------------------------------------------------------------------


def test_ailabapi_swap_runs_to_a_downloadable_result(http: httpx.Client, ailab: AILabAPIEmulator) -> None:
    adapter = ailab_adapter(http, ailab)
    target = task_input(adapter, face("biden.jpg"), face("obama.jpg"))

    task_id = adapter.create_task(target, None)
    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.SUCCEEDED, snapshot.error
    assert snapshot.result_url_expires_at is not None
    assert download_image(snapshot.result_url).size == (target.target_image.width, target.target_image.height)
    recorded = ailab.tasks[task_id].request
    assert recorded.key_presented and "ailabapi-api-key" not in recorded.headers
    assert recorded.parts == ("image_target", "image_template")
    assert ailab.tasks[task_id].queries >= 1


def test_ailabapi_target_without_a_face_fails_with_no_face_detected(
    http: httpx.Client, ailab: AILabAPIEmulator
) -> None:
    adapter = ailab_adapter(http, ailab)
    task_id = adapter.create_task(task_input(adapter, gradient(), face("obama.jpg")), None)

    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, NoFaceDetected)


@pytest.mark.parametrize("status", [500, 503])
def test_ailabapi_server_error_on_create_is_provider_unavailable(
    http: httpx.Client, ailab: AILabAPIEmulator, status: int
) -> None:
    ailab.faults.create_errors, ailab.faults.create_error_status = 1, status
    adapter = ailab_adapter(http, ailab)
    with pytest.raises(ProviderUnavailable):
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)


def test_ailabapi_rate_limit_carries_retry_after(http: httpx.Client, ailab: AILabAPIEmulator) -> None:
    ailab.faults.create_errors, ailab.faults.create_error_status, ailab.faults.retry_after = 1, 429, 7
    adapter = ailab_adapter(http, ailab)
    with pytest.raises(ProviderUnavailable) as caught:
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)
    assert caught.value.retry_after == 7.0


def test_ailabapi_out_of_credit_is_provider_out_of_credit(http: httpx.Client, ailab: AILabAPIEmulator) -> None:
    ailab.faults.out_of_credit = True
    adapter = ailab_adapter(http, ailab)
    with pytest.raises(ProviderOutOfCredit):
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)


def test_ailabapi_wrong_key_is_rejected_without_repeating_it(http: httpx.Client, ailab: AILabAPIEmulator) -> None:
    adapter = ailab_adapter(http, ailab, key="not-the-key")
    with pytest.raises(ProviderRejected) as caught:
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)
    assert "not-the-key" not in str(caught.value)


# --- CRUN -------------------------------------------------------------------------------------------------------------


def test_crun_swap_from_urls_runs_to_a_result_and_calls_back_with_the_token(
    http: httpx.Client, crun: CRUNEmulator, files: Files
) -> None:
    adapter = crun_adapter(http, crun)
    webhook = Webhook(url=f"{files.url}/callbacks/crun/job-single", secret="per-job s3cret/+=")
    task_id = adapter.create_task(task_input(adapter, face("biden.jpg"), face("obama.jpg"), files=files), webhook)

    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.SUCCEEDED, snapshot.error
    download_image(snapshot.result_url)
    deadline = time.monotonic() + 5
    while not any(path.endswith("/job-single") for path, _, _ in files.callbacks) and time.monotonic() < deadline:
        time.sleep(0.05)
    _, query, body = next(c for c in files.callbacks if c[0].endswith("/job-single"))
    assert adapter.presented_secret({}, query) == webhook.secret
    assert adapter.task_id_from_callback(body) == task_id
    recorded = crun.tasks[task_id]
    assert recorded.model == "image-face-swap"
    assert recorded.request.key_presented and "x-api-key" not in recorded.request.headers
    assert set(recorded.input) == {"image_url", "new_face", "disable_safety_checker"}


def test_crun_target_without_a_face_fails_with_no_face_detected(
    http: httpx.Client, crun: CRUNEmulator, files: Files
) -> None:
    adapter = crun_adapter(http, crun)
    task_id = adapter.create_task(task_input(adapter, gradient(), face("obama.jpg"), files=files), None)

    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, NoFaceDetected)


@pytest.mark.parametrize(("status", "in_body"), [(500, False), (455, False), (500, True)])
def test_crun_server_error_on_create_is_provider_unavailable(
    http: httpx.Client, crun: CRUNEmulator, files: Files, status: int, in_body: bool
) -> None:
    crun.faults.create_errors, crun.faults.create_error_status, crun.faults.errors_in_body = 1, status, in_body
    adapter = crun_adapter(http, crun)
    calls = crun.create_calls
    with pytest.raises(ProviderUnavailable):
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg"), files=files), None)
    assert crun.create_calls == calls + 1


def test_crun_out_of_credit_is_provider_out_of_credit(http: httpx.Client, crun: CRUNEmulator, files: Files) -> None:
    crun.faults.out_of_credit = True
    adapter = crun_adapter(http, crun)
    with pytest.raises(ProviderOutOfCredit):
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg"), files=files), None)


def test_crun_multi_face_detects_then_swaps_the_chosen_face(
    http: httpx.Client, crun: CRUNEmulator, files: Files
) -> None:
    adapter = crun_adapter(http, crun)
    pair = face("obama_and_biden_side_by_side.jpg")
    task = task_input(adapter, pair, face("obama.jpg"), task="multi-face-swap", files=files, target_faces_index="1")

    task_id = adapter.create_task(task, None)
    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.SUCCEEDED, snapshot.error
    result = np.asarray(download_image(snapshot.result_url).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(io.BytesIO(task.target_image.data)).convert("RGB"), dtype=np.int16)
    assert result.shape == original.shape
    half = original.shape[1] // 2
    left_change = np.abs(result[:, :half] - original[:, :half]).mean()
    right_change = np.abs(result[:, half:] - original[:, half:]).mean()
    assert right_change > 4 * max(left_change, 0.1)  # face 1 (the right-hand one) was replaced
    recorded = crun.tasks[task_id]
    assert recorded.model == "image-face-swap-multi"
    (detection,) = [d for d in crun.detections.values() if d.detect_id == recorded.input["detect_id"]]
    assert len(detection.boxes) == 2
    assert recorded.input["image_url"] == detection.image_url
    assert [f["face_id"] for f in recorded.input["faces"]] == [1]


def test_crun_multi_face_on_a_faceless_image_is_no_face_detected(
    http: httpx.Client, crun: CRUNEmulator, files: Files
) -> None:
    adapter = crun_adapter(http, crun)
    calls = crun.create_calls
    with pytest.raises(NoFaceDetected):
        adapter.create_task(
            task_input(adapter, gradient(), face("obama.jpg"), task="multi-face-swap", files=files), None
        )
    assert crun.create_calls == calls


# --- AIPhotoCraft -----------------------------------------------------------------------------------------------------


def test_aiphotocraft_swap_runs_to_a_downloadable_result(
    http: httpx.Client, aiphotocraft: AIPhotoCraftEmulator
) -> None:
    adapter = aiphotocraft_adapter(http, aiphotocraft)
    target = task_input(adapter, face("biden.jpg"), face("obama.jpg"))

    task_id = adapter.create_task(target, None)
    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.SUCCEEDED, snapshot.error
    assert download_image(snapshot.result_url).size == (target.target_image.width, target.target_image.height)
    recorded = aiphotocraft.tasks[task_id]
    assert recorded.endpoint == "basicswap"
    assert recorded.request.key_presented and "x-api-key" not in recorded.request.headers
    assert set(recorded.request.parts) == {"srcimage", "targetimage", "enhance"}
    assert adapter.rate_limit.limit == 1000 and adapter.rate_limit.remaining is not None


def test_aiphotocraft_couple_swap_exchanges_two_faces(http: httpx.Client, aiphotocraft: AIPhotoCraftEmulator) -> None:
    adapter = aiphotocraft_adapter(http, aiphotocraft)
    pair = face("obama_and_biden_side_by_side.jpg")
    task = task_input(adapter, pair, pair, task="multi-face-swap", swap_faces_index="1,0", target_faces_index="0,1")

    task_id = adapter.create_task(task, None)
    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.SUCCEEDED, snapshot.error
    download_image(snapshot.result_url)
    assert aiphotocraft.tasks[task_id].endpoint == "faceswap2"
    assert aiphotocraft.tasks[task_id].request.form["swap_index"] == "2,1"


def test_aiphotocraft_target_without_a_face_fails_with_no_face_detected(
    http: httpx.Client, aiphotocraft: AIPhotoCraftEmulator
) -> None:
    adapter = aiphotocraft_adapter(http, aiphotocraft)
    task_id = adapter.create_task(task_input(adapter, gradient(), face("obama.jpg")), None)

    snapshot = wait_until_done(adapter, task_id)

    assert snapshot.status is TaskStatus.FAILED
    assert isinstance(snapshot.error, NoFaceDetected)


def test_aiphotocraft_server_error_on_create_is_provider_unavailable(
    http: httpx.Client, aiphotocraft: AIPhotoCraftEmulator
) -> None:
    aiphotocraft.faults.create_errors = 1
    adapter = aiphotocraft_adapter(http, aiphotocraft)
    with pytest.raises(ProviderUnavailable):
        adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)


def test_aiphotocraft_fourth_call_of_a_3_per_hour_quota_is_unavailable_until_the_reset(
    http: httpx.Client, aiphotocraft: AIPhotoCraftEmulator
) -> None:
    aiphotocraft.faults.hourly_limit = 3
    aiphotocraft.faults.processing_seconds = 5
    adapter = aiphotocraft_adapter(http, aiphotocraft)
    task_id = adapter.create_task(task_input(adapter, face("obama.jpg"), face("obama.jpg")), None)
    adapter.get_task(task_id)
    adapter.get_task(task_id)  # polls count: this was the third call of the hour
    assert adapter.rate_limit.remaining == 0
    quota_delay = adapter.quota_delay()
    assert quota_delay is not None and 3500 < quota_delay <= 3600

    with pytest.raises(ProviderUnavailable) as refused_locally:
        adapter.get_task(task_id)
    requests = len(aiphotocraft.requests)
    with pytest.raises(ProviderUnavailable) as refused_remotely:
        aiphotocraft_adapter(http, aiphotocraft).get_task(task_id)  # a fresh adapter has seen no quota yet

    for caught in (refused_locally, refused_remotely):
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert len(aiphotocraft.requests) == requests + 1
    assert aiphotocraft.requests[-1].limited
