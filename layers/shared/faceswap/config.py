"""Configuration from the environment, read once at cold start; a missing required value fails fast.

Only names of secrets are in the environment; their values are read from Secrets Manager when used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
PIAPI_API_KEY_SECRET_NAME = "PIAPI_API_KEY_SECRET_NAME"  # noqa: S105 - a variable name
PIAPI_BASE_URL = "PIAPI_BASE_URL"
PIAPI_RESULT_HOSTS = "PIAPI_RESULT_HOSTS"
SELFHOSTED_BASE_URL = "SELFHOSTED_BASE_URL"
SELFHOSTED_RESULT_HOSTS = "SELFHOSTED_RESULT_HOSTS"
JOB_DEADLINE_SECONDS = "JOB_DEADLINE_SECONDS"
RESULT_MAX_BYTES = "RESULT_MAX_BYTES"
INPUT_MAX_BYTES = "INPUT_MAX_BYTES"
MAX_SUBMIT_ATTEMPTS = "MAX_SUBMIT_ATTEMPTS"
POLL_DELAYS = "POLL_DELAYS"
RESULT_URL_ALLOW_LOOPBACK = "RESULT_URL_ALLOW_LOOPBACK"
SECRETS_MAX_AGE_SECONDS = "SECRETS_MAX_AGE_SECONDS"


class ConfigError(PipelineError):
    code = "configuration_error"


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
    piapi_api_key_secret: str = ""
    piapi_base_url: str = "https://api.piapi.ai"
    piapi_result_hosts: tuple[str, ...] = ("img.theapi.app", "*.piapi.ai")
    selfhosted_base_url: str = ""
    selfhosted_result_hosts: tuple[str, ...] = ()
    job_deadline_seconds: int = 900
    result_max_bytes: int = 50 * 1024 * 1024
    input_max_bytes: int = 20 * 1024 * 1024
    max_submit_attempts: int = 3
    poll_delays: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    allow_loopback_results: bool = False
    secrets_max_age_seconds: int = 300

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
            piapi_api_key_secret=env.get(PIAPI_API_KEY_SECRET_NAME, "").strip(),
            piapi_base_url=env.get(PIAPI_BASE_URL, "").strip() or cls.piapi_base_url,
            piapi_result_hosts=hosts(PIAPI_RESULT_HOSTS) or cls.piapi_result_hosts,
            selfhosted_base_url=env.get(SELFHOSTED_BASE_URL, "").strip(),
            selfhosted_result_hosts=hosts(SELFHOSTED_RESULT_HOSTS),
            job_deadline_seconds=number(JOB_DEADLINE_SECONDS, cls.job_deadline_seconds),
            result_max_bytes=number(RESULT_MAX_BYTES, cls.result_max_bytes),
            input_max_bytes=number(INPUT_MAX_BYTES, cls.input_max_bytes),
            max_submit_attempts=number(MAX_SUBMIT_ATTEMPTS, cls.max_submit_attempts),
            poll_delays=delays,
            allow_loopback_results=env.get(RESULT_URL_ALLOW_LOOPBACK, "").strip().lower() == "true",
            secrets_max_age_seconds=number(SECRETS_MAX_AGE_SECONDS, cls.secrets_max_age_seconds),
        )

    def provider_names(self) -> frozenset[str]:
        """Names of the providers this deployment has configured (without reading any secret)."""
        names = {"piapi"} if self.piapi_api_key_secret else set()
        if self.selfhosted_base_url:
            names.add("selfhosted")
        return frozenset(names)
