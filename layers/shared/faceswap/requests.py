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

import base64
import binascii
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

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
SAME_IMAGE_SWAP = "same-image-swap"
"""The task that swaps the two faces of one target image with each other (AIPhotoCraft's
``swapfacesameimage``): it takes no swap image, since the faces come from the target itself."""
TASKS = ("face-swap", "multi-face-swap", SAME_IMAGE_SWAP)

_FACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MANIFEST_FIELDS = frozenset({"target_image", "swap_image", "provider", "task", "options", "result_key"})
_REQUEST_FIELDS = _MANIFEST_FIELDS | {"idempotency_key"}
_IMAGE_FIELDS = frozenset({"s3_key", "url", "base64"})
MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024
"""Most decoded ``base64`` image bytes in one API request, all images together (larger ones go through ``POST
/uploads``): 4 MiB is 5.3 MiB of base64, which with the rest of the event fits Lambda's 6 MB synchronous payload
limit (https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html). A request far over it never reaches the
function: the HTTP API or Lambda refuses it with 413."""
_INDEX_OPTIONS = frozenset({"swap_faces_index", "target_faces_index", "swap_index"})
_OPTION_FIELDS = _INDEX_OPTIONS | {"enhance"}
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
            return invalid_request(job_id, source="manifest", provider=default_provider, error=e)
    return None


def invalid_request(job_id: str, *, source: str, provider: str, error: InputError) -> JobRequest:
    """A request too broken to name its images (bad manifest or event detail), kept so the job is recorded
    FAILED with ``error`` rather than lost."""
    return JobRequest(
        job_id=job_id,
        target_image=ImageRef(),
        swap_image=ImageRef(),
        provider=provider,
        task="face-swap",
        result_key="",
        source=source,
        invalid=error,
    )


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
    elif {"", ".", ".."} & set(rest.split("/")):
        # The result key mirrors the upload's key, so it must stay a plain relative key under results/.
        invalid = InvalidRequest(f"The upload key {key!r} has an empty, '.' or '..' segment.")
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
    for extension in IMAGE_EXTENSIONS:  # most libraries hold .jpg: usually one HEAD
        key = f"{FACES_PREFIX}{face_id}.{extension}"
        if objects.exists(bucket, key):
            return key
    return None


