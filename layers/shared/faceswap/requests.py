"""Turning uploads into job requests: the face library and manifests.

Upload contract (README "Upload contracts"):

1. Face library: ``faces/<face-id>.<ext>`` holds a swap face; every image put under ``incoming/<face-id>/…``
   gets that face swapped onto it, kept at ``results/<face-id>/<same relative path>`` in the results bucket.
2. Manifest: ``jobs/<name>.json`` (at most 64 KiB), see :func:`parse_manifest` for its fields; the result is
   kept at its ``result_key``, or ``results/jobs/<name>.<target extension>``.

Job ids come from the uploaded object (``s3``, bucket, key, version id or else ETag), so a repeated S3 event
names the same job.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from faceswap.errors import ImageTooLarge, InputError, InvalidRequest, SwapFaceMissing
from faceswap.ids import job_id_for
from faceswap.model import ImageRef, JobRequest
from faceswap.ports import ObjectStore

FACES_PREFIX = "faces/"
INCOMING_PREFIX = "incoming/"
MANIFEST_PREFIX = "jobs/"
RESULTS_PREFIX = "results/"
MAX_MANIFEST_BYTES = 64 * 1024
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TASKS = ("face-swap", "multi-face-swap")

_FACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MANIFEST_FIELDS = frozenset({"target_image", "swap_image", "provider", "task", "options", "result_key"})
_IMAGE_FIELDS = frozenset({"s3_key", "url"})
_OPTION_FIELDS = frozenset({"swap_faces_index", "target_faces_index"})
_INDEX_LIST = re.compile(r"^\d{1,2}(,\d{1,2}){0,15}$")


def request_for_upload(
    bucket: str, key: str, *, version_id: str | None, etag: str | None, objects: ObjectStore, default_provider: str
) -> JobRequest | None:
    """Build the job request for one uploaded object.

    Parameters
    ----------
    bucket, key
        The uploaded object (key already URL-decoded).
    version_id, etag
        The object's version id (versioned bucket) and ETag, from the S3 event; the job id uses the
        version id when there is one, else the ETag.
    objects
        Used to find the face library's swap face and to read manifests.
    default_provider
        Provider for face-library uploads and manifests that name none.

    Returns
    -------
    JobRequest or None
        ``None`` for keys that are not job inputs (e.g. ``faces/…`` itself). A request whose input is
        unusable carries the error in ``invalid``; the job is then recorded as FAILED.
    """
    job_id = job_id_for("s3", bucket, key, version_id or etag or "")
    target = ImageRef(bucket=bucket, key=key, version_id=version_id or None)
    if key.startswith(INCOMING_PREFIX):
        return _face_library_request(job_id, bucket, key, target, objects, default_provider)
    if key.startswith(MANIFEST_PREFIX) and key.endswith(".json"):
        name = key[len(MANIFEST_PREFIX) : -len(".json")]
        try:
            try:
                raw = objects.read(bucket, key, version_id=target.version_id, max_bytes=MAX_MANIFEST_BYTES)
            except ImageTooLarge as e:
                raise InvalidRequest(f"The manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB.") from e
            return parse_manifest(raw, job_id=job_id, bucket=bucket, name=name, default_provider=default_provider)
        except InputError as e:
            return JobRequest(
                job_id=job_id,
                target_image=ImageRef(),
                swap_image=ImageRef(),
                provider=default_provider,
                task="face-swap",
                result_key="",
                source="manifest",
                invalid=e,
            )
    return None


def _face_library_request(
    job_id: str, bucket: str, key: str, target: ImageRef, objects: ObjectStore, provider: str
) -> JobRequest:
    relative = key[len(INCOMING_PREFIX) :]
    face_id, _, rest = relative.partition("/")
    result_key = RESULTS_PREFIX + relative
    invalid: InputError | None = None
    swap = ImageRef()
    if not _FACE_ID.match(face_id) or not rest:
        invalid = InvalidRequest(f"Uploads go to incoming/<face-id>/<file>; {key!r} names no face id and file.")
    else:
        swap_key = _find_face(bucket, face_id, objects)
        if swap_key is None:
            invalid = SwapFaceMissing(
                f"No swap face for face id {face_id!r}: upload faces/{face_id}.jpg "
                f"(or .jpeg/.png/.webp) first, then upload the target again."
            )
        else:
            swap = ImageRef(bucket=bucket, key=swap_key)
    return JobRequest(
        job_id=job_id,
        target_image=target,
        swap_image=swap,
        provider=provider,
        task="face-swap",
        result_key=result_key,
        source="s3",
        invalid=invalid,
    )


def _find_face(bucket: str, face_id: str, objects: ObjectStore) -> str | None:
    for extension in IMAGE_EXTENSIONS:
        key = objects.find_first(bucket, f"{FACES_PREFIX}{face_id}.{extension}")
        if key == f"{FACES_PREFIX}{face_id}.{extension}":
            return key
    return None


def parse_manifest(raw: bytes, *, job_id: str, bucket: str, name: str, default_provider: str) -> JobRequest:
    """Parse and validate a manifest.

    The manifest is a JSON object::

        {
          "target_image": {"s3_key": "photos/party.jpg"} | {"url": "https://…"} | "photos/party.jpg",
          "swap_image":   {"s3_key": "faces/obama.jpg"}  | {"url": "https://…"} | "faces/obama.jpg",
          "provider": "piapi",                       # optional, default: the stack's default provider
          "task": "face-swap" | "multi-face-swap",   # optional, default "face-swap"
          "options": {"swap_faces_index": "0", "target_faces_index": "1"},   # multi-face-swap only
          "result_key": "results/party-swapped.jpg"  # optional; must start with results/
        }

    ``s3_key`` names an object in the inputs bucket. Unknown fields are refused, so a typo is not ignored.

    Raises
    ------
    InvalidRequest
        Bad JSON or a bad field; the message names the field.
    """
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"The manifest is not valid JSON: {e}.") from e
    if not isinstance(manifest, dict):
        raise InvalidRequest("The manifest must be a JSON object.")
    unknown = sorted(set(manifest) - _MANIFEST_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown manifest field {unknown[0]!r}; allowed: {', '.join(sorted(_MANIFEST_FIELDS))}.")
    target = _image_ref(manifest, "target_image", bucket)
    swap = _image_ref(manifest, "swap_image", bucket)
    provider = _string(manifest, "provider", default_provider)
    task = _string(manifest, "task", "face-swap")
    if task not in TASKS:
        raise InvalidRequest(f"Field 'task' must be one of {', '.join(TASKS)}.")
    options = _options(manifest.get("options", {}), task)
    result_key = manifest.get("result_key")
    if result_key is None:
        extension = posixpath.splitext(target.key or (target.url or "").split("?", 1)[0])[1].lower()
        result_key = f"{RESULTS_PREFIX}jobs/{name}{extension if extension[1:] in IMAGE_EXTENSIONS else '.jpg'}"
    _check_key(result_key, "result_key", prefix=RESULTS_PREFIX)
    return JobRequest(
        job_id=job_id,
        target_image=target,
        swap_image=swap,
        provider=provider,
        task=task,
        result_key=result_key,
        source="manifest",
        options=options,
    )


def _string(manifest: Mapping[str, Any], field: str, default: str) -> str:
    value = manifest.get(field, default)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest(f"Field {field!r} must be a non-empty string.")
    return value


def _image_ref(manifest: Mapping[str, Any], field: str, bucket: str) -> ImageRef:
    if field not in manifest:
        raise InvalidRequest(f'Field {field!r} is missing: give {{"s3_key": …}} or {{"url": …}}.')
    value = manifest[field]
    if isinstance(value, str):
        value = {"s3_key": value}
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= _IMAGE_FIELDS:
        raise InvalidRequest(f"Field {field!r} must be an object with exactly one of 's3_key' or 'url'.")
    ((kind, ref),) = value.items()
    if not isinstance(ref, str) or not ref:
        raise InvalidRequest(f"Field {field}.{kind} must be a non-empty string.")
    if kind == "url":
        if not ref.startswith("https://") or len(ref) > 2048:
            raise InvalidRequest(f"Field {field}.url must be an https URL of at most 2048 characters.")
        return ImageRef(url=ref)
    _check_key(ref, f"{field}.s3_key")
    return ImageRef(bucket=bucket, key=ref)


def _check_key(key: Any, field: str, *, prefix: str = "") -> None:
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise InvalidRequest(f"Field {field!r} must be an S3 key of 1 to 1024 characters.")
    parts = key.split("/")
    if key.startswith("/") or ".." in parts or "." in parts or "" in parts or "\\" in key or "\x00" in key:
        raise InvalidRequest(f"Field {field!r} must be a plain relative key (no '..', '.', '//' or leading '/').")
    if prefix and not key.startswith(prefix):
        raise InvalidRequest(f"Field {field!r} must start with {prefix!r}.")


def _options(options: Any, task: str) -> dict[str, str]:
    if not isinstance(options, dict):
        raise InvalidRequest("Field 'options' must be an object.")
    unknown = sorted(set(options) - _OPTION_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown option {unknown[0]!r}; allowed: {', '.join(sorted(_OPTION_FIELDS))}.")
    if options and task != "multi-face-swap":
        raise InvalidRequest("Face index options need task 'multi-face-swap'.")
    checked: dict[str, str] = {}
    for name, value in options.items():
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _INDEX_LIST.match(text):
            raise InvalidRequest(f'Option {name!r} must be face indices such as "0" or "1,0".')
        checked[name] = text
    return checked
