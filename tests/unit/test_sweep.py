"""The sweep (``faceswap.sweep``) over the DynamoDB adapter's ``StateIndex`` (moto), pages included."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from fakes import RecordingScheduler, job_row
from moto import mock_aws

from faceswap.aws.dynamodb import DynamoJobStore
from faceswap.lifecycle import JobState
from faceswap.model import ImageRef, isoformat
from faceswap.sweep import sweep

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TEMPLATE_JOB = job_row(
    job_id="0" * 32,
    target_image=ImageRef(bucket="in", key="incoming/x/y.jpg"),
    swap_image=ImageRef(bucket="in", key="faces/x.jpg"),
    result_key="results/x/y.jpg",
    created_at="2026-12-03T11:00:00.000Z",
    updated_at="2026-12-03T11:00:00.000Z",
    deadline_at="2026-12-03T11:15:00.000Z",
)


@pytest.fixture
def store(aws_credentials: None) -> Iterator[DynamoJobStore]:
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="jobs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": n, "AttributeType": "S"} for n in ("job_id", "state", "created_at")
            ],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "StateIndex",
                    "KeySchema": [
                        {"AttributeName": "state", "KeyType": "HASH"},
                        {"AttributeName": "created_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        yield DynamoJobStore(client, "jobs")


def put(store: DynamoJobStore, number: int, state: JobState, deadline: datetime) -> str:
    job = replace(
        TEMPLATE_JOB,
        job_id=f"{number:032x}",
        state=state,
        created_at=isoformat(deadline - timedelta(minutes=15) + timedelta(milliseconds=number)),
        deadline_at=isoformat(deadline),
    )
    assert store.create(job)
    return job.job_id


def test_sweep_hands_every_running_job_past_its_deadline_to_the_poller(store: DynamoJobStore) -> None:
    overdue = [put(store, i, JobState.SUBMITTED, NOW - timedelta(minutes=5)) for i in range(5)]
    overdue.append(put(store, 10, JobState.RECEIVED, NOW - timedelta(hours=2)))
    put(store, 20, JobState.SUBMITTED, NOW + timedelta(minutes=5))  # still within its deadline
    put(store, 21, JobState.SUBMITTED, NOW - timedelta(seconds=30))  # its own last check is due: within the grace
    put(store, 22, JobState.SUCCEEDED, NOW - timedelta(hours=1))
    put(store, 23, JobState.FAILED, NOW - timedelta(hours=1))
    put(store, 24, JobState.TIMED_OUT, NOW - timedelta(hours=1))
    checks = RecordingScheduler()

    swept = sweep(store, checks, now=NOW, page_size=2)

    assert sorted(swept) == sorted(overdue)
    assert sorted(checks.scheduled) == sorted((job_id, 0, 0) for job_id in overdue)


def test_sweep_of_a_table_with_no_late_job_schedules_nothing(store: DynamoJobStore) -> None:
    put(store, 1, JobState.SUBMITTED, NOW + timedelta(minutes=1))
    checks = RecordingScheduler()

    assert sweep(store, checks, now=NOW) == [] and checks.scheduled == []


def test_a_late_video_job_is_handed_to_the_media_function(store: DynamoJobStore) -> None:
    job = replace(
        TEMPLATE_JOB,
        job_id=f"{99:032x}",
        state=JobState.SUBMITTED,
        target_image=ImageRef(),
        target_video=ImageRef(bucket="inputs", key="videos/late.mp4"),
        created_at=isoformat(NOW - timedelta(hours=1)),
        deadline_at=isoformat(NOW - timedelta(minutes=5)),
    )
    assert store.create(job)
    checks = RecordingScheduler()
    assert sweep(store, checks, now=NOW) == [job.job_id]
    assert checks.videos == [True]
