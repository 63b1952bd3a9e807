"""Fixtures the unit tests share: AWS credentials for moto, the moto account the handlers run in, and the domain
over fakes (the fakes are in ``fakes.py``, the handlers' loader in ``lambda_handlers.py``: test modules import from
those, never from ``conftest``, whose name the integration tests' own conftest shares).

``mock_aws`` is active before any boto3 client exists, and Powertools' parameter caches are cleared around each
handler test (conventions.md, practice 10).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from fakes import World, make_world
from lambda_handlers import NAMESPACE
from moto import mock_aws

HANDLER_ENVIRONMENT = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "faceswap",
    "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
    "JOBS_TABLE_NAME": "jobs",
    "INPUT_BUCKET_NAME": "faceswap-inputs-example",
    "RESULTS_BUCKET_NAME": "faceswap-results-example",
    "EVENT_BUS_NAME": "jobs-bus",
    "WEBHOOK_SIGNING_KEY_SECRET_NAME": "signing-key",
    "PROVIDER_SECRETS_PREFIX": "stack/providers/",
    "PROVIDER_ENDPOINTS": '{"piapi": {"base_url": "https://piapi.invalid"}}',
    "CALLBACK_BASE_URL": "https://abc123.execute-api.us-east-1.amazonaws.com",
}
"""What the template gives every function (the names it reads), pointed at the moto account of :func:`aws`."""


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, and no endpoint override: every boto3 client talks to moto's ``mock_aws``."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def aws(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A moto account as the template makes it for the handlers: the versioned buckets, the jobs table, the check
    queue, the signing-key and PiAPI secrets and the event bus; the handler environment points at them.

    Yields ``{"s3", "sqs", "ddb", "events"}`` clients.
    """
    for name, value in HANDLER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    parameters.clear_caches()
    with mock_aws():
        s3, sqs, ddb, sm, events = (boto3.client(s) for s in ("s3", "sqs", "dynamodb", "secretsmanager", "events"))
        for bucket in ("faceswap-inputs-example", "faceswap-results-example"):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        ddb.create_table(
            TableName="jobs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        )
        monkeypatch.setenv("CHECK_QUEUE_URL", sqs.create_queue(QueueName="checks")["QueueUrl"])
        sm.create_secret(Name="signing-key", SecretString="k" * 64)
        sm.create_secret(Name="stack/providers/piapi", SecretString="piapi-test-key")
        events.create_event_bus(Name="jobs-bus")
        yield {"s3": s3, "sqs": sqs, "ddb": ddb, "events": events}
    parameters.clear_caches()


@pytest.fixture
def world() -> World:
    """The domain wired to in-memory fakes (see ``fakes.make_world``)."""
    return make_world()
