"""Configuration from the environment, over the provider registry's defaults."""

from __future__ import annotations

import json

import pytest

from faceswap.config import Config, ConfigError
from faceswap.providers.registry import PROVIDERS

BASE = {
    "JOBS_TABLE_NAME": "jobs",
    "INPUT_BUCKET_NAME": "inputs",
    "RESULTS_BUCKET_NAME": "results",
    "CHECK_QUEUE_URL": "https://sqs.example/checks",
    "EVENT_BUS_NAME": "bus",
    "WEBHOOK_SIGNING_KEY_SECRET_NAME": "signing-key",
}


def config(**env: str) -> Config:
    return Config.from_env({**BASE, **env})


def test_a_provider_takes_the_registrys_defaults() -> None:
    piapi = config(ENABLED_PROVIDERS="piapi", PIAPI_API_KEY_SECRET_NAME="stack/piapi").providers["piapi"]

    assert piapi.spec is PROVIDERS["piapi"]
    assert (piapi.api_key_secret, piapi.base_url, piapi.result_hosts) == (
        "stack/piapi",
        "https://api.piapi.ai",
        ("img.theapi.app", "*.piapi.ai"),
    )
    assert (piapi.per_second, piapi.per_hour, piapi.poll_delays) == (5, 0, (30.0, 1.5, 120.0))


def test_the_environment_overrides_the_registry() -> None:
    settings = config(
        ENABLED_PROVIDERS="aiphotocraft",
        AIPHOTOCRAFT_API_KEY_SECRET_NAME="k",
        AIPHOTOCRAFT_BASE_URL="http://127.0.0.1:9000",
        AIPHOTOCRAFT_RESULT_HOSTS="127.0.0.1, localhost",
        PROVIDER_RATE_LIMITS=json.dumps({"aiphotocraft": {"per_hour": 50}}),
        POLL_DELAYS=json.dumps({"aiphotocraft": [1, 1.5, 5]}),
    )

    provider = settings.providers["aiphotocraft"]
    assert (provider.base_url, provider.result_hosts) == ("http://127.0.0.1:9000", ("127.0.0.1", "localhost"))
    assert settings.rate_limits == {"aiphotocraft": (0, 50)}, "named ceilings replace the registry's"
    assert settings.poll_delays == {"aiphotocraft": (1.0, 1.5, 5.0)}


def test_explicit_ceilings_leave_a_provider_they_do_not_name_without_one() -> None:
    settings = config(
        ENABLED_PROVIDERS="piapi,crun",
        PIAPI_API_KEY_SECRET_NAME="a",
        CRUN_API_KEY_SECRET_NAME="b",
        PROVIDER_RATE_LIMITS="{}",
    )
    assert settings.rate_limits == {"piapi": (0, 0), "crun": (0, 0)}
    assert config(ENABLED_PROVIDERS="crun", CRUN_API_KEY_SECRET_NAME="b").rate_limits == {"crun": (5, 0)}


def test_a_keyed_provider_without_its_secret_is_not_enabled_and_the_engine_needs_its_url() -> None:
    settings = config(ENABLED_PROVIDERS="piapi,ailabapi", AILABAPI_API_KEY_SECRET_NAME="k")
    assert set(settings.providers) == {"ailabapi"}
    engine = config(ENABLED_PROVIDERS="piapi", SELFHOSTED_BASE_URL="http://10.0.0.5:8080/").providers["selfhosted"]
    assert (engine.api_key_secret, engine.result_hosts) == ("", ("10.0.0.5",))


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
        ({"JOB_DEADLINE_SECONDS": "soon"}, "JOB_DEADLINE_SECONDS"),
    ],
)
def test_a_bad_value_fails_fast_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config(**env)


def test_a_missing_required_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="JOBS_TABLE_NAME"):
        Config.from_env({k: v for k, v in BASE.items() if k != "JOBS_TABLE_NAME"})
