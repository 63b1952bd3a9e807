"""The boto3 adapters under moto's ``mock_aws``: conditional job writes and create-once streamed results."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from faceswap.aws import DynamoJobStore, DynamoRateLimiter, S3ObjectStore, job_from_item, job_to_item
from faceswap.errors import ImageTooLarge, InputNotFound
from faceswap.model import ImageRef, Job, JobState

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest multipart part


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def ddb() -> Iterator[DynamoJobStore]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="jobs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        )
        yield DynamoJobStore(client, "jobs")


@pytest.fixture
def s3() -> Iterator[tuple[S3ObjectStore, object]]:
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="results")
        client.put_bucket_versioning(Bucket="results", VersioningConfiguration={"Status": "Enabled"})
        yield S3ObjectStore(client, part_bytes=PART), client


def job(job_id: str = "a" * 32, state: JobState = JobState.RECEIVED) -> Job:
    return Job(
        job_id=job_id,
        state=state,
        provider="piapi",
        task="face-swap",
        target_image=ImageRef(bucket="in", key="incoming/x/y.jpg", version_id="v1"),
        swap_image=ImageRef(bucket="in", key="faces/x.jpg"),
        result_key="results/x/y.jpg",
        source="s3",
        created_at="2026-11-25T12:00:00.000Z",
        updated_at="2026-11-25T12:00:00.000Z",
        deadline_at="2026-11-25T12:15:00.000Z",
        options={"swap_faces_index": "0"},
        submit_attempts=1,
    )


def chunks(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_job_item_round_trip() -> None:
    original = job()
    assert job_from_item(job_to_item(original)) == original


def test_create_is_conditional(ddb: DynamoJobStore) -> None:
    assert ddb.create(job()) is True
    assert ddb.create(job(state=JobState.FAILED)) is False
    assert ddb.get("a" * 32) == job()


def test_transition_moves_forward_only(ddb: DynamoJobStore) -> None:
    ddb.create(job())
    moved = ddb.transition(
        "a" * 32, from_states=[JobState.RECEIVED], to_state=JobState.SUBMITTED, changes={"provider_task_id": "t-1"}
    )
    assert moved is not None and moved.state is JobState.SUBMITTED and moved.provider_task_id == "t-1"

    done = ddb.transition("a" * 32, from_states=[JobState.SUBMITTED], to_state=JobState.SUCCEEDED, changes={})
    back = ddb.transition(
        "a" * 32,
        from_states=[JobState.RECEIVED, JobState.SUBMITTED],
        to_state=JobState.FAILED,
        changes={"error": {"code": "x"}},
    )

    assert done is not None and done.state is JobState.SUCCEEDED
    assert back is None
    stored = ddb.get("a" * 32)
    assert stored is not None and stored.state is JobState.SUCCEEDED and stored.error is None


def test_update_none_removes_and_require_absent_guards(ddb: DynamoJobStore) -> None:
    ddb.create(job())
    claimed = ddb.update(
        "a" * 32, in_states=[JobState.RECEIVED], changes={"submit_started_at": "t"}, require_absent="submit_started_at"
    )
    again = ddb.update(
        "a" * 32, in_states=[JobState.RECEIVED], changes={"submit_started_at": "u"}, require_absent="submit_started_at"
    )
    released = ddb.update("a" * 32, in_states=[JobState.RECEIVED], changes={"submit_started_at": None})

    assert claimed is not None and claimed.submit_started_at == "t"
    assert again is None
    assert released is not None and released.submit_started_at is None


def test_read_refuses_missing_and_oversized_objects(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    client.put_object(Bucket="results", Key="big", Body=b"x" * 2048)  # type: ignore[attr-defined]

    with pytest.raises(InputNotFound):
        store.read("results", "nope", max_bytes=10)
    with pytest.raises(ImageTooLarge):
        store.read("results", "big", max_bytes=1024)


def test_small_result_is_one_put_with_sha256(s3: tuple[S3ObjectStore, object]) -> None:
    store, _ = s3
    data = os.urandom(MIB)

    stored = store.store_result("results", "results/a.png", chunks(data), content_type="image/png", job_id="a" * 32)

    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.version_id


def test_large_result_is_streamed_in_parts(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    data = os.urandom(12 * MIB)

    stored = store.store_result("results", "results/big.png", chunks(data), content_type="image/png", job_id="a" * 32)

    body = client.get_object(Bucket="results", Key="results/big.png")["Body"].read()  # type: ignore[attr-defined]
    assert body == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == 12 * MIB


def test_crash_after_first_part_leaves_no_object_and_no_open_upload(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3

    def crashing() -> Iterator[bytes]:
        yield from chunks(os.urandom(6 * MIB))
        raise ConnectionError("the provider hung up mid-download")

    with pytest.raises(ConnectionError):
        store.store_result("results", "results/c.png", crashing(), content_type="image/png", job_id="a" * 32)

    assert "Versions" not in client.list_object_versions(Bucket="results")  # type: ignore[attr-defined]
    assert "Uploads" not in client.list_multipart_uploads(Bucket="results")  # type: ignore[attr-defined]


def test_upload_left_open_by_a_killed_attempt_is_aborted_by_the_retry(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    # What an attempt killed after its first part leaves behind (no code of its ran to abort it).
    upload_id = client.create_multipart_upload(Bucket="results", Key="results/k.png")["UploadId"]  # type: ignore[attr-defined]
    client.upload_part(Bucket="results", Key="results/k.png", UploadId=upload_id, PartNumber=1, Body=b"x" * PART)  # type: ignore[attr-defined]
    data = os.urandom(12 * MIB)

    stored = store.store_result("results", "results/k.png", chunks(data), content_type="image/png", job_id="a" * 32)

    assert "Uploads" not in client.list_multipart_uploads(Bucket="results")  # type: ignore[attr-defined]
    body = client.get_object(Bucket="results", Key="results/k.png")["Body"].read()  # type: ignore[attr-defined]
    assert body == data and stored.sha256 == hashlib.sha256(data).hexdigest()


def test_repeated_store_for_one_job_writes_one_version(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    data = os.urandom(MIB)

    first = store.store_result("results", "results/a.png", chunks(data), content_type="image/png", job_id="a" * 32)
    second = store.store_result(
        "results", "results/a.png", chunks(os.urandom(MIB)), content_type="image/png", job_id="a" * 32
    )

    versions = client.list_object_versions(Bucket="results")["Versions"]  # type: ignore[attr-defined]
    assert len(versions) == 1
    assert second.sha256 == first.sha256


def test_new_job_for_same_key_adds_a_version(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    store.store_result("results", "results/a.png", chunks(b"one"), content_type="image/png", job_id="a" * 32)
    store.store_result("results", "results/a.png", chunks(b"two"), content_type="image/png", job_id="b" * 32)

    versions = client.list_object_versions(Bucket="results")["Versions"]  # type: ignore[attr-defined]
    body = client.get_object(Bucket="results", Key="results/a.png")["Body"].read()  # type: ignore[attr-defined]
    assert len(versions) == 2 and body == b"two"


def test_rate_limiter_spaces_calls_and_counts_the_hour() -> None:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="limits",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "window", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "window", "KeyType": "HASH"}],
        )
        now = [1_795_600_000.0]
        limiter = DynamoRateLimiter(client, "limits", clock=lambda: now[0])

        assert limiter.acquire("piapi", per_second=5, per_hour=3) == 0.0
        wait = limiter.acquire("piapi", per_second=5, per_hour=3)
        assert 0.23 < wait <= 0.241, "calls are spaced 1.2 / 5 s apart"
        assert limiter.acquire("crun", per_second=5, per_hour=3) == 0.0, "providers count separately"
        for _ in range(2):
            now[0] += 0.25
            assert limiter.acquire("piapi", per_second=5, per_hour=3) == 0.0
        now[0] += 0.25
        assert limiter.acquire("piapi", per_second=5, per_hour=3) > 60, "the hour's 3 calls are spent"


def test_exists_is_a_head_of_exactly_that_key(s3: tuple[S3ObjectStore, object]) -> None:
    store, client = s3
    client.put_object(Bucket="results", Key="faces/obama.jpg", Body=b"face")  # type: ignore[attr-defined]

    assert store.exists("results", "faces/obama.jpg")
    assert not store.exists("results", "faces/obama")
    assert not store.exists("results", "faces/obama.jpg.bak")
