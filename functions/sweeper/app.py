"""Sweeper function: on a schedule (EventBridge Scheduler, every 5 minutes), hands every job still running past
its deadline to the poller, so that a job whose chain of checks died still ends (``faceswap.sweep``)."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.aws.dynamodb import DynamoJobStore
from faceswap.aws.sqs import SqsCheckScheduler
from faceswap.config import Config
from faceswap.sweep import sweep

logger = Logger()
tracer = Tracer(patch_modules=("botocore",))  # it calls only AWS (DynamoDB, SQS): no httpx to patch
metrics = Metrics()
config = Config.from_env()
jobs = DynamoJobStore(boto3.client("dynamodb"), config.jobs_table)
checks = SqsCheckScheduler(boto3.client("sqs"), config.check_queue_url, media_queue_url=config.media_queue_url)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    swept = sweep(jobs, checks, now=datetime.now(UTC))
    metrics.add_metric(name="JobsSwept", unit=MetricUnit.Count, value=len(swept))
    if swept:
        # A job only gets here if its own checks stopped: worth a look (which function was killed, which DLQ).
        logger.warning(
            "jobs past their deadline handed to the poller", extra={"jobs": len(swept), "job_ids": swept[:50]}
        )
    return {"swept": len(swept)}
