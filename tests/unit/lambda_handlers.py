"""The Lambda handlers under test: loaded from ``functions/<name>/app.py`` as a cold start would, with the sample
events in ``events/`` and a Lambda context (the ``aws`` fixture in ``conftest.py`` is their moto account)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
NAMESPACE = "FaceSwap/test-stack"
"""The metrics namespace the handlers are given (``POWERTOOLS_METRICS_NAMESPACE``)."""


def load_handler(function: str, *, prefix: str = "handler_under_test") -> ModuleType:
    """Import ``functions/<function>/app.py`` afresh, as a cold start would (its module-scope wiring runs now)."""
    name = f"{prefix}_{function}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sample_event(name: str) -> dict[str, Any]:
    """One of the real-shaped sample events in ``events/``."""
    return json.loads((EVENTS / name).read_text())


class Context:
    """The Lambda context the handlers read (name, memory, ARN, request id, time left)."""

    function_name = "test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000
