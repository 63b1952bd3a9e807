"""What each function loads at a cold start: modules it does not use stay out (import time is billed)."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(imports: str, module: str) -> bool:
    """Whether importing ``imports`` (comma-separated) in a fresh interpreter loads ``module``."""
    code = f"import sys, {imports}; print({module!r} in sys.modules)"
    return (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )


def test_the_functions_that_prepare_no_image_never_load_pillow() -> None:
    assert not loaded_after("faceswap.wiring, faceswap.jobs, faceswap.aws.dynamodb, faceswap.aws.s3", "PIL"), (
        "only where images are prepared"
    )


def test_the_publishers_imports_never_load_httpx() -> None:
    assert not loaded_after(
        "faceswap.aws.dynamodb, faceswap.aws.eventbridge, faceswap.events, faceswap.config, faceswap.observability",
        "httpx",
    )


def test_the_jobs_apis_wiring_never_loads_httpx() -> None:
    # The API calls no provider and downloads nothing: httpx and the pipeline's modules stay out of its cold start.
    assert not loaded_after("faceswap.api_wiring, faceswap.schema", "httpx")
