"""Poller function: check-queue messages → ask the provider, collect when done, look again later, or time out."""

from __future__ import annotations

import json

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.config import Config
from faceswap.wiring import build_pipeline

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
pipeline = build_pipeline(Config.from_env())


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """One check: message body ``{"job_id": str, "check": int}``."""
    body = json.loads(record.body)
    logger.append_keys(job_id=body["job_id"])
    job = pipeline.check(body["job_id"], check=int(body.get("check", 0)))
    if job is not None:
        logger.info(
            "job checked",
            extra={"state": job.state, "provider": job.provider, "provider_task_id": job.provider_task_id},
        )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
