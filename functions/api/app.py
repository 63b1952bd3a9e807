"""Jobs API function: ``POST /jobs``, ``POST /uploads``, ``GET /jobs``, ``GET /jobs/{job_id}``,
``POST /jobs/{job_id}/retry`` and ``GET /openapi.json`` on the HTTP API (IAM/SigV4-authorised)."""

# No ``from __future__ import annotations`` here: Powertools reads the route signatures at run time to
# validate requests and to build the OpenAPI document.
import pathlib
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from faceswap.api_wiring import build_jobs_api
from faceswap.config import Config
from faceswap.errors import ApiError, PipelineError
from faceswap.schema import JobSubmission, describe

logger = Logger()
tracer = Tracer(patch_modules=("botocore",))  # it calls only AWS (DynamoDB, S3, SQS): no httpx to patch
metrics = Metrics()
copy_config_to_registered_loggers(source_logger=logger, include={"faceswap"})
app = APIGatewayHttpResolver(enable_validation=True)
jobs_api = build_jobs_api(Config.from_env())


class Accepted(BaseModel):
    job_id: str
    status: str
    status_url: str


class ResultView(BaseModel):
    s3_uri: str
    size: int = Field(description="bytes")
    sha256: str
    content_type: str
    download_url: str | None = None


class ChosenFaceView(BaseModel):
    pair: int = Field(description="the pair's index in face_map")
    box: list[int] = Field(description="[left, top, right, bottom] in pixels of the target as the provider received it")
    image_size: list[int] = Field(description="[width, height] of that image, in pixels")
    similarity: float = Field(description="similarity to the reference, 0-100")
    runner_up: float | None = Field(description="the next most similar face's similarity; null for a one-face target")
    method: str = Field(description="how the provider was given the face: native, detect-crop or isolate-composite")
    others: list[list[int]] = Field(default=[], description="boxes of the target's other faces, in the same pixels")


class VideoView(BaseModel):
    container: str = Field(description="mp4, mov or webm")
    duration: float = Field(description="seconds")
    frames: int
    fps: float
    width: int = Field(description="pixels")
    height: int = Field(description="pixels")
    video_codec: str
    pixel_format: str
    audio_codec: str | None = Field(description="null: no audio")
    audio_channels: int
    audio_sample_rate: int
    size: int = Field(description="bytes")
    rotation: int = Field(
        default=0, description="degrees a player turns the frames counter-clockwise (width and height as stored)"
    )


class MediaView(BaseModel):
    sent: VideoView = Field(description="the video as the provider received it (fitted to its limits)")
    source: VideoView = Field(description="the video as given")
    trimmed_to: float | None = Field(default=None, description="seconds, when the request asked to trim and it was cut")


class InputView(BaseModel):
    s3_uri: str | None = Field(default=None, description="an S3 input")
    url: str | None = Field(default=None, description="a URL input")
    download_url: str | None = Field(default=None, description="an S3 input's presigned URL, 15 minutes (not in lists)")


class InputsView(BaseModel):
    target: InputView | None = Field(default=None, description="the target image or video")
    swap_image: InputView | None = Field(default=None, description="the swap face; null for a face map job")
    face_map: list[dict[str, InputView | None]] = Field(default=[], description="each pair's reference and swap_image")


class JobView(BaseModel):
    job_id: str
    status: str = Field(description="RECEIVED, SUBMITTED, SUCCEEDED, FAILED or TIMED_OUT")
    provider: str
    task: str
    media_type: str = Field(description="image or video: what the target is")
    source: str
    created_at: str
    submitted_at: str | None = None
    finished_at: str | None = None
    deadline_at: str
    attempts: int
    error: dict[str, Any] | None = None
    retry_of: str | None = None
    options: dict[str, Any] = Field(default={}, description="the request's provider options")
    inputs: InputsView | None = Field(default=None, description="what went in")
    history: list[dict[str, Any]] = Field(
        default=[],
        description="the provider attempts, oldest first: {provider, at, provider_task_id} for a task made, "
        "{provider, at, error} for a provider that failed and handed the job to the next",
    )
    finished_by: Literal["webhook", "check"] | None = Field(
        default=None, description="what brought the provider's answer that ended the job"
    )
    result: ResultView | None = None
    face_map: list[dict[str, dict[str, str]]] | None = Field(
        default=None, description="the job's face map: pairs of reference and swap image (as stored references)"
    )
    chosen_faces: list[ChosenFaceView] | None = Field(
        default=None, description="the face chosen for each pair of face_map, once the job reached its provider"
    )
    media: MediaView | None = Field(default=None, description="a video job's video, once it reached its provider")


class JobList(BaseModel):
    jobs: list[JobView]
    next_token: str | None = None


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_type: Literal["image/jpeg", "image/png", "image/webp", "video/mp4", "video/quicktime", "video/webm"] = (
        "image/jpeg"
    )


class Upload(BaseModel):
    s3_key: str
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_in: int = Field(description="seconds")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable error code, e.g. invalid_request, job_not_found, job_not_retryable.")
    message: str


