"""The pipeline end to end over real HTTP on loopback: moto server, PiAPI emulator, local runtime and gateway."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import quote

import httpx
from conftest import FACES, RESULT_MAX_BYTES, Stack, eventually

from faceswap.ids import webhook_secret
from faceswap.lifecycle import JobState


def biden() -> bytes:
    return (FACES / "biden.jpg").read_bytes()


def test_upload_ends_succeeded_with_the_served_result(stack: Stack) -> None:
    stack.upload("incoming/obama/portraits/biden.jpg", biden())

    job = stack.wait_for("incoming/obama/portraits/biden.jpg")

    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result is not None and job.result["key"] == "results/obama/portraits/biden.jpg"
    stored = stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read()
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    assert task.result is not None
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(task.result).hexdigest() == job.result["sha256"]
    assert job.result["size"] == len(task.result)
    assert job.provider_task_id == task.task_id


def test_biden_reaches_piapi_no_larger_than_2048(stack: Stack) -> None:
    stack.upload("incoming/obama/biden-size.jpg", biden())

    job = stack.wait_for("incoming/obama/biden-size.jpg")

    (task,) = stack.piapi.tasks_for_job(job.job_id)
    width, height = task.image_sizes["target_image"]
    assert max(width, height) <= 2048
    assert height == 2048 and abs(width / height - 970 / 2204) < 0.01


def test_same_s3_event_delivered_twice_creates_one_task(stack: Stack) -> None:
    key = "incoming/obama/twice.jpg"
    stack.upload(key, biden())
    job = stack.wait_for(key)
    etag = stack.s3.head_object(Bucket=stack.input_bucket, Key=key)["ETag"].strip('"')
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": stack.input_bucket},
            "object": {"key": quote(key, safe=""), "size": len(biden()), "eTag": etag},
        },
    }
    queue_url = stack.local.stack.refs["SubmitQueue"]  # type: ignore[union-attr]
    stack.deliver(queue_url, [json.dumps({"Records": [record]})] * 2)  # both deliveries handled

    assert len(stack.piapi.tasks_for_job(job.job_id)) == 1
    assert stack.get_job(job.job_id).state is JobState.SUCCEEDED


def test_callback_with_bad_secret_is_refused_and_changes_nothing(stack: Stack) -> None:
    stack.piapi.faults.webhook = "none"
    stack.piapi.faults.processing_seconds = 20
    key = "incoming/obama/secret.jpg"
    stack.upload(key, biden())
    job = stack.wait_for(key, lambda j: j.provider_task_id is not None)
    signing_key = stack.local.stack.secret_values["WebhookSigningKeySecret"].encode()  # type: ignore[union-attr]
    url = f"{stack.api_url}/callbacks/piapi/{job.job_id}"
    body = {"timestamp": 1, "data": {"task_id": job.provider_task_id, "status": "completed"}}

    for headers in ({}, {"x-webhook-secret": "wrong"}, {"x-webhook-secret": webhook_secret(signing_key, "b" * 32)}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "webhook_unauthorized"

    assert stack.get_job(job.job_id) == job


def test_webhook_delivered_three_times_keeps_one_result_and_one_event(stack: Stack) -> None:
    stack.piapi.faults.webhook = "duplicate"
    stack.piapi.faults.webhook_copies = 3
    key = "incoming/obama/thrice.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    eventually(lambda: task.webhook_deliveries == 3, what="three webhook deliveries")

    assert job.state is JobState.SUCCEEDED
    assert stack.get_job(job.job_id) == job, "the later deliveries changed nothing"
    versions = stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)["Versions"]
    assert len([v for v in versions if v["Key"] == job.result_key]) == 1
    succeeded = [e for e in stack.events() if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in succeeded] == ["Job Succeeded"]
    assert succeeded[0]["detail"]["result"]["sha256"] == job.result["sha256"]  # type: ignore[index]


def test_lost_webhook_is_covered_by_the_poller(stack: Stack) -> None:
    stack.piapi.faults.webhook = "none"
    key = "incoming/obama/lost-webhook.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)

    assert job.state is JobState.SUCCEEDED
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    assert task.webhook_deliveries == 0 and task.gets >= 1


def test_get_task_failing_twice_is_retried_and_completes(stack: Stack) -> None:
    stack.piapi.faults.webhook = "none"
    stack.piapi.faults.get_errors = 2
    key = "incoming/obama/flaky-get.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)

    assert job.state is JobState.SUCCEEDED
    assert stack.piapi.faults.get_errors == 0
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    assert task.gets >= 1


def test_result_url_to_a_private_address_is_refused(stack: Stack) -> None:
    stack.piapi.faults.result_url = "http://10.0.0.7/results/x.png"
    key = "incoming/obama/private-url.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "result_url_refused"
    assert "Versions" not in stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)


def test_result_larger_than_the_cap_fails_and_leaves_nothing(stack: Stack) -> None:
    stack.piapi.faults.result_bytes = RESULT_MAX_BYTES + 1024 * 1024
    key = "incoming/obama/huge-result.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "result_too_large"
    assert "Versions" not in stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)
    assert "Uploads" not in stack.s3.list_multipart_uploads(Bucket=stack.results_bucket)


def test_text_uploaded_as_jpg_fails_invalid_image_and_is_kept(stack: Stack) -> None:
    key = "incoming/obama/notes.jpg"
    text = b"shopping list: eggs, milk\n"
    stack.upload(key, text)

    job = stack.wait_for(key)

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "invalid_image"
    assert stack.piapi.tasks_for_job(job.job_id) == []
    assert stack.s3.get_object(Bucket=stack.input_bucket, Key=key)["Body"].read() == text
    failed = [e for e in stack.events() if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in failed] == ["Job Failed"]
    assert failed[0]["detail"]["error"]["code"] == "invalid_image"


def test_upload_for_an_unknown_face_fails_swap_face_missing(stack: Stack) -> None:
    key = "incoming/nobody/photo.jpg"
    stack.upload(key, biden())

    job = stack.wait_for(key)

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "swap_face_missing"
    assert "faces/nobody.jpg" in job.error["message"]


def test_manifest_job_succeeds_at_its_result_key(stack: Stack) -> None:
    stack.upload("photos/side-by-side.jpg", (FACES / "obama_and_biden_side_by_side.jpg").read_bytes())
    manifest = {
        "target_image": {"s3_key": "photos/side-by-side.jpg"},
        "swap_image": "faces/obama.jpg",
        "provider": "piapi",
        "task": "face-swap",
        "result_key": "results/manifests/pair.jpg",
    }
    stack.upload("jobs/pair.json", json.dumps(manifest).encode())

    job = stack.wait_for("photos/side-by-side.jpg")

    assert job.state is JobState.SUCCEEDED, job.error
    assert job.source == "manifest"
    head = stack.s3.head_object(Bucket=stack.results_bucket, Key="results/manifests/pair.jpg")
    assert head["ContentLength"] == job.result["size"]  # type: ignore[index]


def test_manifest_with_unknown_field_fails_invalid_request(stack: Stack) -> None:
    manifest = {"target_image": "photos/x.jpg", "swap_image": "faces/obama.jpg", "colour": "blue"}
    stack.upload("jobs/typo.json", json.dumps(manifest).encode())

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        items = stack.ddb.scan(TableName=stack.jobs_table, ConsistentRead=True)["Items"]
        failed = [
            i
            for i in items
            if i.get("error", {}).get("M", {}).get("code", {}).get("S") == "invalid_request"
            and "colour" in i["error"]["M"]["message"]["S"]
        ]
        if failed:
            break
        time.sleep(0.2)
    assert failed, "the bad manifest must end as a FAILED job naming the field"
    assert failed[0]["state"]["S"] == "FAILED"
