"""Every provider through the whole pipeline on the local stack: jobs, error classification, multi-face, rate limits."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest
from conftest import FACES, Stack
from PIL import Image

from faceswap.aws.dynamodb import job_from_item
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_engine import SAME_PERSON_THRESHOLD, decode_image, face_descriptor, face_distance
from faceswap_local.app import EMULATED, LocalStack

OTHERS = [spec.name for spec in EMULATED if spec.name != "piapi"]
"""Every emulated provider from the registry but PiAPI, which the pipeline suite runs through everything."""
POLLED = [spec.name for spec in EMULATED if not spec.adapter_class().uses_webhook]
"""The emulated providers that never call back."""


def run_manifest(stack: Stack, name: str, target: bytes, swap: str = "obama.jpg", **fields: object) -> Job:
    key = f"photos/providers/{name}.jpg"
    stack.upload(key, target)
    stack.upload(f"faces/{swap}", (FACES / swap).read_bytes())
    manifest = {"target_image": {"s3_key": key}, "swap_image": {"s3_key": f"faces/{swap}"}, **fields}
    stack.upload(f"jobs/{name}.json", json.dumps(manifest).encode())
    return stack.wait_for(key, timeout=60)


def gradient() -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((320, 240)).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize("provider", OTHERS)
def test_provider_runs_a_job_from_upload_to_succeeded(stack: Stack, provider: str) -> None:
    job = run_manifest(stack, f"e2e-{provider}", (FACES / "biden.jpg").read_bytes(), provider=provider)

    assert job.state is JobState.SUCCEEDED, job.error
    assert job.provider == provider and job.provider_task_id
    emulator = stack.local.emulators[provider]
    assert any(t.task_id == job.provider_task_id for t in emulator.tasks.values())
    result = stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read()  # type: ignore[index]
    swapped = face_descriptor(decode_image(result))
    obama = face_descriptor(decode_image((FACES / "obama.jpg").read_bytes()))
    assert face_distance(swapped, obama) < SAME_PERSON_THRESHOLD


@pytest.mark.parametrize("provider", OTHERS)
def test_provider_no_face_is_a_terminal_failure(stack: Stack, provider: str) -> None:
    job = run_manifest(stack, f"no-face-{provider}", gradient(), provider=provider)

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["retryable"] is False, job.error
    assert job.error["code"] in ("no_face_detected", "provider_task_failed", "provider_rejected"), job.error


@pytest.mark.parametrize("provider", OTHERS)
def test_provider_expired_result_is_a_retryable_failure(stack: Stack, provider: str) -> None:
    stack.local.emulators[provider].faults.result_expired = True
    try:
        job = run_manifest(stack, f"expired-{provider}", (FACES / "biden.jpg").read_bytes(), provider=provider)
    finally:
        stack.local.emulators[provider].faults.result_expired = False

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "result_expired" and job.error["retryable"] is True


@pytest.mark.parametrize("provider", POLLED)
def test_polling_provider_completes_without_any_webhook(stack: Stack, provider: str) -> None:
    callbacks_before = stack.local.runtime.functions["CallbackFunction"].invocations  # type: ignore[union-attr]
    job = run_manifest(
        stack, f"polling-{provider}", (FACES / "obama.jpg").read_bytes(), swap="biden.jpg", provider=provider
    )

    assert job.state is JobState.SUCCEEDED, job.error
    assert stack.local.runtime.functions["CallbackFunction"].invocations == callbacks_before  # type: ignore[union-attr]


@pytest.mark.parametrize("provider", ["piapi", "crun"])
def test_multi_face_job_swaps_only_the_face_asked_for(stack: Stack, provider: str) -> None:
    pair = (FACES / "obama_and_biden_side_by_side.jpg").read_bytes()
    job = run_manifest(
        stack,
        f"multi-{provider}",
        pair,
        swap="biden.jpg",
        provider=provider,
        task="multi-face-swap",
        options={"swap_faces_index": "0", "target_faces_index": "0"},
    )

    assert job.state is JobState.SUCCEEDED, job.error
    result = decode_image(stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read())  # type: ignore[index]
    original = decode_image(pair)
    biden = face_descriptor(decode_image((FACES / "biden.jpg").read_bytes()))
    assert face_distance(face_descriptor(result, 0), biden) < SAME_PERSON_THRESHOLD, "face 0 now has Biden's face"
    assert face_distance(face_descriptor(result, 0), face_descriptor(original, 0)) > 0.4, "face 0 changed"
    assert face_distance(face_descriptor(result, 1), face_descriptor(original, 1)) < 0.1, "face 1 is untouched"


def test_same_image_swap_exchanges_the_two_faces_of_the_target(stack: Stack) -> None:
    pair = (FACES / "obama_and_biden_side_by_side.jpg").read_bytes()
    key = "photos/providers/same-image-swap.jpg"
    stack.upload(key, pair)
    manifest = {"target_image": {"s3_key": key}, "provider": "aiphotocraft", "task": "same-image-swap"}
    stack.upload("jobs/same-image-swap.json", json.dumps(manifest).encode())
    job = stack.wait_for(key, timeout=60)

    assert job.state is JobState.SUCCEEDED, job.error
    task = stack.local.emulators["aiphotocraft"].tasks[job.provider_task_id]
    assert task.endpoint == "swapfacesameimage" and set(task.request.parts) == {"srcimage"}
    result = decode_image(stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read())  # type: ignore[index]
    original = decode_image(pair)
    left, right = face_descriptor(original, 0), face_descriptor(original, 1)
    assert face_distance(face_descriptor(result, 0), right) < SAME_PERSON_THRESHOLD, "the left face is now the right"
    assert face_distance(face_descriptor(result, 1), left) < SAME_PERSON_THRESHOLD, "the right face is now the left"
    assert face_distance(face_descriptor(result, 0), left) > face_distance(face_descriptor(result, 0), right)


@pytest.fixture(scope="module")
def busy_stack() -> Iterator[LocalStack]:
    """A stack whose PiAPI ceiling is 5 calls/s, with checks late enough that a job needs 2 PiAPI calls."""
    local = LocalStack(
        parameters={"DefaultProvider": "piapi", "ProviderRateLimits": json.dumps({"piapi": {"per_second": 5}})},
        config={"POLL_DELAYS": json.dumps({"piapi": [60, 1.5, 120]})},
    ).start()
    try:
        yield local
    finally:
        local.stop()


UPLOADS = 60
"""Two PiAPI requests each (the create, the callback's read): 120 requests, 24 s at the ceiling at best."""


@pytest.mark.timeout(600)
def test_sixty_uploads_at_once_never_exceed_five_requests_per_second(busy_stack: LocalStack) -> None:
    """The submit function at its MaximumConcurrency (5 environments) under PiAPI's ceiling: messages over it are
    handed back through their visibility (sqs:ChangeMessageVisibility), and no second at the provider holds more
    than 5 requests."""
    info = busy_stack.info()
    s3, ddb = busy_stack.client("s3"), busy_stack.client("dynamodb")
    small = io.BytesIO()
    Image.open(FACES / "biden.jpg").resize((243, 551)).save(small, format="JPEG")
    s3.put_object(Bucket=info["input_bucket"], Key="faces/obama.jpg", Body=(FACES / "obama.jpg").read_bytes())
    started = time.time()
    for i in range(UPLOADS):
        s3.put_object(Bucket=info["input_bucket"], Key=f"incoming/obama/load/{i:03d}.jpg", Body=small.getvalue())

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        jobs = [job_from_item(i) for i in ddb.scan(TableName=info["jobs_table"], ConsistentRead=True)["Items"]]
        if len(jobs) == UPLOADS and all(job.terminal for job in jobs):
            break
        time.sleep(1)

    assert len(jobs) == UPLOADS and all(job.state is JobState.SUCCEEDED for job in jobs), [
        (j.state, j.error) for j in jobs if j.state is not JobState.SUCCEEDED
    ][:3]
    times = sorted(t for t in busy_stack.emulators["piapi"].request_times if t >= started)
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    print(f"{len(times)} PiAPI requests in {times[-1] - times[0]:.1f} s; busiest one-second window: {busiest}")
    assert len(times) >= 2 * UPLOADS
    assert busiest <= 5
    assert busy_stack.runtime is not None and busy_stack.runtime.functions["SubmitFunction"].peak_concurrency > 1


def test_failover_from_a_provider_answering_503_to_the_next(stack: Stack) -> None:
    ailab = stack.local.emulators["ailabapi"]
    ailab.faults.create_errors, ailab.faults.create_error_status = 1, 503
    try:
        job = run_manifest(stack, "failover", (FACES / "biden.jpg").read_bytes(), provider=["ailabapi", "piapi"])
    finally:
        ailab.faults.create_errors = 0

    assert job.state is JobState.SUCCEEDED, job.error
    assert job.provider == "piapi"
    assert [a["provider"] for a in job.attempts] == ["ailabapi", "piapi"]
    assert job.attempts[0]["error"]["code"] == "provider_unavailable"
    assert not any(t for t in ailab.tasks.values() if t.task_id == job.provider_task_id)


def test_a_failover_chain_of_three_whose_second_fails_at_create_ends_on_the_third(stack: Stack) -> None:
    crun, ailab, piapi = (stack.local.emulators[name] for name in ("crun", "ailabapi", "piapi"))
    crun.faults.fail_task = "generation failed"
    ailab.faults.create_errors, ailab.faults.create_error_status = 1, 503
    ailab_tasks, piapi_tasks = len(ailab.tasks), len(piapi.tasks)
    try:
        job = run_manifest(
            stack, "failover-chain", (FACES / "biden.jpg").read_bytes(), provider=["crun", "ailabapi", "piapi"]
        )
    finally:
        crun.faults.fail_task, ailab.faults.create_errors = None, 0

    assert job.state is JobState.SUCCEEDED, (job.error, job.attempts)
    assert job.provider == "piapi"
    assert [a["provider"] for a in job.attempts] == ["crun", "crun", "ailabapi", "piapi"]
    assert job.attempts[2]["error"]["code"] == "provider_unavailable"
    assert len(ailab.tasks) == ailab_tasks, "the refused create made no task"
    assert len(piapi.tasks) == piapi_tasks + 1, "exactly one task on the provider that did the work"
    versions = stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)["Versions"]
    assert len([v for v in versions if v["Key"] == job.result_key]) == 1


def test_an_input_error_does_not_fail_over(stack: Stack) -> None:
    job = run_manifest(stack, "no-failover", gradient(), provider=["crun", "piapi"])

    assert job.state is JobState.FAILED and job.provider == "crun"
    assert job.error is not None and job.error["retryable"] is False
    assert [a["provider"] for a in job.attempts] == ["crun"]


def test_a_task_that_fails_later_fails_over_through_the_submit_queue(stack: Stack) -> None:
    crun = stack.local.emulators["crun"]
    crun.faults.fail_task = "generation failed"
    try:
        job = run_manifest(stack, "late-failover", (FACES / "biden.jpg").read_bytes(), provider=["crun", "piapi"])
    finally:
        crun.faults.fail_task = None

    assert job.state is JobState.SUCCEEDED, (job.error, job.attempts)
    assert job.provider == "piapi"
    assert [a["provider"] for a in job.attempts] == ["crun", "crun", "piapi"]
    assert "provider_task_id" in job.attempts[0] and "error" in job.attempts[1]