def _responses(status: int, model: type[BaseModel], *errors: int) -> dict[int, Any]:
    """The OpenAPI responses of a route: its success body, and the error bodies it can answer."""
    documented: dict[int, Any] = {status: {"description": "Success", "content": {"application/json": {"model": model}}}}
    for code in (*errors, 400):
        documented[code] = {"description": "Error", "content": {"application/json": {"model": ErrorBody}}}
    return documented


def _error(status: int, code: str, message: str) -> Response[dict[str, str]]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body={"code": code, "message": message}
    )


@app.exception_handler(RequestValidationError)
def invalid_body(error: RequestValidationError) -> Response[dict[str, str]]:
    """One place maps a schema violation to ``400 invalid_request``, naming the field."""
    first = error.errors()[0] if error.errors() else {}
    if first.get("type") == "json_invalid":
        return _error(400, "invalid_request", "Field 'body': the body is not valid JSON.")
    return _error(400, "invalid_request", describe(first, model=JobSubmission))


@app.not_found
def not_found(error: Exception) -> Response[dict[str, str]]:
    """A path the routes do not match (e.g. a job id with characters no job id has) is a job not found."""
    return _error(404, "job_not_found", "No such job or route.")


@app.exception_handler(RecursionError)
def too_deep(error: RecursionError) -> Response[dict[str, str]]:
    """A body nested deeper than the JSON parser goes (e.g. 40 KB of ``[``) is malformed, not a server error."""
    return _error(400, "invalid_request", "Field 'body': the body is nested too deeply.")


@app.exception_handler(ApiError)
def api_error(error: ApiError) -> Response[dict[str, str]]:
    return _error(error.status, error.code, error.message)


@app.exception_handler(PipelineError)
def pipeline_error(error: PipelineError) -> Response[dict[str, str]]:
    return _error(400, error.code, error.message)


def _status_url(job_id: str) -> str:
    event = app.current_event
    scheme = event.headers.get("x-forwarded-proto", "https")
    return f"{scheme}://{event.request_context.domain_name}/jobs/{job_id}"


@app.post("/jobs", status_code=202, responses=_responses(202, Accepted, 413), summary="Submit a job")
@tracer.capture_method
def submit_job(submission: Annotated[JobSubmission, Body()]) -> Response[Accepted]:
    # Validated by its schema above; the jobs API validates the body again with the deployment's own rules
    # (http:// URLs, configured providers) and stores inline images.
    job, created = jobs_api.submit(app.current_event.json_body)
    logger.append_keys(job_id=job.job_id, provider=job.provider)
    logger.info("job requested", extra={"new_job": created, "state": job.state})
    metrics.add_metric(name="ApiJobsRequested", unit="Count", value=1)
    body = Accepted(job_id=job.job_id, status=str(job.state), status_url=_status_url(job.job_id))
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=body)


@app.post("/uploads", status_code=201, responses=_responses(201, Upload), summary="Get a presigned upload URL")
def create_upload(request: Annotated[UploadRequest, Body()]) -> Response[Upload]:
    upload = Upload(**jobs_api.create_upload(request.content_type))
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=upload)


@app.get("/jobs", responses=_responses(200, JobList), summary="List jobs")
def list_jobs(
    status: Annotated[
        Literal["RECEIVED", "SUBMITTED", "SUCCEEDED", "FAILED", "TIMED_OUT"] | None,
        Query(description="Only jobs in this state."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
    provider: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only this provider's jobs (a filter: a page may hold fewer than limit while next_token "
            "says more remain).",
        ),
    ] = None,
) -> JobList:
    return JobList(**jobs_api.list(status=status, limit=limit, next_token=next_token, provider=provider))


@app.get("/jobs/<job_id>", responses=_responses(200, JobView, 404), summary="Read a job")
def get_job(job_id: Annotated[str, Path()]) -> JobView:
    return JobView(**jobs_api.get(job_id))


@app.post(
    "/jobs/<job_id>/retry", status_code=202, responses=_responses(202, Accepted, 404, 409), summary="Retry a failed job"
)
def retry_job(job_id: Annotated[str, Path()]) -> Response[Accepted]:
    job = jobs_api.retry(job_id)
    body = Accepted(job_id=job.job_id, status=str(job.state), status_url=_status_url(job.job_id))
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=body)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    """The committed OpenAPI document (generated from these routes by ``make schemas``; a test keeps it fresh)."""
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=OPENAPI_PATH.read_text())


OPENAPI_PATH = pathlib.Path(__file__).with_name("openapi.json")
OPENAPI_INFO = {
    "title": "faceswap-pipeline jobs API",
    "version": "1.0.0",
    "description": "Submit face-swap jobs, follow them and fetch their results. Every route is authorised with AWS "
    "IAM (SigV4, service execute-api).",
}
"""What ``make schemas`` passes to ``app.get_openapi_json_schema`` to write :data:`OPENAPI_PATH`."""


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
