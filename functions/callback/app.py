"""Callback function: ``POST /callbacks/{provider}/{job_id}`` → verify the per-job secret, then collect."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from faceswap.config import Config
from faceswap.errors import PipelineError, ProviderUnavailable, WebhookRejected
from faceswap.ids import is_job_id
from faceswap.observability import TRACED_MODULES, Telemetry
from faceswap.wiring import build_pipeline

MAX_CALLBACK_BYTES = 256 * 1024

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


@app.exception_handler(ProviderUnavailable)
def provider_unavailable(error: ProviderUnavailable) -> Response:
    logger.warning("provider unavailable during callback", extra={"error_code": error.code})
    return _error(503, error.code, "the provider could not be asked for the task; try again")


@app.exception_handler(PipelineError)
def pipeline_error(error: PipelineError) -> Response:
    logger.exception("callback failed", extra={"error_code": error.code})
    return _error(500, error.code, "internal error")


@app.post("/callbacks/<provider>/<job_id>")
@tracer.capture_method
def callback(provider: str, job_id: str) -> Response:
    """Verify before parsing: the secret is checked on the raw request; the body is read only afterwards."""
    if not is_job_id(job_id):
        raise WebhookRejected("malformed job id")
    telemetry.job(job_id, provider=provider)  # provider_task_id follows when the task is read
    body = app.current_event.decoded_body or ""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > MAX_CALLBACK_BYTES:
        return _error(413, "payload_too_large", f"callback bodies are limited to {MAX_CALLBACK_BYTES} bytes")
    job = pipeline.callback(
        provider,
        job_id,
        headers=app.current_event.headers,
        query=app.current_event.query_string_parameters or {},
        body=raw,
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
    return app.resolve(event, context)
