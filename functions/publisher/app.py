"""Publisher function: jobs-table stream → "Job Succeeded" / "Job Failed" on the event bus.

Publishing from the stream ties the event to the one conditional write that ended the job, so a job
publishes its end once however many callbacks or checks raced to finish it.
"""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.aws.dynamodb import job_from_item
from faceswap.aws.eventbridge import EventBridgePublisher
from faceswap.config import EVENT_BUS_NAME
from faceswap.events import terminal_event
from faceswap.observability import Telemetry

logger = Logger()
tracer = Tracer(patch_modules=("botocore",))  # it calls only AWS (EventBridge): no httpx to patch
metrics = Metrics()
telemetry = Telemetry(logger, tracer=tracer)
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, logger=logger)  # failed records are logged
publisher = EventBridgePublisher(boto3.client("events"), os.environ[EVENT_BUS_NAME])


@tracer.capture_method
def record_handler(record: DynamoDBRecord) -> None:
    """Publish the job's end if this row change ended it."""
    raw = record.raw_event["dynamodb"]
    if "NewImage" not in raw:
        return
    new = job_from_item(raw["NewImage"])
    old = job_from_item(raw["OldImage"]) if "OldImage" in raw else None
    event = terminal_event(old, new)
    if event is None:
        return
    detail_type, detail = event
    telemetry.job_seen(new)
    publisher.publish(detail_type, detail)
    telemetry.job_ended(new)  # counted here: the stream shows each job's end once
    logger.info("job end published", extra={"detail_type": detail_type, "state": new.state})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
