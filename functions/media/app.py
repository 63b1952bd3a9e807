"""Media function: media-queue messages (video jobs' requests and checks) → fitted videos, provider tasks, checks,
results checked and kept.

Video jobs run here and nowhere else: this function has PyAV (the media layer), a full vCPU and more, fifteen minutes
and room in ``/tmp``, and takes one message at a time, so a long video never holds back other messages of its batch.
A message is either a job request (``{"job_request": …}``, from the submit function, the jobs API or a move to the
next provider) or a check (``{"job_id", "check", "task_id"}``); both are the pipeline's own operations, as in the
submit and poller functions.
"""

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
from faceswap.media import remove_stale_workdirs
from faceswap.messages import check_from_message, request_from_message
from faceswap.observability import TRACED_MODULES, Telemetry
from faceswap.wiring import build_pipeline

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()
telemetry = Telemetry(logger, tracer=tracer)
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
processor = BatchProcessor(event_type=EventType.SQS, logger=logger)  # a failed record is logged with its job keys
config = Config.from_env()
sqs = boto3.client("sqs")  # one client for the pipeline and for pacing failed messages
pipeline = build_pipeline(config, observer=telemetry, sqs=sqs)
# Over a provider's ceiling a request waits at least 5 s: each comeback counts towards the queue's 20 deliveries.
message_delay = SqsMessageDelay(sqs, config.media_queue_url)
deliveries = JobDeliveries(
    pipeline,
    message_delay,
    max_receive_count=config.max_receive_count,
    rate_limited_wait=5,
)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """One video job's request or check; raising makes SQS deliver the message again (on its last delivery the job
    is ended FAILED first, as in the submit and poller functions)."""
    body = json.loads(record.body)
    delivery = {
        "receipt_handle": record.receipt_handle,
        "deliveries": int(record.attributes.approximate_receive_count),
    }
    if "job_request" in body:
        request = request_from_message(body["job_request"])
        telemetry.job(request.job_id, provider=request.provider)
        job = deliveries.submit(request, **delivery)
        assert job is not None, "the media function runs video jobs: it hands none over"
        logger.info("video job submitted", extra={"state": job.state, "error_code": (job.error or {}).get("code")})
        return
    job_id, check, task_id = check_from_message(record.body)
    telemetry.job(job_id)
    checked = deliveries.check(job_id, check, task_id, **delivery)
    if checked is not None:
        telemetry.job_seen(checked)
        logger.info("video job checked", extra={"state": checked.state})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # /tmp outlives an invocation, and a run Lambda stopped (timeout, out of memory) never cleaned up after itself.
    remove_stale_workdirs()
    with pipeline.invocation(context.get_remaining_time_in_millis() / 1000):  # see Pipeline.invocation
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
