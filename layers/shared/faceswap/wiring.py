"""Builds the pipeline for the Lambda handlers: AWS clients, httpx clients, secrets and providers, once (the jobs
API's handler builds its own, lighter, with :mod:`faceswap.api_wiring`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import httpx
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from faceswap.aws.dynamodb import DynamoJobStore
from faceswap.aws.ratelimit import DynamoRateLimiter
from faceswap.aws.rekognition import RekognitionFaceMatcher
from faceswap.aws.s3 import S3ObjectStore
from faceswap.aws.sqs import SqsCheckScheduler, SqsRequestQueue
from faceswap.config import Config, ConfigError
from faceswap.fetch import ResultFetcher
from faceswap.jobs import Pipeline, Ports, Settings
from faceswap.observability import ObservedProvider, ProviderObserver
from faceswap.ports import Provider

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

PROVIDER_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
"""Provider API calls: 5 s to connect, 20 s for each read/write."""

RESULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Result downloads: 5 s to connect, 30 s between bytes."""


def secret_reader(name: str, *, max_age: int, secrets: parameters.SecretsProvider) -> Callable[[], str]:
    """A function returning the secret's current value, cached by ``secrets`` for ``max_age`` s.

    ``secrets`` is the build's own Powertools provider, with a client made with the build's other clients: not
    Powertools' process-wide default, whose client is made at the first read anywhere in the process (in the
    local stack, several stacks come and go in one process, and a later one would read through a stopped one).
    """

    def read() -> str:
        try:
            value = secrets.get(name, max_age=max_age)
        except GetParameterError as e:
            # Powertools wraps every failure; only "no such secret" is the deployment's to fix (a provider enabled
            # before its key was stored): the job fails visibly, naming what to create. Anything else (throttling,
            # the network) is raised as it is, so the message is delivered again.
            cause = e.__cause__ or e.__context__
            if (
                isinstance(cause, ClientError)
                and cause.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            ):
                raise ConfigError(
                    f"Secret {name} does not exist; create it with the provider's API key (README, 'Provider keys "
                    "in Secrets Manager')."
                ) from e
            raise
        if not isinstance(value, str) or not value:
            raise ConfigError(f"Secret {name} is empty.")
        return value

    return read


def build_providers(
    config: Config,
    client: httpx.Client,
    *,
    observer: ProviderObserver | None = None,
    secrets: parameters.SecretsProvider,
) -> dict[str, Provider]:
    """The configured provider adapters by name, each made from its registry entry (a provider that is not
    configured is left out, and its adapter's module is never imported).

    With an ``observer``, each adapter is wrapped in :class:`faceswap.observability.ObservedProvider`, which
    reports the duration and outcome of every provider call to it.
    """
    providers: dict[str, Provider] = {}
    for name, settings in config.providers.items():
        options: dict[str, Any] = {"base_url": settings.base_url, "result_hosts": settings.result_hosts}
        if settings.spec.api_key:
            options["api_key"] = secret_reader(
                settings.api_key_secret, max_age=config.secrets_max_age_seconds, secrets=secrets
            )
        providers[name] = settings.spec.adapter_class()(client, **options)
    if observer is not None:
        return {name: ObservedProvider(provider, observer) for name, provider in providers.items()}
    return providers


def build_ports(
    config: Config,
    *,
    with_providers: bool = True,
    observer: ProviderObserver | None = None,
    sqs: SQSClient | None = None,
) -> Ports:
    """The domain's adapters on AWS and the providers, made once per container.

    ``with_providers=False`` builds no provider adapters and never reads a provider secret.
    ``observer`` (a handler's :class:`faceswap.observability.Telemetry`) is told about every provider call.
    ``sqs``: an SQS client the handler uses too (one client per container; made here when not given).
    Make the handler's ``Tracer`` first: X-Ray patches ``httpx.Client``, which is instantiated here.
    """
    # One TLS context for both clients (httpx makes one per client otherwise): loading the CA bundle into a context
    # takes about 20 ms, paid at every cold start (make bench, "cold start").
    tls = httpx.create_ssl_context()
    provider_client = httpx.Client(timeout=PROVIDER_TIMEOUT, verify=tls)
    fetch_client = httpx.Client(timeout=RESULT_TIMEOUT, follow_redirects=False, verify=tls)
    providers: dict[str, Provider] = {}
    signing_key: Callable[[], bytes] = _no_signing_key
    if with_providers:
        secrets = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager"))
        providers = build_providers(config, provider_client, observer=observer, secrets=secrets)
        signing_key = _encoded(
            secret_reader(config.webhook_signing_key_secret, max_age=config.secrets_max_age_seconds, secrets=secrets)
        )
    dynamodb, sqs = boto3.client("dynamodb"), sqs or boto3.client("sqs")
    objects = S3ObjectStore(boto3.client("s3"))
    return Ports(
        store=DynamoJobStore(dynamodb, config.jobs_table),
        objects=objects,
        inputs=objects,
        limiter=DynamoRateLimiter(dynamodb, config.rate_limit_table) if config.rate_limit_table else None,
        requeue=(
            SqsRequestQueue(sqs, config.submit_queue_url, media_queue_url=config.media_queue_url)
            if config.submit_queue_url
            else None
        ),
        scheduler=SqsCheckScheduler(sqs, config.check_queue_url, media_queue_url=config.media_queue_url),
        providers=providers,
        fetcher=ResultFetcher(
            fetch_client, max_bytes=config.result_max_bytes, allow_loopback=config.allow_loopback_results
        ),
        input_fetcher=ResultFetcher(
            fetch_client,
            max_bytes=config.input_max_bytes,
            allow_loopback=config.allow_loopback_results,
            subject="input image",
            sniff=False,
        ),
        signing_key=signing_key,
        matcher=(
            RekognitionFaceMatcher(lambda: boto3.client("rekognition"))
            if with_providers and config.face_match_threshold is not None
            else None
        ),
    )


def settings(config: Config) -> Settings:
    """The domain's settings from the deployment's configuration."""
    return Settings(
        results_bucket=config.results_bucket,
        callback_base_url=config.callback_base_url,
        job_deadline_seconds=config.job_deadline_seconds,
        max_input_bytes=config.input_max_bytes,
        video_deadline_seconds=config.video_job_deadline_seconds,
        max_video_bytes=config.video_max_bytes,
        max_video_result_bytes=config.video_result_max_bytes,
        max_submit_attempts=config.max_submit_attempts,
        poll_delays=config.poll_delays,
        video_poll_delays=config.video_poll_delays,
        input_bucket=config.input_bucket,
        rate_limits=config.rate_limits,
        max_receive_count=config.max_receive_count,
        face_match_threshold=config.face_match_threshold or 0.0,
        face_match_margin=config.face_match_margin,
        hand_over_videos=bool(config.media_queue_url) and not config.video_worker,
    )


def build_pipeline(
    config: Config, *, observer: ProviderObserver | None = None, sqs: SQSClient | None = None
) -> Pipeline:
    """Wire the domain to AWS and the providers, as each handler does once per container (see
    :func:`build_ports` for the arguments)."""
    return Pipeline(build_ports(config, observer=observer, sqs=sqs), settings(config))


def _encoded(read: Callable[[], str]) -> Callable[[], bytes]:
    return lambda: read().encode("utf-8")


def _no_signing_key() -> bytes:
    raise ConfigError("This function reads no secrets: it neither signs nor verifies webhooks.")
