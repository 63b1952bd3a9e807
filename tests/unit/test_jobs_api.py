"""The jobs API's operations over in-memory fakes: submit, retry and upload grants."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fakes import RecordingQueue, World, jpeg

from faceswap.api import JobsApi
from faceswap.errors import InvalidRequest, JobNotFound, JobNotRetryable, ProviderRejected, ResultExpired
from faceswap.lifecycle import JobState


class Inputs:
    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    def put_input(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        self.stored[key] = data

    def presign_put(self, bucket: str, key: str, *, content_type: str, expires_seconds: int) -> str:
        return f"https://{bucket}.s3/{key}?put"

    def presign_get(self, bucket: str, key: str, *, version_id: str | None, expires_seconds: int) -> str:
        return f"https://{bucket}.s3/{key}?get"


def api(world: World) -> tuple[JobsApi, Inputs, RecordingQueue]:
    inputs, queue = Inputs(), RecordingQueue()
    jobs_api = JobsApi(
        lifecycle=world.pipeline.lifecycle,
        index=None,
        inputs=inputs,
        queue=queue,
        input_bucket="inputs",
        default_provider="fake",
        offered={"fake": ("face-swap", "multi-face-swap")},
    )
    return jobs_api, inputs, queue


def body(**changes: Any) -> dict[str, Any]:
    return {
        "target_image": {"base64": base64.b64encode(jpeg()).decode()},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        **changes,
    }


def test_submit_records_the_job_stores_inline_images_and_queues_once(world: World) -> None:
    jobs_api, inputs, queue = api(world)

    job, created = jobs_api.submit(body())
    again, created_again = jobs_api.submit(body())

    assert created and not created_again and again.job_id == job.job_id
    assert job.state is JobState.RECEIVED and job.source == "api"
    (key,) = inputs.stored
    assert key.startswith("uploads/inline/") and key.endswith(".jpeg")
    assert job.target_image.key == key
    assert len(queue.sent) == 2, "a repeat before submission queues again (submit is idempotent)"
    world.pipeline.submit(queue.sent[0])
    jobs_api.submit(body())
    assert len(queue.sent) == 2, "once submitted, a repeat queues nothing"


def test_idempotency_key_names_the_job(world: World) -> None:
    jobs_api, _, _ = api(world)

    first, _ = jobs_api.submit(body(idempotency_key="k-1"))
    second, _ = jobs_api.submit(body(idempotency_key="k-1", result_key="results/other.jpg"))

    assert first.job_id == second.job_id


def test_submit_refuses_unconfigured_provider_and_non_image_base64(world: World) -> None:
    jobs_api, _, queue = api(world)

    with pytest.raises(InvalidRequest, match="provider"):
        jobs_api.submit(body(provider="piapi"))
    with pytest.raises(InvalidRequest, match=r"target_image\.base64"):
        jobs_api.submit(body(target_image={"base64": base64.b64encode(b"plain text").decode()}))
    assert queue.sent == []


def test_retry_needs_a_failed_retryable_job(world: World) -> None:
    jobs_api, _, queue = api(world)
    job, _ = jobs_api.submit(body())
    with pytest.raises(JobNotRetryable, match="not failed"):
        jobs_api.retry(job.job_id)
    with pytest.raises(JobNotFound):
        jobs_api.retry("f" * 32)
    world.pipeline.lifecycle.fail(job, ResultExpired("gone", retryable=True))

    retried = jobs_api.retry(job.job_id)

    assert retried.retry_of == job.job_id and retried.job_id != job.job_id
    assert jobs_api.retry(job.job_id).job_id == retried.job_id, "retrying twice is the same new job"
    assert queue.sent[-1].retry_of == job.job_id


def test_upload_grant_is_a_presigned_put_under_uploads(world: World) -> None:
    jobs_api, _, _ = api(world)

    grant = jobs_api.create_upload("image/png")

    assert grant["s3_key"].startswith("uploads/") and grant["s3_key"].endswith(".png")
    assert grant["method"] == "PUT" and grant["headers"] == {"content-type": "image/png"}
    with pytest.raises(InvalidRequest):
        jobs_api.create_upload("text/html")


def test_a_task_a_provider_does_not_offer_is_refused_before_anything_is_queued(world: World) -> None:
    jobs_api, inputs, queue = api(world)

    with pytest.raises(ProviderRejected, match="does not offer the task 'same-image-swap'; it offers face-swap"):
        jobs_api.submit(body(swap_image=None, task="same-image-swap"))

    assert queue.sent == [] and inputs.stored == {} and world.store.rows == {}
