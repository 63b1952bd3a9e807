"""Configuration from the environment, read once at cold start; a missing required value fails fast.

Only names of secrets are in the environment; their values are read from Secrets Manager when used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faceswap.errors import PipelineError
from faceswap.providers.registry import PROVIDERS, ProviderSpec

JOBS_TABLE_NAME = "JOBS_TABLE_NAME"
INPUT_BUCKET_NAME = "INPUT_BUCKET_NAME"
RESULTS_BUCKET_NAME = "RESULTS_BUCKET_NAME"
CHECK_QUEUE_URL = "CHECK_QUEUE_URL"
SUBMIT_QUEUE_URL = "SUBMIT_QUEUE_URL"
MEDIA_QUEUE_URL = "MEDIA_QUEUE_URL"
VIDEO_WORKER = "VIDEO_WORKER"
EVENT_BUS_NAME = "EVENT_BUS_NAME"
CALLBACK_BASE_URL = "CALLBACK_BASE_URL"
WEBHOOK_SIGNING_KEY_SECRET_NAME = "WEBHOOK_SIGNING_KEY_SECRET_NAME"  # noqa: S105 - a variable name
DEFAULT_PROVIDER = "DEFAULT_PROVIDER"
ENABLED_PROVIDERS = "ENABLED_PROVIDERS"
PROVIDER_RATE_LIMITS = "PROVIDER_RATE_LIMITS"
RATE_LIMIT_TABLE_NAME = "RATE_LIMIT_TABLE_NAME"
PROVIDER_ENDPOINTS = "PROVIDER_ENDPOINTS"
PROVIDER_SECRETS_PREFIX = "PROVIDER_SECRETS_PREFIX"
JOB_DEADLINE_SECONDS = "JOB_DEADLINE_SECONDS"
RESULT_MAX_BYTES = "RESULT_MAX_BYTES"
INPUT_MAX_BYTES = "INPUT_MAX_BYTES"
MAX_SUBMIT_ATTEMPTS = "MAX_SUBMIT_ATTEMPTS"
POLL_DELAYS = "POLL_DELAYS"
RESULT_URL_ALLOW_LOOPBACK = "RESULT_URL_ALLOW_LOOPBACK"
SECRETS_MAX_AGE_SECONDS = "SECRETS_MAX_AGE_SECONDS"
MAX_RECEIVE_COUNT = "MAX_RECEIVE_COUNT"
VIDEO_JOB_DEADLINE_SECONDS = "VIDEO_JOB_DEADLINE_SECONDS"
VIDEO_MAX_BYTES = "VIDEO_MAX_BYTES"
VIDEO_RESULT_MAX_BYTES = "VIDEO_RESULT_MAX_BYTES"
FACE_MATCH_THRESHOLD = "FACE_MATCH_THRESHOLD"
FACE_MATCH_MARGIN = "FACE_MATCH_MARGIN"


class ConfigError(PipelineError):
    """``configuration_error``: the deployment's configuration is missing or wrong (at cold start), or a secret a
    job needs cannot be read; retryable once the configuration is fixed."""

    code = "configuration_error"
    retryable = True


@dataclass(frozen=True)
class ProviderSettings:
    """One enabled provider as this deployment runs it: its declaration (:mod:`faceswap.providers.registry`), its
    API key secret (empty when it needs none), base URL, result hosts, call ceilings (``per_second``, ``per_hour``;
    0 = none) and check cadence (``poll_delays``), each the registry's default unless the environment overrides it."""

    spec: ProviderSpec
    api_key_secret: str
    base_url: str
    result_hosts: tuple[str, ...]
    poll_delays: tuple[float, float, float]
    per_second: int = 0
    per_hour: int = 0
    video_poll_delays: tuple[float, float, float] = (30.0, 1.5, 120.0)
    """Check cadence of its video tasks: the registry's, or ``POLL_DELAYS``' for the provider (both kinds alike)."""

    @property
    def name(self) -> str:
        """The provider's name."""
        return self.spec.name


