"""Configuration from the environment, over the provider registry's defaults."""

from __future__ import annotations

import json

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from faceswap.config import Config, ConfigError
from faceswap.providers.registry import PROVIDERS
from faceswap.wiring import secret_reader

BASE = {
    "JOBS_TABLE_NAME": "jobs",
    "INPUT_BUCKET_NAME": "inputs",
    "RESULTS_BUCKET_NAME": "results",
    "CHECK_QUEUE_URL": "https://sqs.example/checks",
    "EVENT_BUS_NAME": "bus",
    "WEBHOOK_SIGNING_KEY_SECRET_NAME": "signing-key",
    "PROVIDER_SECRETS_PREFIX": "stack/providers/",
}


def config(**env: str) -> Config:
    return Config.from_env({**BASE, **env})


def test_a_provider_takes_the_registrys_defaults() -> None:
    piapi = config(ENABLED_PROVIDERS="piapi").providers["piapi"]

    assert piapi.spec is PROVIDERS["piapi"]
    assert (piapi.api_key_secret, piapi.base_url, piapi.result_hosts) == (
        "stack/providers/piapi",
        "https://api.piapi.ai",
        ("img.theapi.app", "*.piapi.ai"),
    )
    assert (piapi.per_second, piapi.per_hour, piapi.poll_delays) == (5, 0, (30.0, 1.5, 120.0))


def test_the_environment_overrides_the_registry() -> None:
    settings = config(
        ENABLED_PROVIDERS="aiphotocraft",
        PROVIDER_ENDPOINTS=json.dumps(
            {"aiphotocraft": {"base_url": "http://127.0.0.1:9000", "result_hosts": ["127.0.0.1", "localhost"]}}
        ),
        PROVIDER_RATE_LIMITS=json.dumps({"aiphotocraft": {"per_hour": 50}}),
        POLL_DELAYS=json.dumps({"aiphotocraft": [1, 1.5, 5]}),
    )

    provider = settings.providers["aiphotocraft"]
    assert (provider.base_url, provider.result_hosts) == ("http://127.0.0.1:9000", ("127.0.0.1", "localhost"))
    assert settings.rate_limits == {"aiphotocraft": (0, 50)}, "named ceilings replace the registry's"
    assert settings.poll_delays == {"aiphotocraft": (1.0, 1.5, 5.0)}


def test_explicit_ceilings_leave_a_provider_they_do_not_name_without_one() -> None:
    settings = config(ENABLED_PROVIDERS="piapi,crun", PROVIDER_RATE_LIMITS="{}")
    assert settings.rate_limits == {"piapi": (0, 0), "crun": (0, 0)}
    assert config(ENABLED_PROVIDERS="crun").rate_limits == {"crun": (5, 0)}


def test_the_engine_is_enabled_by_its_endpoint_and_a_keyed_provider_needs_the_secrets_prefix() -> None:
    endpoints = json.dumps({"selfhosted": {"base_url": "http://10.0.0.5:8080/"}})
    settings = config(ENABLED_PROVIDERS="piapi", PROVIDER_ENDPOINTS=endpoints)
    engine = settings.providers["selfhosted"]
    assert list(settings.providers) == ["piapi", "selfhosted"]
    assert (engine.api_key_secret, engine.result_hosts) == ("", ("10.0.0.5",))
    with pytest.raises(ConfigError, match="selfhosted needs its base_url"):
        config(ENABLED_PROVIDERS="selfhosted")
    with pytest.raises(ConfigError, match="PROVIDER_SECRETS_PREFIX"):
        Config.from_env({k: v for k, v in BASE.items() if k != "PROVIDER_SECRETS_PREFIX"})


def test_tasks_offered_come_from_the_registry() -> None:
    settings = config(
        ENABLED_PROVIDERS="ailabapi,aiphotocraft",
        AILABAPI_API_KEY_SECRET_NAME="a",
        AIPHOTOCRAFT_API_KEY_SECRET_NAME="b",
    )
    assert settings.offered_tasks() == {
        "ailabapi": ("face-swap",),
        "aiphotocraft": ("face-swap", "multi-face-swap", "same-image-swap"),
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ENABLED_PROVIDERS": "piapi,deepfakes"}, "deepfakes"),
        ({"PROVIDER_RATE_LIMITS": "[1]"}, "PROVIDER_RATE_LIMITS"),
        ({"POLL_DELAYS": "{"}, "POLL_DELAYS"),
        ({"PROVIDER_ENDPOINTS": "[]"}, "PROVIDER_ENDPOINTS"),
        ({"DEFAULT_PROVIDER": "deepfakes"}, "DEFAULT_PROVIDER"),
        ({"JOB_DEADLINE_SECONDS": "soon"}, "JOB_DEADLINE_SECONDS"),
    ],
)
def test_a_bad_value_fails_fast_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config(**env)


def test_a_missing_required_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="JOBS_TABLE_NAME"):
        Config.from_env({k: v for k, v in BASE.items() if k != "JOBS_TABLE_NAME"})


def test_a_provider_key_secret_that_does_not_exist_is_a_retryable_configuration_error(aws_credentials: None) -> None:
    with mock_aws():
        secrets = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager"))
        boto3.client("secretsmanager").create_secret(Name="stack/providers/crun", SecretString="crun-key")
        read_missing = secret_reader("stack/providers/piapi", max_age=5, secrets=secrets)
        read_present = secret_reader("stack/providers/crun", max_age=5, secrets=secrets)

        with pytest.raises(ConfigError, match="stack/providers/piapi does not exist") as caught:
            read_missing()
        assert read_present() == "crun-key"
    assert caught.value.code == "configuration_error" and caught.value.retryable


def test_video_settings_come_from_the_registry_and_the_environment() -> None:
    settings = config(
        ENABLED_PROVIDERS="piapi",
        PROVIDER_ENDPOINTS=json.dumps({"selfhosted": {"base_url": "https://engine.example.com"}}),
        POLL_DELAYS=json.dumps({"piapi": [1, 1.5, 5]}),
        MEDIA_QUEUE_URL="https://sqs/media",
        VIDEO_WORKER="true",
        VIDEO_JOB_DEADLINE_SECONDS="2400",
        VIDEO_MAX_BYTES="1048576",
    )
    assert settings.video_poll_delays == {"piapi": (1.0, 1.5, 5.0), "selfhosted": (10.0, 1.5, 60.0)}
    assert (settings.media_queue_url, settings.video_worker) == ("https://sqs/media", True)
    assert (settings.video_job_deadline_seconds, settings.video_max_bytes) == (2400, 1048576)
    assert config().video_worker is False and config().video_result_max_bytes == 1024 * 1024 * 1024
