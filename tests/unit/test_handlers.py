"""The Lambda handlers with the sample events in ``events/``, under moto's ``mock_aws`` (no provider calls)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from lambda_handlers import Context, load_handler, sample_event

from faceswap.errors import ProviderUnavailable
from faceswap.ids import webhook_secret

JOB_ID = "0123456789abcdef0123456789abcdef"


def job_row(ddb: Any, job_id: str | None = None) -> dict[str, Any]:
    items = ddb.scan(TableName="jobs")["Items"]
    if job_id:
        items = [i for i in items if i["job_id"]["S"] == job_id]
    assert len(items) == 1, items
    return items[0]


def with_version(name: str, version_id: str) -> dict[str, Any]:
    sample = sample_event(name)
    body = json.loads(sample["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["versionId"] = version_id
    sample["Records"][0]["body"] = json.dumps(body)
    return sample


def test_submit_ignores_the_s3_test_event(aws: dict[str, Any]) -> None:
    response = load_handler("submit").lambda_handler(sample_event("sqs_s3_test_event.json"), Context())

    assert response == {"batchItemFailures": []}
    assert aws["ddb"].scan(TableName="jobs")["Items"] == []


def test_submit_records_text_upload_as_invalid_image(aws: dict[str, Any]) -> None:
    aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="faces/obama.jpg", Body=b"\xff\xd8\xff face")
    version = aws["s3"].put_object(
        Bucket="faceswap-inputs-example", Key="incoming/obama/biden.jpg", Body=b"not an image"
    )["VersionId"]

    response = load_handler("submit").lambda_handler(with_version("sqs_s3_put_incoming.json", version), Context())

    row = job_row(aws["ddb"])
    assert response == {"batchItemFailures": []}
    assert row["state"]["S"] == "FAILED"
    assert row["error"]["M"]["code"]["S"] == "invalid_image"
    assert row["result_key"]["S"] == "results/obama/biden.jpg"


def test_submit_records_bad_manifest_as_invalid_request(aws: dict[str, Any]) -> None:
    version = aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="jobs/pair.json", Body=b"{not json")[
        "VersionId"
    ]

    load_handler("submit").lambda_handler(with_version("sqs_s3_put_manifest.json", version), Context())

    row = job_row(aws["ddb"])
    assert row["state"]["S"] == "FAILED" and row["error"]["M"]["code"]["S"] == "invalid_request"


@pytest.mark.parametrize("sample", ["http_webhook_bad_secret.json", "http_webhook_no_secret.json"])
def test_callback_refuses_a_webhook_without_the_job_secret(aws: dict[str, Any], sample: str) -> None:
    response = load_handler("callback").lambda_handler(sample_event(sample), Context())

    assert response["statusCode"] == 401
    assert json.loads(response["body"]) == {"code": "webhook_unauthorized", "message": "unauthorized"}
    assert aws["ddb"].scan(TableName="jobs")["Items"] == []


def test_callback_refuses_a_malformed_job_id(aws: dict[str, Any]) -> None:
    sample = sample_event("http_webhook_piapi_completed.json")
    sample["rawPath"] = sample["requestContext"]["http"]["path"] = "/callbacks/piapi/..%2F..%2Fetc"

    response = load_handler("callback").lambda_handler(sample, Context())

    assert response["statusCode"] in (401, 404)


SIGNING_KEY = b"k" * 64  # the "signing-key" secret of the aws fixture


def webhook(
    *, secret: str | None = None, content_type: str | None = "application/json", body: bytes | None = None
) -> dict[str, Any]:
    """The PiAPI sample webhook with its secret, content type and raw body replaced (``None`` leaves one out)."""
    sample = sample_event("http_webhook_piapi_completed.json")
    headers = {k: v for k, v in sample["headers"].items() if k not in ("x-webhook-secret", "content-type")}
    if secret is not None:
        headers["x-webhook-secret"] = secret
    if content_type is not None:
        headers["content-type"] = content_type
    sample["headers"] = headers
    if body is not None:
        sample["body"], sample["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    return sample


def answer(response: dict[str, Any]) -> tuple[int, str]:
    return response["statusCode"], json.loads(response["body"])["code"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("text/plain", None, id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", b"task_id=x&status=completed", id="form"),
        pytest.param(None, None, id="no-content-type"),
    ],
)
def test_callback_refuses_a_wrong_content_type_only_after_the_secret(
    aws: dict[str, Any], content_type: str | None, body: bytes | None
) -> None:
    handler = load_handler("callback").lambda_handler
    secret = webhook_secret(SIGNING_KEY, JOB_ID)

    unauthenticated = handler(webhook(content_type=content_type, body=body), Context())
    verified = handler(webhook(secret=secret, content_type=content_type, body=body), Context())

    assert answer(unauthenticated) == (401, "webhook_unauthorized")
    assert answer(verified) == (415, "unsupported_media_type")
    assert secret not in verified["body"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"timestamp": 1, "data": {', id="truncated"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe{not utf-8", id="not-utf8"),
    ],
)
def test_callback_refuses_a_malformed_json_body_only_after_the_secret(aws: dict[str, Any], body: bytes) -> None:
    handler = load_handler("callback").lambda_handler
    secret = webhook_secret(SIGNING_KEY, JOB_ID)

    unauthenticated = handler(webhook(body=body), Context())
    verified = handler(webhook(secret=secret, body=body), Context())

    assert answer(unauthenticated) == (401, "webhook_unauthorized")
    assert answer(verified) == (400, "invalid_callback")
    assert aws["ddb"].scan(TableName="jobs")["Items"] == []


def test_callback_with_a_json_body_and_charset_reaches_the_domain(aws: dict[str, Any]) -> None:
    sample = webhook(secret=webhook_secret(SIGNING_KEY, JOB_ID), content_type="application/json; charset=utf-8")

    response = load_handler("callback").lambda_handler(sample, Context())

    # Verified and well-formed, so the domain looks the job up: there is none.
    assert answer(response) == (401, "webhook_unauthorized")


def test_callback_from_crun_is_not_held_to_json(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLED_PROVIDERS", "piapi,crun")
    module = load_handler("callback")
    received: list[bytes] = []

    def callback(provider: str, job_id: str, *, headers: Any, query: Any, body: bytes, deadline: float) -> None:
        received.append(body)
        raise ProviderUnavailable("stub: the domain was reached")

    monkeypatch.setattr(module.pipeline.callbacks, "callback", callback)
    sample = webhook(content_type="text/plain", body=b"task_id=t-1")
    sample["rawPath"] = sample["requestContext"]["http"]["path"] = f"/callbacks/crun/{JOB_ID}"
    sample["queryStringParameters"] = {"token": webhook_secret(SIGNING_KEY, JOB_ID)}

    response = module.lambda_handler(sample, Context())

    assert answer(response) == (503, "provider_unavailable")
    assert received == [b"task_id=t-1"]


def test_poller_ignores_a_check_for_an_unknown_job(aws: dict[str, Any]) -> None:
    response = load_handler("poller").lambda_handler(sample_event("sqs_check.json"), Context())

    assert response == {"batchItemFailures": []}
    assert "Messages" not in aws["sqs"].receive_message(
        QueueUrl=aws["sqs"].get_queue_url(QueueName="checks")["QueueUrl"]
    )


def poison_check(deliveries: int) -> dict[str, Any]:
    """A check message on its ``deliveries``-th delivery, for a job whose row holds a deadline no one can read."""
    sample = sample_event("sqs_check.json")
    sample["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(deliveries)
    return sample


@pytest.mark.parametrize(("deliveries", "state"), [(4, "SUBMITTED"), (5, "FAILED")])
def test_poller_ends_a_poison_messages_job_on_its_last_delivery(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, deliveries: int, state: str
) -> None:
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "5")
    row = {
        "job_id": {"S": JOB_ID},
        "state": {"S": "SUBMITTED"},
        "phase": {"S": "running"},
        "provider": {"S": "piapi"},
        "task": {"S": "face-swap"},
        "target_image": {"M": {"bucket": {"S": "faceswap-inputs-example"}, "key": {"S": "incoming/obama/b.jpg"}}},
        "swap_image": {"M": {"bucket": {"S": "faceswap-inputs-example"}, "key": {"S": "faces/obama.jpg"}}},
        "result_key": {"S": "results/obama/b.jpg"},
        "source": {"S": "s3"},
        "created_at": {"S": "2026-11-25T10:00:00.000Z"},
        "updated_at": {"S": "2026-11-25T10:00:00.000Z"},
        "deadline_at": {"S": "next tuesday"},
        "provider_task_id": {"S": "task-1"},
    }
    aws["ddb"].put_item(TableName="jobs", Item=row)

    with pytest.raises(BatchProcessingError):  # the message fails (so SQS delivers it again, or dead-letters it)
        load_handler("poller").lambda_handler(poison_check(deliveries), Context())

    ended = job_row(aws["ddb"], JOB_ID)
    assert ended["state"]["S"] == state
    if state == "FAILED":
        assert ended["error"]["M"]["code"]["S"] == "processing_failed"


def test_submit_on_the_last_delivery_ends_the_job_with_the_error_that_held_it(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "3")
    aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="faces/obama.jpg", Body=b"\xff\xd8\xff face")
    version = aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="incoming/obama/b.jpg", Body=b"x")["VersionId"]
    module = load_handler("submit")

    def failing(request: Any) -> Any:
        module.pipeline.receive(request)
        raise ProviderUnavailable("the provider stayed down")

    monkeypatch.setattr(module.pipeline, "submit", failing)
    sample = with_version("sqs_s3_put_incoming.json", version)
    sample["Records"][0]["attributes"]["ApproximateReceiveCount"] = "3"

    with pytest.raises(BatchProcessingError):  # the message still goes on to the dead-letter queue
        module.lambda_handler(sample, Context())

    row = job_row(aws["ddb"])
    assert row["state"]["S"] == "FAILED" and row["error"]["M"]["code"]["S"] == "provider_unavailable"


def test_publisher_publishes_job_succeeded_once_per_terminal_change(aws: dict[str, Any]) -> None:
    queue_url = aws["sqs"].create_queue(QueueName="subscriber")["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(
        Name="all", EventBusName="jobs-bus", EventPattern=json.dumps({"source": ["faceswap.pipeline"]})
    )
    aws["events"].put_targets(Rule="all", EventBusName="jobs-bus", Targets=[{"Id": "q", "Arn": arn}])
    sample = sample_event("ddb_stream_job_succeeded.json")
    unchanged = json.loads(json.dumps(sample["Records"][0]))
    unchanged["dynamodb"]["OldImage"] = unchanged["dynamodb"]["NewImage"]  # a terminal row touched again
    unchanged["dynamodb"]["SequenceNumber"] = "111100000000000000002"
    sample["Records"].append(unchanged)

    response = load_handler("publisher").lambda_handler(sample, Context())

    messages = aws["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert response == {"batchItemFailures": []}
    assert len(messages) == 1
    published = json.loads(messages[0]["Body"])
    assert published["detail-type"] == "Job Succeeded"
    assert published["source"] == "faceswap.pipeline"
    assert published["detail"]["job_id"] == JOB_ID
    assert published["detail"]["result"]["sha256"] == "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


@pytest.mark.parametrize(("deliveries", "retry_after", "delay"), [(1, None, 10), (2, None, 30), (2, 7.0, 7.0)])
def test_submit_paces_a_create_the_provider_could_not_take_instead_of_the_visibility_timeout(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, deliveries: int, retry_after: float | None, delay: float
) -> None:
    aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="faces/obama.jpg", Body=b"\xff\xd8\xff face")
    version = aws["s3"].put_object(Bucket="faceswap-inputs-example", Key="incoming/obama/c.jpg", Body=b"x")["VersionId"]
    module = load_handler("submit")
    delays: list[tuple[str, float]] = []

    def failing(request: Any) -> Any:
        raise ProviderUnavailable("the provider answered 503", retry_after=retry_after)

    monkeypatch.setattr(module.pipeline, "submit", failing)
    monkeypatch.setattr(module.message_delay, "delay", lambda handle, seconds: delays.append((handle, seconds)))
    sample = with_version("sqs_s3_put_incoming.json", version)
    sample["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(deliveries)

    with pytest.raises(BatchProcessingError):
        module.lambda_handler(sample, Context())

    assert delays == [(sample["Records"][0]["receiptHandle"], delay)]