@dataclass(frozen=True)
class Config:
    """The deployment's settings (see ``template.yaml`` Globals for where each comes from).

    Attributes are the environment variables above, parsed: byte and second values as ``int``, host lists
    as tuples, ``poll_delays`` as ``{provider: (first, factor, maximum)}`` seconds.
    """

    jobs_table: str
    input_bucket: str
    results_bucket: str
    check_queue_url: str
    event_bus: str
    webhook_signing_key_secret: str
    callback_base_url: str = ""
    submit_queue_url: str = ""
    media_queue_url: str = ""
    """The media queue: video jobs' requests and checks, read by the media function (empty: none; video jobs then run
    in the submit and poller functions, as in unit tests)."""
    video_worker: bool = False
    """Whether this function runs video jobs (the media function); others hand them to the media queue."""
    default_provider: str = "piapi"
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    rate_limit_table: str = ""
    job_deadline_seconds: int = 900
    result_max_bytes: int = 50 * 1024 * 1024
    input_max_bytes: int = 20 * 1024 * 1024
    video_job_deadline_seconds: int = 1800
    video_max_bytes: int = 500 * 1024 * 1024
    video_result_max_bytes: int = 1024 * 1024 * 1024
    max_submit_attempts: int = 3
    allow_loopback_results: bool = False
    secrets_max_age_seconds: int = 300
    max_receive_count: int = 0
    """The function's queue's ``maxReceiveCount`` (its redrive policy): on that delivery a failing message's job
    is ended FAILED before the message goes to the dead-letter queue. 0: not a queue consumer."""
    face_match_threshold: float | None = None
    """Least similarity (0-100) of a face map's match (:mod:`faceswap.faces`); ``None``: this function chooses no
    faces (only the submit function does, and only it may call the face matcher)."""
    face_match_margin: float = 10.0
    """Least lead of a match over the runner-up, in similarity points (0-100)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read the configuration.

        Raises
        ------
        ConfigError
            A required variable is missing or a value does not parse; the message names the variable.
        """
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"Environment variable {name} is required.")
            return value

        def number(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError as e:
                raise ConfigError(f"Environment variable {name} must be a whole number, not {text!r}.") from e

        try:
            delays = {
                name: (float(v[0]), float(v[1]), float(v[2]))
                for name, v in json.loads(env.get(POLL_DELAYS) or "{}").items()
            }
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise ConfigError(f'{POLL_DELAYS} must be JSON like {{"piapi": [30, 1.5, 120]}}.') from e

        return cls(
            jobs_table=required(JOBS_TABLE_NAME),
            input_bucket=required(INPUT_BUCKET_NAME),
            results_bucket=required(RESULTS_BUCKET_NAME),
            check_queue_url=required(CHECK_QUEUE_URL),
            event_bus=required(EVENT_BUS_NAME),
            callback_base_url=env.get(CALLBACK_BASE_URL, "").strip(),
            submit_queue_url=env.get(SUBMIT_QUEUE_URL, "").strip(),
            media_queue_url=env.get(MEDIA_QUEUE_URL, "").strip(),
            video_worker=env.get(VIDEO_WORKER, "").strip().lower() == "true",
            webhook_signing_key_secret=required(WEBHOOK_SIGNING_KEY_SECRET_NAME),
            default_provider=_known(env.get(DEFAULT_PROVIDER, "").strip() or "piapi"),
            providers=_providers(env, delays),
            rate_limit_table=env.get(RATE_LIMIT_TABLE_NAME, "").strip(),
            job_deadline_seconds=number(JOB_DEADLINE_SECONDS, cls.job_deadline_seconds),
            result_max_bytes=number(RESULT_MAX_BYTES, cls.result_max_bytes),
            input_max_bytes=number(INPUT_MAX_BYTES, cls.input_max_bytes),
            video_job_deadline_seconds=number(VIDEO_JOB_DEADLINE_SECONDS, cls.video_job_deadline_seconds),
            video_max_bytes=number(VIDEO_MAX_BYTES, cls.video_max_bytes),
            video_result_max_bytes=number(VIDEO_RESULT_MAX_BYTES, cls.video_result_max_bytes),
            max_submit_attempts=number(MAX_SUBMIT_ATTEMPTS, cls.max_submit_attempts),
            allow_loopback_results=env.get(RESULT_URL_ALLOW_LOOPBACK, "").strip().lower() == "true",
            secrets_max_age_seconds=number(SECRETS_MAX_AGE_SECONDS, cls.secrets_max_age_seconds),
            max_receive_count=number(MAX_RECEIVE_COUNT, cls.max_receive_count),
            face_match_threshold=_similarity(env, FACE_MATCH_THRESHOLD),
            face_match_margin=_or(_similarity(env, FACE_MATCH_MARGIN), cls.face_match_margin),
        )

    @property
    def poll_delays(self) -> dict[str, tuple[float, float, float]]:
        """``{provider: (first, factor, maximum)}`` check cadence of each enabled provider, in seconds."""
        return {name: settings.poll_delays for name, settings in self.providers.items()}

    @property
    def video_poll_delays(self) -> dict[str, tuple[float, float, float]]:
        """The same for video tasks."""
        return {name: settings.video_poll_delays for name, settings in self.providers.items()}

    @property
    def rate_limits(self) -> dict[str, tuple[int, int]]:
        """``{provider: (per_second, per_hour)}`` call ceilings of each enabled provider (0 = none)."""
        return {name: (settings.per_second, settings.per_hour) for name, settings in self.providers.items()}

    def offered_tasks(self) -> dict[str, tuple[str, ...]]:
        """``{provider: tasks}`` of each enabled provider (what the jobs API accepts before queueing)."""
        return {name: settings.spec.tasks for name, settings in self.providers.items()}


def _providers(env: Mapping[str, str], delays: Mapping[str, tuple[float, float, float]]) -> dict[str, ProviderSettings]:
    """The enabled providers, each over its registry entry.

    ``ENABLED_PROVIDERS`` names them (default ``piapi``), and a provider that needs no key is enabled by an endpoint
    of its own in ``PROVIDER_ENDPOINTS`` too. A provider's API key is the secret ``PROVIDER_SECRETS_PREFIX`` +
    its name. ``PROVIDER_ENDPOINTS`` (JSON ``{name: {"base_url", "result_hosts"}}``) overrides the registry's base
    URL and result hosts (result hosts default to the base URL's host when the registry has none). Ceilings are the
    registry's unless ``PROVIDER_RATE_LIMITS`` is set (then exactly its own: a provider it does not name has none);
    cadence comes from ``POLL_DELAYS`` over the registry's defaults (for image and video tasks alike).
    """
    limits = _json_object(env, PROVIDER_RATE_LIMITS, '{"piapi": {"per_second": 5}}')
    endpoints = _json_object(env, PROVIDER_ENDPOINTS, '{"selfhosted": {"base_url": "https://engine.example.com"}}')
    strangers = sorted(set(endpoints or {}) - set(PROVIDERS))
    if strangers:
        raise ConfigError(f"{PROVIDER_ENDPOINTS} names unknown providers: {', '.join(strangers)}.")
    enabled = {name.strip() for name in (env.get(ENABLED_PROVIDERS) or "piapi").split(",") if name.strip()}
    enabled |= {name for name in endpoints or {} if name in PROVIDERS and not PROVIDERS[name].api_key}
    unknown = enabled - set(PROVIDERS)
    if unknown:
        raise ConfigError(f"{ENABLED_PROVIDERS} names unknown providers: {', '.join(sorted(unknown))}.")
    prefix = env.get(PROVIDER_SECRETS_PREFIX, "").strip()
    providers: dict[str, ProviderSettings] = {}
    for name in sorted(enabled, key=list(PROVIDERS).index):
        spec = PROVIDERS[name]
        endpoint = (endpoints or {}).get(name) or {}
        if not isinstance(endpoint, dict):
            raise ConfigError(f"{PROVIDER_ENDPOINTS}[{name!r}] must be an object with base_url and result_hosts.")
        base_url = str(endpoint.get("base_url") or spec.base_url).strip()
        if not base_url:
            raise ConfigError(f"{name} needs its base_url in {PROVIDER_ENDPOINTS}.")
        if spec.api_key and not prefix:
            raise ConfigError(f"Environment variable {PROVIDER_SECRETS_PREFIX} is required by {name}.")
        host = base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        ceilings = {"per_second": spec.per_second, "per_hour": spec.per_hour}
        if limits is not None:  # the deployment's own ceilings: a provider it does not name has none
            ceilings = {"per_second": 0, "per_hour": 0, **_ceilings(limits.get(name))}
        providers[name] = ProviderSettings(
            spec,
            prefix + name if spec.api_key else "",
            base_url,
            _hosts(endpoint.get("result_hosts")) or spec.result_hosts or (host,),
            poll_delays=delays.get(name, spec.poll_delays),
            video_poll_delays=delays.get(name, spec.video_poll_delays),
            **ceilings,
        )
    return providers


def _json_object(env: Mapping[str, str], name: str, example: str) -> dict[str, Any] | None:
    """The JSON object in variable ``name``; ``None`` when it is empty or unset."""
    raw = env.get(name, "").strip()
    try:
        value = json.loads(raw) if raw else None
        if value is not None and not isinstance(value, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise ConfigError(f"{name} must be JSON like {example}.") from e
    return value


def _hosts(value: Any) -> tuple[str, ...]:
    """Result hosts as a list or a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(str(h).strip() for h in items if str(h).strip())


def _known(provider: str) -> str:
    if provider not in PROVIDERS:
        raise ConfigError(f"{DEFAULT_PROVIDER} {provider!r} is not a provider; known: {', '.join(PROVIDERS)}.")
    return provider


def _ceilings(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: int(value[k]) for k in ("per_second", "per_hour") if isinstance(value.get(k), int | float)}


def _similarity(env: Mapping[str, str], name: str) -> float | None:
    """A similarity (0-100) from ``env[name]``, or ``None`` when it is not set."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 100.0:
        raise ConfigError(f"Environment variable {name} must be a similarity from 0 to 100, not {text!r}.")
    return value


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