def parse_manifest(raw: bytes, *, job_id: str, bucket: str, name: str, default_provider: str) -> JobRequest:
    """Parse and validate a manifest.

    The manifest is a JSON object::

        {
          "target_image": {"s3_key": "photos/party.jpg"} | {"url": "https://…"} | "photos/party.jpg",
          "swap_image":   {"s3_key": "faces/obama.jpg"}  | {"url": "https://…"} | "faces/obama.jpg",
          "provider": "piapi",                       # optional, default: the stack's default provider
          "task": "face-swap" | "multi-face-swap" | "same-image-swap",   # optional, default "face-swap"
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
    except RecursionError as e:  # e.g. 40 KB of "[": under the size cap, but deeper than the parser goes
        raise InvalidRequest("The manifest is not valid JSON: it is nested too deeply.") from e
    fields = parse_request_fields(manifest, bucket=bucket, default_provider=default_provider, what="manifest")
    target = fields.target_image
    assert isinstance(target, ImageRef)  # manifests take no inline images
    result_key = fields.result_key or f"{RESULTS_PREFIX}jobs/{name}{_extension(target)}"
    _check_key(result_key, "result_key", prefix=RESULTS_PREFIX)
    return fields.request(job_id=job_id, result_key=result_key, source="manifest")


@dataclass(frozen=True)
class RequestFields:
    """A validated job request as a user wrote it (manifest, API body or "Job Requested" event detail).

    ``target_image`` / ``swap_image`` are references, or the decoded bytes of a ``base64`` image (API only),
    which the caller stores before building the :class:`JobRequest`.
    """

    target_image: ImageRef | bytes
    swap_image: ImageRef | bytes
    provider: str
    task: str
    options: dict[str, str]
    result_key: str | None
    idempotency_key: str | None
    fallback_providers: tuple[str, ...] = ()

    def request(
        self, *, job_id: str, result_key: str, source: str, target: ImageRef | None = None, swap: ImageRef | None = None
    ) -> JobRequest:
        """The job request, with stored references for inline images."""
        target_ref = target or self.target_image
        swap_ref = swap or self.swap_image
        assert isinstance(target_ref, ImageRef) and isinstance(swap_ref, ImageRef)
        return JobRequest(
            job_id=job_id,
            target_image=target_ref,
            swap_image=swap_ref,
            provider=self.provider,
            task=self.task,
            result_key=result_key,
            source=source,
            options=self.options,
            fallback_providers=self.fallback_providers,
        )

    def fingerprint(self) -> str:
        """A canonical text of what defines the work (for job ids of requests without an idempotency key)."""

        def ref(image: ImageRef | bytes) -> dict[str, str]:
            return {"sha256": hashlib.sha256(image).hexdigest()} if isinstance(image, bytes) else image.as_dict()

        return json.dumps(
            {
                "target": ref(self.target_image),
                "swap": ref(self.swap_image),
                "provider": [self.provider, *self.fallback_providers],
                "task": self.task,
                "options": self.options,
                "result_key": self.result_key,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def parse_request_fields(
    data: Any,
    *,
    bucket: str,
    default_provider: str,
    what: str = "request",
    allow_base64: bool = False,
    allow_http: bool = False,
) -> RequestFields:
    """Validate the fields of a job request (manifest, API body, or "Job Requested" event detail).

    Parameters
    ----------
    data
        The decoded JSON object.
    bucket
        The inputs bucket (``s3_key`` references point into it).
    default_provider
        Provider when the request names none.
    what
        ``manifest``, ``request`` or ``event``: used in messages.
    allow_base64
        Accept ``{"base64": …}`` images (the API: up to the API's body limit).
    allow_http
        Accept ``http://`` image URLs (only where the local stack allows loopback downloads).

    Raises
    ------
    InvalidRequest
        The message names the bad field.
    """
    if not isinstance(data, dict):
        raise InvalidRequest(f"The {what} must be a JSON object.")
    allowed = _MANIFEST_FIELDS if what == "manifest" else _REQUEST_FIELDS
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown {what} field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")
    target = _image_ref(data, "target_image", bucket, allow_base64=allow_base64, allow_http=allow_http)
    task = _string(data, "task", "face-swap")
    if task not in TASKS:
        raise InvalidRequest(f"Field 'task' must be one of {', '.join(TASKS)}.")
    if task == SAME_IMAGE_SWAP:
        if data.get("swap_image") is not None:
            raise InvalidRequest(f"Task {SAME_IMAGE_SWAP!r} takes no 'swap_image': the target's own faces swap.")
        swap = target  # the faces come from the target image itself
    else:
        swap = _image_ref(data, "swap_image", bucket, allow_base64=allow_base64, allow_http=allow_http)
    providers = _providers(data.get("provider", default_provider))
    options = _options(data.get("options", {}), task)
    result_key = data.get("result_key")
    if result_key is not None:
        _check_key(result_key, "result_key", prefix=RESULTS_PREFIX)
    idempotency_key = data.get("idempotency_key")
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 128):
        raise InvalidRequest("Field 'idempotency_key' must be a string of 1 to 128 characters.")
    return RequestFields(target, swap, providers[0], task, options, result_key, idempotency_key, providers[1:])


def _providers(value: Any) -> tuple[str, ...]:
    """``provider``: a name, or an ordered list of up to 5 distinct names to fail over through."""
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= 5
        or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names)
        or len(set(names)) != len(names)
    ):
        raise InvalidRequest("Field 'provider' must be a provider name, or a list of up to 5 distinct names.")
    return tuple(names)


def _extension(target: ImageRef | bytes) -> str:
    if isinstance(target, bytes):
        return ".jpg"
    extension = posixpath.splitext(target.key or (target.url or "").split("?", 1)[0])[1].lower()
    return extension if extension[1:] in IMAGE_EXTENSIONS else ".jpg"


def default_result_key(job_id: str, target: ImageRef | bytes) -> str:
    """Where an API or event job's result goes when the request names no ``result_key``."""
    return f"{RESULTS_PREFIX}api/{job_id}{_extension(target)}"


def _string(manifest: Mapping[str, Any], field: str, default: str) -> str:
    value = manifest.get(field, default)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest(f"Field {field!r} must be a non-empty string.")
    return value


def _image_ref(
    data: Mapping[str, Any], field: str, bucket: str, *, allow_base64: bool = False, allow_http: bool = False
) -> ImageRef | bytes:
    kinds = "'s3_key', 'url' or 'base64'" if allow_base64 else "'s3_key' or 'url'"
    if field not in data:
        raise InvalidRequest(f"Field {field!r} is missing: give an object with one of {kinds}.")
    value = data[field]
    if isinstance(value, str):
        value = {"s3_key": value}
    allowed = _IMAGE_FIELDS if allow_base64 else _IMAGE_FIELDS - {"base64"}
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= allowed:
        raise InvalidRequest(f"Field {field!r} must be an object with exactly one of {kinds}.")
    ((kind, ref),) = value.items()
    if not isinstance(ref, str) or not ref:
        raise InvalidRequest(f"Field {field}.{kind} must be a non-empty string.")
    if kind == "url":
        schemes = ("https://", "http://") if allow_http else ("https://",)
        if not ref.startswith(schemes) or len(ref) > 2048:
            raise InvalidRequest(f"Field {field}.url must be an https URL of at most 2048 characters.")
        return ImageRef(url=ref)
    if kind == "base64":
        if len(ref) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4:
            raise InvalidRequest(
                f"Field {field}.base64 is over {MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MiB; "
                "upload it with POST /uploads and give its s3_key."
            )
        try:
            return base64.b64decode(ref, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidRequest(f"Field {field}.base64 is not valid base64.") from e
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
    """``options``: face indices (``swap_faces_index``, ``target_faces_index``, AIPhotoCraft's 1-based
    ``swap_index``; ``multi-face-swap`` only) and ``enhance`` (``"true"``/``"false"``; AIPhotoCraft's GFPGAN)."""
    if not isinstance(options, dict):
        raise InvalidRequest("Field 'options' must be an object.")
    unknown = sorted(set(options) - _OPTION_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown option {unknown[0]!r}; allowed: {', '.join(sorted(_OPTION_FIELDS))}.")
    if set(options) & _INDEX_OPTIONS and task != "multi-face-swap":
        raise InvalidRequest("Face index options need task 'multi-face-swap'.")
    if options and task == SAME_IMAGE_SWAP:
        raise InvalidRequest(f"Task {SAME_IMAGE_SWAP!r} takes no options.")
    checked: dict[str, str] = {}
    for name, value in options.items():
        if name == "enhance":
            text = str(value).lower() if isinstance(value, bool | str) else ""
            if text not in ("true", "false"):
                raise InvalidRequest("Option 'enhance' must be true or false.")
            checked[name] = text
            continue
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _INDEX_LIST.match(text):
            raise InvalidRequest(f'Option {name!r} must be face indices such as "0" or "1,0".')
        checked[name] = text
    return checked


def request_job_id(fields: RequestFields) -> str:
    """The job id of an API or event request: from its ``idempotency_key``, else from what defines the work.

    The same request (or the same key) always names the same job, by whichever way it arrives.
    """
    return job_id_for("request", fields.idempotency_key or fields.fingerprint())


def request_to_message(request: JobRequest) -> str:
    """A job request as the submit queue's message body: ``{"job_request": {…}}``."""
    return json.dumps(
        {
            "job_request": {
                "job_id": request.job_id,
                "target_image": request.target_image.as_dict(),
                "swap_image": request.swap_image.as_dict(),
                "provider": request.provider,
                "task": request.task,
                "result_key": request.result_key,
                "source": request.source,
                "options": request.options,
                "retry_of": request.retry_of,
                "fallback_providers": list(request.fallback_providers),
            }
        }
    )


def request_from_message(data: Mapping[str, Any]) -> JobRequest:
    """Inverse of :func:`request_to_message` (given the ``job_request`` object)."""
    return JobRequest(
        job_id=data["job_id"],
        target_image=ImageRef.from_dict(data["target_image"]),
        swap_image=ImageRef.from_dict(data["swap_image"]),
        provider=data["provider"],
        task=data["task"],
        result_key=data["result_key"],
        source=data["source"],
        options=dict(data.get("options") or {}),
        retry_of=data.get("retry_of"),
        fallback_providers=tuple(data.get("fallback_providers") or ()),
    )


def requests_in_message(
    body: Mapping[str, Any], *, objects: ObjectStore, input_bucket: str, default_provider: str
) -> list[JobRequest]:
    """The job requests one submit-queue message carries, whichever way it came in.

    Parameters
    ----------
    body
        The decoded message body: an S3 event notification (``Records``; keys are URL-decoded here), a
        "Job Requested" EventBridge event (``detail-type``, ``detail``), or a request queued by the jobs API
        (``job_request``). S3 test events and keys that are not job inputs give no request.
    objects, input_bucket, default_provider
        As for :func:`request_for_upload`.
    """
    if "job_request" in body:
        return [request_from_message(body["job_request"])]
    if body.get("detail-type") == "Job Requested":
        return [
            request_for_event(
                body.get("detail"),
                event_id=str(body.get("id", "")),
                input_bucket=input_bucket,
                default_provider=default_provider,
            )
        ]
    requests = []
    for record in body.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        obj = record["s3"]["object"]
        request = request_for_upload(
            record["s3"]["bucket"]["name"],
            unquote_plus(obj["key"]),
            version_id=obj.get("versionId"),
            etag=obj.get("eTag"),
            objects=objects,
            default_provider=default_provider,
        )
        if request is not None:
            requests.append(request)
    return requests


def request_for_event(detail: Any, *, event_id: str, input_bucket: str, default_provider: str) -> JobRequest:
    """The job request of a "Job Requested" event's ``detail`` (the API's body without ``base64`` images).

    An invalid detail still gives a request (job id from the event id) carrying the error in ``invalid``, so
    the job is recorded FAILED with ``invalid_request`` rather than lost.
    """
    try:
        fields = parse_request_fields(detail, bucket=input_bucket, default_provider=default_provider, what="event")
    except InvalidRequest as e:
        return invalid_request(job_id_for("event", event_id), source="event", provider=default_provider, error=e)
    job_id = request_job_id(fields)
    target = fields.target_image
    assert isinstance(target, ImageRef)
    return fields.request(
        job_id=job_id, result_key=fields.result_key or default_result_key(job_id, target), source="event"
    )
