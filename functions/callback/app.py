"""Callback function: ``POST /callbacks/{provider}/{job_id}`` → verify the per-job secret, then collect.

The order of the checks is the contract (design.md "Webhook security"):

1. a malformed job id → 401 ``webhook_unauthorized``; a body over ``MAX_CALLBACK_BYTES`` → 413
   ``payload_too_large`` (both before the secret: neither needs it);
2. the per-job secret, on the raw request → 401 ``webhook_unauthorized`` (an unauthenticated caller learns
   nothing else);
3. only then the body: for a provider whose callbacks are JSON (``json_callbacks``), another content type →
   415 ``unsupported_media_type`` and a body that is not a JSON object → 400 ``invalid_callback``;
4. the job, and the provider's own task status (the body is never trusted for it).

The answer comes inside the HTTP API's 30 s integration timeout: the function's ``Timeout`` is below it, and a
result copy still running when ``COPY_SHARE`` of the function's time is spent is stopped (nothing kept) and handed
to a check at once (``Pipeline.callback``'s ``deadline``).

Steps 2 to 4 are the domain's ``Pipeline.callback``; this handler maps its errors to answers.
"""

from __future__ import annotations

import base64
import binascii
import time

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.config import Config
from faceswap.errors import (
    CallbackRefused,
    PipelineError,
    ProviderUnavailable,
    UnsupportedCallbackType,
    WebhookRejected,
)
from faceswap.ids import is_job_id
from faceswap.observability import TRACED_MODULES, Telemetry
from faceswap.wiring import build_pipeline

MAX_CALLBACK_BYTES = 256 * 1024
COPY_SHARE = 0.6
"""Share of the invocation's remaining time the result copy may take (15 of 25 s); the rest covers the S3 part
upload in flight when the deadline passes, the abort, the check it is handed to and the answer."""

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()
telemetry = Telemetry(logger, tracer=tracer)
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
app = APIGatewayHttpResolver()
pipeline = build_pipeline(Config.from_env(), observer=telemetry)


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body={"code": code, "message": message}
    )


@app.exception_handler(WebhookRejected)
def webhook_rejected(error: WebhookRejected) -> Response:
    metrics.add_metric(name="WebhookRejections", unit="Count", value=1)
    logger.warning("callback rejected", extra={"error_code": error.code})
    return _error(401, error.code, "unauthorized")


@app.exception_handler(CallbackRefused)
def callback_refused(error: CallbackRefused) -> Response:
    # Counted: if a provider changed its callbacks' format, every one would be refused (the poller still collects).
    metrics.add_metric(name="CallbackBodyRefusals", unit="Count", value=1)
    logger.warning("callback body refused", extra={"error_code": error.code})
    status = 415 if isinstance(error, UnsupportedCallbackType) else 400
    return _error(status, error.code, str(error))


@app.exception_handler(ProviderUnavailable)
def provider_unavailable(error: ProviderUnavailable) -> Response:
    logger.warning("provider unavailable during callback", extra={"error_code": error.code})
    return _error(503, error.code, "the provider could not be asked for the task; try again")


@app.exception_handler(PipelineError)
def pipeline_error(error: PipelineError) -> Response:
    logger.exception("callback failed", extra={"error_code": error.code})
    return _error(500, error.code, "internal error")


def raw_body(event: APIGatewayProxyEventV2) -> bytes:
    """The request body as the caller sent it, in bytes (base64 undone, nothing decoded as text).

    Raises
    ------
    WebhookRejected
        The gateway marked the body base64 but it is not (never the case behind API Gateway).
    """
    body = event.body or ""
    if not event.is_base64_encoded:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WebhookRejected("The callback body could not be read.") from e


@app.post("/callbacks/<provider>/<job_id>")
@tracer.capture_method
def callback(provider: str, job_id: str) -> Response:
    """Verify before parsing: the secret is checked on the raw request; the body is read only afterwards."""
    if not is_job_id(job_id):
        raise WebhookRejected("malformed job id")
    telemetry.job(job_id, provider=provider)  # provider_task_id follows when the task is read
    event = app.current_event
    raw = raw_body(event)
    if len(raw) > MAX_CALLBACK_BYTES:
        return _error(413, "payload_too_large", f"callback bodies are limited to {MAX_CALLBACK_BYTES} bytes")
    deadline = time.monotonic() + app.lambda_context.get_remaining_time_in_millis() / 1000 * COPY_SHARE
    job = pipeline.callbacks.callback(
        provider, job_id, headers=event.headers, query=event.query_string_parameters or {}, body=raw, deadline=deadline
    )
    telemetry.job_seen(job)
    logger.info("callback handled", extra={"state": job.state})
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body={"job_id": job.job_id, "status": str(job.state)},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    with pipeline.invocation(context.get_remaining_time_in_millis() / 1000):  # see Pipeline.invocation
        return app.resolve(event, context)
