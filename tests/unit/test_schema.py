"""The job request's one schema: its generated JSON Schemas and OpenAPI document are fresh, and they agree with
the validation the pipeline runs (the same requests pass and fail both)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from faceswap.errors import InvalidRequest
from faceswap.intake import parse_request_fields
from faceswap.model import FacePair, ImageRef
from faceswap_local import schemas


def test_the_committed_schemas_and_openapi_document_are_what_the_schema_gives(aws_credentials: None) -> None:
    assert schemas.stale() == [], "run make schemas and commit the result"


SAMPLES: list[tuple[dict[str, Any], bool]] = [
    ({"target_image": "photos/a.jpg", "swap_image": {"s3_key": "faces/b.jpg"}}, True),
    ({"target_image": {"url": "https://images.example.com/a.jpg"}, "swap_image": "faces/b.jpg"}, True),
    ({"target_image": "a.jpg", "task": "same-image-swap", "provider": "aiphotocraft"}, True),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "provider": ["piapi", "crun"], "idempotency_key": "k"}, True),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"enhance": True}}, True),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "task": "multi-face-swap", "options": {"swap_index": "1"}}, True),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "result_key": "results/x.jpg"}, True),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "colour": "red"}, False),
    ({"target_image": {"url": "ftp://images.example.com/a.jpg"}, "swap_image": "b.jpg"}, False),
    ({"target_image": {"s3_key": "a.jpg", "url": "https://x.example.com/a"}, "swap_image": "b.jpg"}, False),
    ({"target_image": {}, "swap_image": "b.jpg"}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "task": "video-face-swap"}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "provider": None}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "provider": []}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "result_key": "out/x.jpg"}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"face_index": "0"}}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"enhance": "yes"}}, False),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "idempotency_key": ""}, False),
    ({"swap_image": "b.jpg"}, False),
    (
        {
            "target_image": "a.jpg",
            "face_map": [{"reference": "r.jpg", "swap_image": {"url": "https://x.example.com/b"}}],
        },
        True,
    ),
    ({"target_image": "a.jpg", "swap_image": "b.jpg", "reference": {"s3_key": "r.jpg"}}, True),
    ({"target_image": "a.jpg", "face_map": []}, False),
    ({"target_image": "a.jpg", "face_map": [{"reference": "r.jpg", "swap_image": "b.jpg"}] * 5}, False),
    ({"target_image": "a.jpg", "face_map": [{"reference": "r.jpg", "swap_image": "b.jpg", "index": 0}]}, False),
    (
        {"target_image": "a.jpg", "face_map": [{"reference": {"url": "ftp://x.example.com/r"}, "swap_image": "b.jpg"}]},
        False,
    ),
]

FACE_MAP_REFUSALS = [
    ({"face_map": [{"reference": "r.jpg", "swap_image": "b.jpg"}], "swap_image": "b.jpg"}, "leave out the top-level"),
    ({"face_map": [{"reference": "r.jpg", "swap_image": "b.jpg"}], "reference": "r.jpg"}, "not both"),
    ({"reference": "r.jpg"}, "'reference' needs 'swap_image'"),
    ({"reference": "r.jpg", "swap_image": "b.jpg", "task": "multi-face-swap"}, "needs task 'face-swap'"),
    ({"face_map": [{"reference": "../r.jpg", "swap_image": "b.jpg"}]}, "In face_map[0]: "),
    ({"face_map": [{"reference": "r.jpg"}]}, "exactly 'reference' and 'swap_image'"),
]


@pytest.mark.parametrize(("fields", "words"), FACE_MAP_REFUSALS)
def test_a_face_map_the_pipeline_refuses_is_named_in_the_message(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request_fields({"target_image": "a.jpg", **fields}, bucket="inputs", default_provider="selfhosted")
    assert words in refused.value.message


def test_a_face_map_and_its_shorthand_give_the_same_pairs() -> None:
    shorthand = parse_request_fields(
        {"target_image": "a.jpg", "swap_image": "b.jpg", "reference": "r.jpg"}, bucket="in", default_provider="x"
    )
    full = parse_request_fields(
        {"target_image": "a.jpg", "face_map": [{"reference": "r.jpg", "swap_image": "b.jpg"}]},
        bucket="in",
        default_provider="x",
    )
    for fields in (shorthand, full):
        request = fields.request(job_id="j", result_key="results/x.jpg", source="api")
        assert request.face_map == (FacePair(ImageRef("in", "r.jpg"), ImageRef("in", "b.jpg")),)
        assert request.swap_image == ImageRef("in", "b.jpg")
    assert shorthand.fingerprint() == full.fingerprint()


@pytest.mark.parametrize(("detail", "valid"), SAMPLES)
def test_an_event_detail_passes_the_published_json_schema_exactly_when_the_pipeline_accepts_it(
    detail: dict[str, Any], valid: bool
) -> None:
    document = json.loads((schemas.ROOT / "events" / "schemas" / "job_requested.schema.json").read_text())
    event = {
        "version": "0",
        "id": "1",
        "detail-type": "Job Requested",
        "source": "tests",
        "time": "t",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    schema_valid = jsonschema.Draft202012Validator(document).is_valid(event)
    try:
        parse_request_fields(detail, bucket="inputs", default_provider="piapi", what="event")
        pipeline_valid = True
    except InvalidRequest:
        pipeline_valid = False

    assert (schema_valid, pipeline_valid) == (valid, valid)


def test_the_same_body_is_judged_alike_as_a_manifest_an_event_and_an_api_request() -> None:
    body = {"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"enhance": True, "swap_index": 2}}
    for what, base64 in (("manifest", False), ("event", False), ("request", True)):
        with pytest.raises(InvalidRequest, match="multi-face-swap"):
            parse_request_fields(body, bucket="in", default_provider="piapi", what=what, allow_base64=base64)
