"""The files generated from the job request's schema (:mod:`faceswap.schema`) and the jobs API's routes.

``make schemas`` writes them; ``python -m faceswap_local.schemas --check`` (and a unit test) fails when a committed
copy is stale, naming it:

- ``events/schemas/manifest.schema.json``: a ``jobs/<name>.json`` manifest;
- ``events/schemas/job_requested.schema.json``: a "Job Requested" event, its ``detail`` the request;
- ``functions/api/openapi.json``: the jobs API (served at ``GET /openapi.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from faceswap.schema import JobRequestDetail, Manifest

ROOT = Path(__file__).resolve().parents[2]
DRAFT = "https://json-schema.org/draft/2020-12/schema"

EVENT_ENVELOPE = {
    "version": {"const": "0"},
    "id": {"type": "string"},
    "detail-type": {"const": "Job Requested"},
    "source": {"type": "string"},
    "account": {"type": "string"},
    "time": {"type": "string"},
    "region": {"type": "string"},
    "resources": {"type": "array"},
}
"""An EventBridge event's envelope (https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html)."""


def model_schema(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(schema, definitions)`` of a pydantic model, its nested models referenced under ``#/$defs/``."""
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    return schema, schema.pop("$defs", {})


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest."""
    schema, definitions = model_schema(Manifest)
    return {
        "$schema": DRAFT,
        "title": "Manifest",
        "description": "A jobs/<name>.json upload to the inputs bucket (at most 64 KiB): one job.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        "$defs": definitions,
    }


def job_requested_schema() -> dict[str, Any]:
    """The JSON Schema of a "Job Requested" event."""
    detail, definitions = model_schema(JobRequestDetail)
    definitions["JobRequestDetail"] = detail
    return {
        "$schema": DRAFT,
        "title": "Job Requested",
        "description": "Put on the stack's event bus (any source) to request a job; validated like POST /jobs "
        "(no base64 images).",
        "type": "object",
        "required": ["version", "id", "detail-type", "source", "time", "region", "resources", "detail"],
        "properties": {**EVENT_ENVELOPE, "detail": {"$ref": "#/$defs/JobRequestDetail"}},
        "$defs": definitions,
    }


def openapi_document() -> dict[str, Any]:
    """The jobs API's OpenAPI document, from its routes (``functions/api/app.py`` imported as a cold start would,
    with placeholder configuration: no AWS call is made)."""
    placeholders = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "JOBS_TABLE_NAME": "jobs",
        "INPUT_BUCKET_NAME": "inputs",
        "RESULTS_BUCKET_NAME": "results",
        "CHECK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/checks",
        "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/submit",
        "EVENT_BUS_NAME": "jobs",
        "WEBHOOK_SIGNING_KEY_SECRET_NAME": "signing-key",
        "PROVIDER_SECRETS_PREFIX": "stack/providers/",
    }
    saved = {name: os.environ.get(name) for name in placeholders}
    os.environ.update({name: value for name, value in placeholders.items() if not os.environ.get(name)})
    try:
        spec = importlib.util.spec_from_file_location("jobs_api_for_openapi", ROOT / "functions" / "api" / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return json.loads(module.app.get_openapi_json_schema(**module.OPENAPI_INFO))


def generate() -> dict[Path, str]:
    """Every generated file's path and its text as it should be committed."""
    documents = {
        ROOT / "events" / "schemas" / "manifest.schema.json": manifest_schema(),
        ROOT / "events" / "schemas" / "job_requested.schema.json": job_requested_schema(),
        ROOT / "functions" / "api" / "openapi.json": openapi_document(),
    }
    return {path: json.dumps(document, indent=2) + "\n" for path, document in documents.items()}


def stale() -> list[Path]:
    """The generated files whose committed text differs from what the schema gives now."""
    return [path for path, text in generate().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    """``--check``: exit 1 naming each stale file; otherwise write them all."""
    parser = argparse.ArgumentParser(prog="python -m faceswap_local.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"stale: {path.relative_to(ROOT)} (run make schemas)", file=sys.stderr)
        return 1 if out_of_date else 0
    for path, text in generate().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
