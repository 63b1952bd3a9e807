"""Builds the jobs API for its handler: the jobs table, the inputs bucket and the submit queue, once.

Apart from :mod:`faceswap.wiring` because the API needs none of the pipeline: no provider adapters, no httpx clients,
no secrets. Importing only what it needs keeps httpx and the pipeline's modules out of its cold start (about 40 ms).
"""

from __future__ import annotations

import boto3

from faceswap.api import JobsApi
from faceswap.aws.dynamodb import DynamoJobStore
from faceswap.aws.s3 import S3ObjectStore
from faceswap.aws.sqs import SqsRequestQueue
from faceswap.config import SUBMIT_QUEUE_URL, Config, ConfigError
from faceswap.lifecycle import Lifecycle
from faceswap.model import utcnow


def build_jobs_api(config: Config) -> JobsApi:
    """The jobs API over the jobs table, the inputs bucket and the submit queue (no provider adapters, no secrets
    read: it records jobs and queues them for the submit function).

    Raises
    ------
    faceswap.config.ConfigError
        The configuration names no submit queue.
    """
    if not config.submit_queue_url:
        raise ConfigError(f"Environment variable {SUBMIT_QUEUE_URL} is required by the jobs API.")
    store = DynamoJobStore(boto3.client("dynamodb"), config.jobs_table)
    objects = S3ObjectStore(boto3.client("s3"))
    return JobsApi(
        lifecycle=Lifecycle(
            store,
            deadline_seconds=config.job_deadline_seconds,
            video_deadline_seconds=config.video_job_deadline_seconds,
            clock=utcnow,
        ),
        index=store,
        inputs=objects,
        queue=SqsRequestQueue(boto3.client("sqs"), config.submit_queue_url, media_queue_url=config.media_queue_url),
        input_bucket=config.input_bucket,
        default_provider=config.default_provider,
        offered=config.offered_tasks(),
        allow_http=config.allow_loopback_results,
    )
