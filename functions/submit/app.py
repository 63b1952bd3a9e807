"""Submit function: S3 upload notifications (through the submit queue) → job rows and provider tasks."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.config import Config
from faceswap.requests import request_for_upload
from faceswap.wiring import build_pipeline

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
config = Config.from_env()
pipeline = build_pipeline(config)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """Submit every job an SQS message names; raising makes SQS deliver the message again."""
    body = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":
        return
    attempt = int(record.attributes.approximate_receive_count or 1)
    for s3_record in S3Event(body).records:
        if not s3_record.event_name.startswith("ObjectCreated:"):
            continue
        obj = s3_record.s3.get_object
        key = unquote_plus(obj.key)  # S3 event keys are URL-encoded, "/" included
        request = request_for_upload(
            s3_record.s3.bucket.name,
            key,
            version_id=obj.version_id,
            etag=obj.etag,
            objects=pipeline.objects,
            default_provider=config.default_provider,
        )
        if request is None:
            logger.info("not a job input; ignored", extra={"key": key})
            continue
        logger.append_keys(job_id=request.job_id, provider=request.provider)
        job = pipeline.submit(request, attempt=attempt)
        logger.info(
            "job submitted",
            extra={
                "state": job.state,
                "provider_task_id": job.provider_task_id,
                "error_code": (job.error or {}).get("code"),
            },
        )
        metrics.add_metric(name="JobsRejected" if job.state == "FAILED" else "JobsSubmitted", unit="Count", value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
