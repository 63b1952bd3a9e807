"""Submit function: submit-queue messages (S3 uploads, "Job Requested" events, API requests) → provider tasks."""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.aws.sqs import JobDeliveries, SqsMessageDelay
from faceswap.config import Config
from faceswap.intake import requests_in_message
from faceswap.observability import TRACED_MODULES, Telemetry
from faceswap.wiring import build_pipeline

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()
telemetry = Telemetry(logger, tracer=tracer)
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
processor = BatchProcessor(event_type=EventType.SQS, logger=logger)  # a failed record is logged with its job keys
config = Config.from_env()
sqs = boto3.client("sqs")  # one client for the pipeline and for handing messages back to the submit queue
pipeline = build_pipeline(config, observer=telemetry, sqs=sqs)
message_delay = SqsMessageDelay(sqs, config.submit_queue_url)
deliveries = JobDeliveries(pipeline, message_delay, max_receive_count=config.max_receive_count)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """Submit every job an SQS message names; raising makes SQS deliver the message again.

    Each job is submitted on its own, so one that fails does not hold back the others (submitting again is
    harmless); on the message's last delivery a job that still fails is ended FAILED before the message goes
    to the dead-letter queue.
    """
    telemetry.job(None)
    requests = requests_in_message(
        json.loads(record.body),
        objects=pipeline.ports.objects,
        input_bucket=config.input_bucket,
        default_provider=config.default_provider,
    )
    failure: Exception | None = None
    for request in requests:
        telemetry.job(request.job_id, provider=request.provider)  # provider_task_id follows once created
        try:
            job = deliveries.submit(
                request,
                receipt_handle=record.receipt_handle,
                deliveries=int(record.attributes.approximate_receive_count),
            )
        except Exception as e:  # paced, and the job ended FAILED if this was the message's last delivery
            failure = failure or e
            continue
        if job is None:
            logger.info("video job handed to the media function")
            continue
        logger.info(
            "job submitted",
            extra={
                "state": job.state,
                "provider_task_id": job.provider_task_id,
                "error_code": (job.error or {}).get("code"),
            },
        )
    if failure is not None:
        raise failure


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    with pipeline.invocation(context.get_remaining_time_in_millis() / 1000):  # see Pipeline.invocation
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
