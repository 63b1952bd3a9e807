"""Turning uploads into job requests: manifests (``jobs/*.json``) and the face library (``incoming/<face-id>/…``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from faceswap.errors import ImageTooLarge, InputNotFound, InvalidRequest, SwapFaceMissing
from faceswap.intake import MAX_MANIFEST_BYTES, parse_manifest, request_for_upload
from faceswap.model import FacePair, ImageRef, JobRequest

BUCKET = "inputs"
JOB_ID = "f" * 32


def manifest(**fields: Any) -> bytes:
    body: dict[str, Any] = {"target_image": "photos/party.jpg", "swap_image": "faces/obama.jpg"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def parse(raw: bytes, name: str = "party") -> JobRequest:
    return parse_manifest(raw, job_id=JOB_ID, bucket=BUCKET, name=name, default_provider="piapi")


def refused(raw: bytes, name: str = "party") -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw, name)
    assert caught.value.code == "invalid_request"
    return caught.value


class Objects:
    """An ObjectStore with only ``read`` and ``exists``, over ``{(bucket, key): bytes}``."""

    def __init__(self, objects: dict[str, bytes] | None = None, bucket: str = BUCKET) -> None:
        self.objects = {(bucket, key): data for key, data in (objects or {}).items()}
        self.reads: list[tuple[str, str, str | None]] = []
        self.metadata: dict[str, dict[str, str]] = {}
        self.caps: list[int] = []

    def read(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        self.reads.append((bucket, key, version_id))
        self.caps.append(max_bytes)
        if (bucket, key) not in self.objects:
            raise InputNotFound(f"s3://{bucket}/{key} does not exist.")
        data = self.objects[(bucket, key)]
        if len(data) > max_bytes:
            raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {max_bytes:,} bytes.")
        return data

    def head(self, bucket: str, key: str) -> dict[str, str] | None:
        if (bucket, key) not in self.objects:
            return None
        return dict(self.metadata.get(key, {}))


def upload(
    key: str, objects: Objects, *, version_id: str | None = "v1", etag: str | None = "etag-1"
) -> JobRequest | None:
    return request_for_upload(BUCKET, key, version_id=version_id, etag=etag, objects=objects, default_provider="piapi")


# --- parse_manifest: valid shapes and defaults ------------------------------------------------------------------------


def test_manifest_accepts_plain_string_keys() -> None:
    request = parse(manifest())
    assert request.target_image == ImageRef(bucket=BUCKET, key="photos/party.jpg")
    assert request.swap_image == ImageRef(bucket=BUCKET, key="faces/obama.jpg")
    assert request.job_id == JOB_ID
    assert request.source == "manifest"
    assert request.invalid is None


def test_manifest_accepts_s3_key_objects() -> None:
    request = parse(manifest(target_image={"s3_key": "a/t.png"}, swap_image={"s3_key": "faces/b.webp"}))
    assert request.target_image == ImageRef(bucket=BUCKET, key="a/t.png")
    assert request.swap_image == ImageRef(bucket=BUCKET, key="faces/b.webp")


def test_manifest_accepts_https_urls() -> None:
    url = "https://images.example.com/party.jpg?sig=abc"
    request = parse(manifest(target_image={"url": url}, swap_image={"url": "https://images.example.com/f.png"}))
    assert request.target_image == ImageRef(url=url)
    assert request.swap_image == ImageRef(url="https://images.example.com/f.png")


def test_manifest_defaults_provider_task_and_result_key() -> None:
    request = parse(manifest(), name="party")
    assert request.provider == "piapi"
    assert request.task == "face-swap"
    assert request.options == {}
    assert request.result_key == "results/jobs/party.jpg"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("photos/party.png", "results/jobs/party.png"),
        ("photos/party.JPEG", "results/jobs/party.jpeg"),
        ("photos/party.webp", "results/jobs/party.webp"),
        ("photos/party.tiff", "results/jobs/party.jpg"),
        ("photos/party", "results/jobs/party.jpg"),
        ({"url": "https://images.example.com/p.png?X-Amz-Signature=a.jpg"}, "results/jobs/party.png"),
    ],
)
def test_default_result_key_takes_the_target_extension(target: Any, expected: str) -> None:
    assert parse(manifest(target_image=target), name="party").result_key == expected


def test_manifest_keeps_explicit_provider_task_options_and_result_key() -> None:
    request = parse(
        manifest(
            provider="selfhosted",
            task="multi-face-swap",
            options={"swap_faces_index": "1,0", "target_faces_index": 0},
            result_key="results/custom/out.png",
        )
    )
    assert request.provider == "selfhosted"
    assert request.task == "multi-face-swap"
    assert request.options == {"swap_faces_index": "1,0", "target_faces_index": "0"}
    assert request.result_key == "results/custom/out.png"


# --- parse_manifest: errors name the field ----------------------------------------------------------------------------


def test_manifest_with_bad_json_is_invalid_request() -> None:
    assert "JSON" in refused(b'{"target_image": ').message


def test_manifest_with_non_utf8_bytes_is_invalid_request() -> None:
    refused(b"\xff\xfe\xfa")


@pytest.mark.parametrize("raw", [b"[]", b'"photos/party.jpg"', b"42", b"null"])
def test_manifest_that_is_not_an_object_is_invalid_request(raw: bytes) -> None:
    assert "object" in refused(raw).message


def test_manifest_with_unknown_field_names_it() -> None:
    assert "swap_imgae" in refused(manifest(swap_imgae="faces/x.jpg")).message


@pytest.mark.parametrize("field", ["target_image", "swap_image"])
def test_manifest_missing_image_names_it(field: str) -> None:
    assert field in refused(manifest(**{field: ...})).message


@pytest.mark.parametrize(
    "value",
    [
        {"url": "http://images.example.com/a.jpg"},
        {"url": "ftp://images.example.com/a.jpg"},
        {"url": "file:///etc/passwd"},
        {"url": "https://images.example.com/" + "a" * 2048},
    ],
)
def test_manifest_image_url_must_be_https(value: dict[str, str]) -> None:
    assert "target_image.url" in refused(manifest(target_image=value)).message


@pytest.mark.parametrize(
    "value",
    [
        {"s3_key": "photos/a.jpg", "url": "https://images.example.com/a.jpg"},
        {},
        {"key": "photos/a.jpg"},
        {"s3_key": ""},
        {"s3_key": 7},
        42,
        ["photos/a.jpg"],
        "",
    ],
)
def test_manifest_image_must_be_exactly_one_s3_key_or_url(value: Any) -> None:
    assert "swap_image" in refused(manifest(swap_image=value)).message


@pytest.mark.parametrize(
    "key",
    ["../x.jpg", "photos/../../x.jpg", "/photos/x.jpg", "photos//x.jpg", "./x.jpg", "photos\\x.jpg", "a\x00.jpg"],
)
def test_manifest_s3_key_must_be_plain_relative_key(key: str) -> None:
    assert "target_image.s3_key" in refused(manifest(target_image={"s3_key": key})).message


def test_manifest_plain_string_key_is_checked_like_s3_key() -> None:
    assert "swap_image.s3_key" in refused(manifest(swap_image="../faces/x.jpg")).message


@pytest.mark.parametrize(
    "result_key", ["out/x.jpg", "resultsx/a.jpg", "results/../inputs/x.jpg", "/results/x.jpg", "results//x.jpg", ""]
)
def test_manifest_result_key_must_be_under_results(result_key: str) -> None:
    assert "result_key" in refused(manifest(result_key=result_key)).message


def test_default_result_key_from_unsafe_manifest_name_is_refused() -> None:
    assert "result_key" in refused(manifest(), name="../escape").message


@pytest.mark.parametrize("task", ["face_swap", "video-face-swap", "", 3])
def test_manifest_with_bad_task_names_task(task: Any) -> None:
    assert "task" in refused(manifest(task=task)).message


def test_manifest_face_indices_need_multi_face_swap() -> None:
    assert "options" in refused(manifest(options={"swap_faces_index": "0"})).message.lower()


def test_manifest_with_unknown_option_names_it() -> None:
    assert "face_index" in refused(manifest(task="multi-face-swap", options={"face_index": "0"})).message


@pytest.mark.parametrize("index", ["a", "1;0", "-1", "1,", ",1", "1, 0", "", "100", True, 1.5, None])
def test_manifest_bad_face_index_names_the_option(index: Any) -> None:
    raw = manifest(task="multi-face-swap", options={"target_faces_index": index})
    assert "target_faces_index" in refused(raw).message


def test_manifest_options_must_be_an_object() -> None:
    assert "options" in refused(manifest(task="multi-face-swap", options=["0"])).message


@pytest.mark.parametrize("provider", ["p" * 65, "", 7, None])
def test_manifest_with_bad_provider_names_provider(provider: Any) -> None:
    assert "provider" in refused(manifest(provider=provider)).message


def test_manifest_provider_of_64_characters_is_accepted() -> None:
    assert parse(manifest(provider="p" * 64)).provider == "p" * 64


# --- request_for_upload: the face library -----------------------------------------------------------------------------


def test_incoming_upload_uses_the_face_library_swap_face() -> None:
    objects = Objects({"faces/obama.png": b"face"})
    request = upload("incoming/obama/party/x.jpg", objects)
    assert request is not None
    assert request.invalid is None
    assert request.swap_image == ImageRef(bucket=BUCKET, key="faces/obama.png")
    assert request.target_image == ImageRef(bucket=BUCKET, key="incoming/obama/party/x.jpg", version_id="v1")
    assert request.result_key == "results/obama/party/x.jpg"
    assert request.provider == "piapi"
    assert request.task == "face-swap"
    assert request.source == "s3"


def test_face_library_prefers_jpg_when_several_extensions_exist() -> None:
    objects = Objects({"faces/obama.png": b"png", "faces/obama.jpg": b"jpg"})
    request = upload("incoming/obama/x.jpg", objects)
    assert request is not None
    assert request.swap_image.key == "faces/obama.jpg"


def test_face_library_does_not_match_a_longer_face_id() -> None:
    objects = Objects({"faces/obama.jpg.bak": b"x", "faces/obamas.jpg": b"x"})
    request = upload("incoming/obama/x.jpg", objects)
    assert request is not None
    assert isinstance(request.invalid, SwapFaceMissing)


def test_same_upload_gives_same_job_id() -> None:
    objects = Objects({"faces/obama.png": b"face"})
    first = upload("incoming/obama/party/x.jpg", objects)
    again = upload("incoming/obama/party/x.jpg", objects)
    assert first is not None and again is not None
    assert first.job_id == again.job_id
    assert len(first.job_id) == 32


def test_new_object_version_gives_new_job_id() -> None:
    objects = Objects({"faces/obama.png": b"face"})
    first = upload("incoming/obama/party/x.jpg", objects, version_id="v1")
    second = upload("incoming/obama/party/x.jpg", objects, version_id="v2")
    assert first is not None and second is not None
    assert first.job_id != second.job_id


def test_unversioned_bucket_job_id_follows_etag() -> None:
    objects = Objects({"faces/obama.png": b"face"})
    first = upload("incoming/obama/x.jpg", objects, version_id=None, etag="e1")
    same = upload("incoming/obama/x.jpg", objects, version_id=None, etag="e1")
    changed = upload("incoming/obama/x.jpg", objects, version_id=None, etag="e2")
    assert first is not None and same is not None and changed is not None
    assert first.job_id == same.job_id != changed.job_id
    assert first.target_image.version_id is None


def test_different_key_gives_different_job_id() -> None:
    objects = Objects({"faces/obama.png": b"face"})
    first = upload("incoming/obama/a.jpg", objects)
    second = upload("incoming/obama/b.jpg", objects)
    assert first is not None and second is not None
    assert first.job_id != second.job_id


def test_incoming_upload_without_swap_face_is_swap_face_missing() -> None:
    request = upload("incoming/obama/party/x.jpg", Objects({"faces/biden.jpg": b"face"}))
    assert request is not None
    assert isinstance(request.invalid, SwapFaceMissing)
    assert request.invalid.code == "swap_face_missing"
    assert "obama" in request.invalid.message
    assert request.result_key == "results/obama/party/x.jpg"


@pytest.mark.parametrize(
    "key",
    [
        "incoming/x.jpg",
        "incoming/obama/",
        "incoming/.hidden/x.jpg",
        "incoming//x.jpg",
        "incoming/obama/../../escape.jpg",
        "incoming/obama/./x.jpg",
        "incoming/obama/party//x.jpg",
    ],
)
def test_incoming_upload_without_face_id_and_file_is_invalid_request(key: str) -> None:
    request = upload(key, Objects({"faces/x.jpg": b"face", "faces/obama.jpg": b"face"}))
    assert request is not None
    assert isinstance(request.invalid, InvalidRequest)


@pytest.mark.parametrize("key", ["faces/obama.jpg", "results/obama/x.jpg", "photos/x.jpg", "jobs/readme.txt"])
def test_upload_outside_incoming_and_jobs_is_not_a_job(key: str) -> None:
    assert upload(key, Objects({"faces/obama.jpg": b"face"})) is None


# --- request_for_upload: manifests ------------------------------------------------------------------------------------


def test_manifest_upload_is_parsed_from_the_uploaded_version() -> None:
    objects = Objects({"jobs/a.json": manifest()})
    request = upload("jobs/a.json", objects, version_id="v7")
    assert request is not None
    assert request.invalid is None
    assert request.source == "manifest"
    assert request.target_image == ImageRef(bucket=BUCKET, key="photos/party.jpg")
    assert request.result_key == "results/jobs/a.jpg"
    assert objects.reads == [(BUCKET, "jobs/a.json", "v7")]


def test_manifest_upload_job_id_is_deterministic() -> None:
    objects = Objects({"jobs/a.json": manifest()})
    first, again = upload("jobs/a.json", objects), upload("jobs/a.json", objects)
    other = upload("jobs/a.json", objects, version_id="v2")
    assert first is not None and again is not None and other is not None
    assert first.job_id == again.job_id != other.job_id


def test_manifest_upload_with_bad_json_carries_invalid_request() -> None:
    request = upload("jobs/a.json", Objects({"jobs/a.json": b"{not json"}))
    assert request is not None
    assert isinstance(request.invalid, InvalidRequest)
    assert request.source == "manifest"


def test_manifest_upload_that_vanished_carries_input_not_found() -> None:
    request = upload("jobs/a.json", Objects())
    assert request is not None
    assert isinstance(request.invalid, InputNotFound)


def test_manifest_upload_over_64_kib_fails_invalid_request() -> None:
    objects = Objects({"jobs/a.json": manifest(result_key="results/" + "a" * MAX_MANIFEST_BYTES + ".jpg")})
    request = upload("jobs/a.json", objects)
    assert request is not None
    # The store refuses the read past the cap (before any parsing); a manifest's fault is a request error.
    assert isinstance(request.invalid, InvalidRequest)
    assert "64 KiB" in request.invalid.message
    assert objects.caps == [MAX_MANIFEST_BYTES]


def test_enhance_option_is_accepted_for_any_task_and_normalised() -> None:
    from faceswap.intake import parse_request_fields

    fields = parse_request_fields(
        {"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"enhance": True}},
        bucket="in",
        default_provider="aiphotocraft",
    )
    assert fields.options == {"enhance": "true"}
    with pytest.raises(InvalidRequest, match="enhance"):
        parse_request_fields(
            {"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"enhance": "yes"}},
            bucket="in",
            default_provider="aiphotocraft",
        )
    with pytest.raises(InvalidRequest, match="multi-face-swap"):
        parse_request_fields(
            {"target_image": "a.jpg", "swap_image": "b.jpg", "options": {"swap_index": "2,1"}},
            bucket="in",
            default_provider="aiphotocraft",
        )


def test_same_image_swap_takes_its_faces_from_the_target_image() -> None:
    request = parse(manifest(swap_image=..., task="same-image-swap", provider="aiphotocraft"))

    assert request.task == "same-image-swap"
    assert request.swap_image == request.target_image == ImageRef(bucket=BUCKET, key="photos/party.jpg")


def test_same_image_swap_with_a_swap_image_is_refused() -> None:
    assert "swap_image" in refused(manifest(task="same-image-swap")).message


def test_same_image_swap_with_options_is_refused() -> None:
    assert "no options" in refused(manifest(swap_image=..., task="same-image-swap", options={"enhance": True})).message


def test_face_swap_without_a_swap_image_is_refused() -> None:
    assert "swap_image" in refused(manifest(swap_image=...)).message


def test_manifest_nested_deeper_than_the_parser_goes_is_invalid_request() -> None:
    assert "nested too deeply" in refused(b"[" * 40_000).message


def test_a_face_photos_reference_metadata_makes_each_upload_a_one_pair_face_map() -> None:
    objects = Objects({"faces/obama.jpg": b"face", "people/alice.png": b"person"})
    objects.metadata["faces/obama.jpg"] = {"reference": "people/alice.png"}
    request = upload("incoming/obama/party/1.jpg", objects)
    assert request is not None and request.invalid is None
    assert request.face_map == (
        FacePair(ImageRef(bucket=BUCKET, key="people/alice.png"), ImageRef(bucket=BUCKET, key="faces/obama.jpg")),
    )


def test_a_face_photo_without_reference_metadata_swaps_the_providers_default_face() -> None:
    objects = Objects({"faces/obama.jpg": b"face", "references/obama.jpg": b"not looked for"})
    request = upload("incoming/obama/party/1.jpg", objects)
    assert request is not None and request.face_map == ()


def test_a_reference_metadata_that_is_not_a_plain_key_fails_the_job() -> None:
    objects = Objects({"faces/obama.jpg": b"face"})
    objects.metadata["faces/obama.jpg"] = {"reference": "../secrets.jpg"}
    request = upload("incoming/obama/party/1.jpg", objects)
    assert request is not None and request.invalid is not None
    assert "'reference' metadata" in str(request.invalid)
