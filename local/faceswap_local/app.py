"""The whole local stack in one object: moto server, resources from the template, emulators, runtime, gateway."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from faceswap.providers.registry import PROVIDERS
from faceswap_local import stack as aws
from faceswap_local.emulators.piapi import PiAPIEmulator, SwapFn
from faceswap_local.emulators.rekognition import RekognitionEmulator
from faceswap_local.engine_service import EngineService, engine_swap
from faceswap_local.runtime import Runtime

logging.getLogger("werkzeug").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where ``template.yaml`` is)."""

EMULATED = [spec for spec in PROVIDERS.values() if spec.emulator is not None]
"""The providers the local stack runs an emulator for (from the provider registry; each accepts its secret's local
value). The self-hosted engine runs as itself."""

LOOPBACK = ["127.0.0.1", "localhost"]
"""The emulators' result hosts."""


def provider_secret(name: str) -> str:
    """The key of provider ``name``'s API key in ``AwsStack.secret_values`` (its secret is
    ``<stack name>/providers/<name>``)."""
    return f"providers/{name}"


LOCAL_CONFIG = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "false",
    "RESULT_URL_ALLOW_LOOPBACK": "true",
    "POLL_DELAYS": json.dumps({spec.name: list(spec.emulator_poll_delays) for spec in PROVIDERS.values()}),
}
"""Local configuration on top of the template's environment: tracing off (no X-Ray daemon), the loopback
allowance for result downloads from the emulators, and quicker checks (each registry entry's emulator cadence).
The emulators' and the engine's endpoints are added when they start (``PROVIDER_ENDPOINTS``)."""


class LocalStack:
    """Start and stop the local stack.

    Parameters
    ----------
    parameters
        Template parameter overrides (e.g. ``{"ResultMaxBytes": "8388608"}``). ``DefaultProvider`` defaults to
        ``selfhosted``, the provider that needs no account.
    config
        Extra function environment on top of :data:`LOCAL_CONFIG`.
    swap_fn
        How the emulators make results (default: the self-hosted engine, so results are real swaps).
    time_scale
        Multiplies every duration the stack applies (functions' timeouts, the HTTP API's integration timeout,
        queues' visibility timeouts and message delays); 1 runs them as the template sets them.
    log_stream
        Where the functions' log lines go (``None``: this process's stdout).
    """

    def __init__(
        self,
        *,
        parameters: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        swap_fn: SwapFn | None = None,
        template: Path = ROOT / "template.yaml",
        time_scale: float = 1.0,
        log_stream: IO[str] | None = None,
    ) -> None:
        self.template = template
        self.time_scale = time_scale
        self.log_stream = log_stream
        self.parameters = {
            "DefaultProvider": "selfhosted",
            "EnabledProviders": ",".join(spec.name for spec in EMULATED),
            **(parameters or {}),
        }
        self.config = {**LOCAL_CONFIG, **(config or {})}
        self.moto = aws.MotoServer(time_scale=time_scale)
        self.swap_fn = swap_fn or engine_swap
        self.stack: aws.AwsStack | None = None
        self.engine: EngineService | None = None
        self.rekognition: RekognitionEmulator | None = None
        self.emulators: dict[str, Any] = {}
        self.runtime: Runtime | None = None

    def start(self) -> LocalStack:
        """Start everything; returns ``self``."""
        for name, value in {
            "AWS_ACCESS_KEY_ID": aws.ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": aws.SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": aws.REGION,
            "AWS_REGION": aws.REGION,
        }.items():
            os.environ[name] = value
        self.moto.start()
        os.environ["AWS_ENDPOINT_URL"] = self.moto.endpoint_url
        stack_name = f"faceswap-local-{secrets.token_hex(3)}"
        self.stack = aws.create_stack(
            self.template,
            self.moto.endpoint_url,
            parameters=self.parameters,
            stack_name=stack_name,
            time_scale=self.time_scale,
        )
        sm = self.stack.client("secretsmanager")
        for spec in PROVIDERS.values():
            if spec.api_key:  # as an operator does after deploying (README, "Provider keys in Secrets Manager")
                key = secrets.token_hex(16)
                sm.create_secret(Name=f"{stack_name}/providers/{spec.name}", SecretString=key)
                self.stack.secret_values[provider_secret(spec.name)] = key
        for spec in EMULATED:
            secret = self.stack.secret_values[provider_secret(spec.name)]
            self.emulators[spec.name] = spec.emulator_class()(api_key=secret, swap_fn=self.swap_fn)
            self.emulators[spec.name].start()
        self.engine = EngineService()
        self.engine.start()
        # Rekognition's CompareFaces for face maps, computed with the engine's face embeddings (moto's answers the
        # same whatever the faces); boto3 clients reach it through their service-specific endpoint variable.
        self.rekognition = RekognitionEmulator()
        self.rekognition.start()
        gateway_port = aws.free_port()
        self.runtime = Runtime(
            self.stack,
            {
                **self.config,
                "AWS_ENDPOINT_URL": self.moto.endpoint_url,
                "AWS_ENDPOINT_URL_REKOGNITION": self.rekognition.url,
                "PROVIDER_ENDPOINTS": json.dumps(
                    {
                        **{name: {"base_url": em.url, "result_hosts": LOOPBACK} for name, em in self.emulators.items()},
                        "selfhosted": {"base_url": self.engine.url},
                    }
                ),
                "CALLBACK_BASE_URL": f"http://127.0.0.1:{gateway_port}",
            },
            gateway_port=gateway_port,
            time_scale=self.time_scale,
            log_stream=self.log_stream,
        )
        self.runtime.start()
        return self

    def stop(self) -> None:
        """Stop everything started."""
        if self.runtime is not None:
            self.runtime.stop()
        for emulator in self.emulators.values():
            emulator.stop()
        if self.engine is not None:
            self.engine.stop()
        if self.rekognition is not None:
            self.rekognition.stop()
        self.moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def piapi(self) -> PiAPIEmulator | None:
        """The PiAPI emulator (``None`` before ``start``)."""
        return self.emulators.get("piapi")

    def client(self, service: str) -> Any:
        """A boto3 client for the local stack's moto server."""
        assert self.stack is not None
        return self.stack.client(service)

    def info(self) -> dict[str, str]:
        """What a user needs to drive the stack (written to ``.local/stack.json``)."""
        assert self.stack is not None and self.runtime is not None
        refs = self.stack.refs
        return {
            "stack_name": refs["AWS::StackName"],
            "aws_endpoint_url": self.moto.endpoint_url,
            "region": aws.REGION,
            "aws_access_key_id": aws.ACCESS_KEY_ID,
            "aws_secret_access_key": aws.SECRET_ACCESS_KEY,
            "input_bucket": refs["InputBucket"],
            "results_bucket": refs["ResultsBucket"],
            "jobs_table": refs["JobsTable"],
            "api_url": self.runtime.api_url,
            "event_bus": refs["EventBus"],
            "submit_queue_url": refs["SubmitQueue"],
            "submit_dead_letter_queue_url": refs["SubmitDeadLetterQueue"],
            "check_queue_url": refs["CheckQueue"],
            "check_dead_letter_queue_url": refs["CheckDeadLetterQueue"],
            "media_queue_url": refs["MediaQueue"],
            "media_dead_letter_queue_url": refs["MediaDeadLetterQueue"],
            "publisher_dead_letter_queue_url": refs["PublisherDeadLetterQueue"],
            **{f"{name}_url": emulator.url for name, emulator in self.emulators.items()},
            "selfhosted_url": self.engine.url if self.engine else "",
            "rekognition_url": self.rekognition.url if self.rekognition else "",
        }
