"""Poller function: check-queue messages → ask the provider, collect when done, look again later, or time out."""

from __future__ import annotations

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.aws.sqs import JobDeliveries, SqsMessageDelay
from faceswap.config import Config
from faceswap.messages import check_from_message
from faceswap.observability import TRACED_MODULES, Telemetry
from faceswap.wiring import build_pipeline

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()
telemetry = Telemetry(logger, tracer=tracer)
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
processor = BatchProcessor(event_type=EventType.SQS, logger=logger)  # a failed record is logged with its job keys
config = Config.from_env()
sqs = boto3.client("sqs")  # one client for the pipeline and for pacing failed checks
pipeline = build_pipeline(config, observer=telemetry, sqs=sqs)
# A failed check comes back after 10, 30, 90… s rather than the queue's 6-minute visibility timeout, and on the
# message's last delivery its job is ended FAILED, visibly, before the message goes to the DLQ.
message_delay = SqsMessageDelay(sqs, config.check_queue_url)
deliveries = JobDeliveries(pipeline, message_delay, max_receive_count=config.max_receive_count)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """One check: message body ``{"job_id": str, "check": int}``."""
    job_id, check, task_id = check_from_message(record.body)
    telemetry.job(job_id)  # provider and task id follow when the job is read
    job = deliveries.check(
        job_id,
        check,
        task_id,
        receipt_handle=record.receipt_handle,
        deliveries=int(record.attributes.approximate_receive_count),
    )
    if job is not None:
        telemetry.job_seen(job)
        logger.info("job checked", extra={"state": job.state})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    with pipeline.invocation(context.get_remaining_time_in_millis() / 1000):  # see Pipeline.invocation
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
