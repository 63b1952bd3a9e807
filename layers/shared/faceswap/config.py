"""Configuration from the environment, read once at cold start; a missing required value fails fast.

Only names of secrets are in the environment; their values are read from Secrets Manager when used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from faceswap.errors import PipelineError

JOBS_TABLE_NAME = "JOBS_TABLE_NAME"
INPUT_BUCKET_NAME = "INPUT_BUCKET_NAME"
RESULTS_BUCKET_NAME = "RESULTS_BUCKET_NAME"
CHECK_QUEUE_URL = "CHECK_QUEUE_URL"
SUBMIT_QUEUE_URL = "SUBMIT_QUEUE_URL"
EVENT_BUS_NAME = "EVENT_BUS_NAME"
CALLBACK_BASE_URL = "CALLBACK_BASE_URL"
WEBHOOK_SIGNING_KEY_SECRET_NAME = "WEBHOOK_SIGNING_KEY_SECRET_NAME"  # noqa: S105 - a variable name
DEFAULT_PROVIDER = "DEFAULT_PROVIDER"
ENABLED_PROVIDERS = "ENABLED_PROVIDERS"
PROVIDER_RATE_LIMITS = "PROVIDER_RATE_LIMITS"
RATE_LIMIT_TABLE_NAME = "RATE_LIMIT_TABLE_NAME"
SELFHOSTED_BASE_URL = "SELFHOSTED_BASE_URL"
SELFHOSTED_RESULT_HOSTS = "SELFHOSTED_RESULT_HOSTS"
JOB_DEADLINE_SECONDS = "JOB_DEADLINE_SECONDS"
RESULT_MAX_BYTES = "RESULT_MAX_BYTES"
INPUT_MAX_BYTES = "INPUT_MAX_BYTES"
MAX_SUBMIT_ATTEMPTS = "MAX_SUBMIT_ATTEMPTS"
POLL_DELAYS = "POLL_DELAYS"
RESULT_URL_ALLOW_LOOPBACK = "RESULT_URL_ALLOW_LOOPBACK"
SECRETS_MAX_AGE_SECONDS = "SECRETS_MAX_AGE_SECONDS"
MAX_RECEIVE_COUNT = "MAX_RECEIVE_COUNT"


class ConfigError(PipelineError):
    code = "configuration_error"


KEYED_PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "piapi": ("https://api.piapi.ai", ("img.theapi.app", "*.piapi.ai")),
    "ailabapi": ("https://www.ailabapi.com", ("*.ailabapi.com", "*.ailabtools.com", "*.aliyuncs.com")),
    "crun": ("https://api.crun.ai", ("*.crun.ai",)),
    "aiphotocraft": ("https://aiapi.aiphotocraft.com", ("*.aiphotocraft.com",)),
}
"""Providers with an API key: default base URL and result hosts. Each reads ``<NAME>_API_KEY_SECRET_NAME``,
``<NAME>_BASE_URL`` and ``<NAME>_RESULT_HOSTS`` (e.g. ``PIAPI_BASE_URL``)."""


@dataclass(frozen=True)
class ProviderSettings:
    """One enabled provider: its API key secret (empty for ``selfhosted``), base URL, result hosts, and call
    ceilings (``per_second``, ``per_hour``; 0 = none)."""

    name: str
    api_key_secret: str
    base_url: str
    result_hosts: tuple[str, ...]
    per_second: int = 0
    per_hour: int = 0


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
    default_provider: str = "piapi"
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    rate_limit_table: str = ""
    job_deadline_seconds: int = 900
    result_max_bytes: int = 50 * 1024 * 1024
    input_max_bytes: int = 20 * 1024 * 1024
    max_submit_attempts: int = 3
    poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    allow_loopback_results: bool = False
    secrets_max_age_seconds: int = 300
    max_receive_count: int = 0
    """The function's queue's ``maxReceiveCount`` (its redrive policy): on that delivery a failing message's job
    is ended FAILED before the message goes to the dead-letter queue. 0: not a queue consumer."""

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

        def hosts(name: str) -> tuple[str, ...]:
            return tuple(h.strip() for h in env.get(name, "").split(",") if h.strip())

        return cls(
            jobs_table=required(JOBS_TABLE_NAME),
            input_bucket=required(INPUT_BUCKET_NAME),
            results_bucket=required(RESULTS_BUCKET_NAME),
            check_queue_url=required(CHECK_QUEUE_URL),
            event_bus=required(EVENT_BUS_NAME),
            callback_base_url=env.get(CALLBACK_BASE_URL, "").strip(),
            submit_queue_url=env.get(SUBMIT_QUEUE_URL, "").strip(),
            webhook_signing_key_secret=required(WEBHOOK_SIGNING_KEY_SECRET_NAME),
            default_provider=env.get(DEFAULT_PROVIDER, "").strip() or "piapi",
            providers=_providers(env, hosts),
            rate_limit_table=env.get(RATE_LIMIT_TABLE_NAME, "").strip(),
            job_deadline_seconds=number(JOB_DEADLINE_SECONDS, cls.job_deadline_seconds),
            result_max_bytes=number(RESULT_MAX_BYTES, cls.result_max_bytes),
            input_max_bytes=number(INPUT_MAX_BYTES, cls.input_max_bytes),
            max_submit_attempts=number(MAX_SUBMIT_ATTEMPTS, cls.max_submit_attempts),
            poll_delays=delays,
            allow_loopback_results=env.get(RESULT_URL_ALLOW_LOOPBACK, "").strip().lower() == "true",
            secrets_max_age_seconds=number(SECRETS_MAX_AGE_SECONDS, cls.secrets_max_age_seconds),
            max_receive_count=number(MAX_RECEIVE_COUNT, cls.max_receive_count),
        )

    def provider_names(self) -> frozenset[str]:
        """Names of the providers this deployment has enabled (without reading any secret)."""
        return frozenset(self.providers)


def _providers(env: Mapping[str, str], hosts: Callable[[str], tuple[str, ...]]) -> dict[str, ProviderSettings]:
    """The enabled providers: ``ENABLED_PROVIDERS`` with an API key secret each, plus ``selfhosted`` when
    ``SELFHOSTED_BASE_URL`` is set; ceilings from ``PROVIDER_RATE_LIMITS``."""
    try:
        limits = json.loads(env.get(PROVIDER_RATE_LIMITS) or "{}")
        if not isinstance(limits, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise ConfigError(f'{PROVIDER_RATE_LIMITS} must be JSON like {{"piapi": {{"per_second": 5}}}}.') from e
    enabled = {name.strip() for name in (env.get(ENABLED_PROVIDERS) or "piapi").split(",") if name.strip()}
    unknown = enabled - set(KEYED_PROVIDERS) - {"selfhosted"}
    if unknown:
        raise ConfigError(f"{ENABLED_PROVIDERS} names unknown providers: {', '.join(sorted(unknown))}.")
    providers: dict[str, ProviderSettings] = {}
    for name, (base_url, result_hosts) in KEYED_PROVIDERS.items():
        prefix = name.upper()
        secret = env.get(f"{prefix}_API_KEY_SECRET_NAME", "").strip()
        if name in enabled and secret:
            providers[name] = ProviderSettings(
                name,
                secret,
                env.get(f"{prefix}_BASE_URL", "").strip() or base_url,
                hosts(f"{prefix}_RESULT_HOSTS") or result_hosts,
                **_ceilings(limits.get(name)),
            )
    selfhosted = env.get(SELFHOSTED_BASE_URL, "").strip()
    if selfhosted:
        host = selfhosted.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        providers["selfhosted"] = ProviderSettings(
            "selfhosted",
            "",
            selfhosted,
            hosts(SELFHOSTED_RESULT_HOSTS) or (host,),
            **_ceilings(limits.get("selfhosted")),
        )
    return providers


def _ceilings(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: int(value[k]) for k in ("per_second", "per_hour") if isinstance(value.get(k), int | float)}
