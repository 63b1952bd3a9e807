"""The provider registry: each entry names a real adapter and emulator that agree with it."""

from __future__ import annotations

import pytest

from faceswap.providers.registry import PROVIDERS, ProviderSpec, offers

SPECS = list(PROVIDERS.values())


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_entry_names_its_adapter_which_carries_the_same_name(spec: ProviderSpec) -> None:
    adapter = spec.adapter_class()
    assert adapter.name == spec.name
    for attribute in ("image_limits", "uses_webhook", "json_callbacks", "create_task", "get_task", "quota_delay"):
        assert hasattr(adapter, attribute), f"{spec.adapter} has no {attribute}"
    assert spec.tasks and set(spec.tasks) <= {"face-swap", "multi-face-swap", "same-image-swap"}
    first, factor, maximum = spec.poll_delays
    assert 0 < first <= maximum and factor >= 1


@pytest.mark.parametrize("spec", [s for s in SPECS if s.emulator], ids=lambda spec: spec.name)
def test_each_emulated_provider_has_an_emulator_the_local_stack_can_start(spec: ProviderSpec) -> None:
    emulator = spec.emulator_class()
    assert callable(getattr(emulator, "start", None)) and callable(getattr(emulator, "stop", None))


def test_a_provider_has_a_key_and_a_public_endpoint_or_is_the_deployments_own() -> None:
    for spec in SPECS:
        assert spec.api_key == bool(spec.base_url), f"{spec.name}: one without a key needs the deployment's URL"


def test_aiphotocrafts_endpoints_are_the_tasks_it_offers() -> None:
    from faceswap.providers.aiphotocraft import ENDPOINTS

    assert tuple(ENDPOINTS) == PROVIDERS["aiphotocraft"].tasks
    assert offers("aiphotocraft", "same-image-swap") and not offers("piapi", "same-image-swap")
    assert not offers("nobody", "face-swap")
