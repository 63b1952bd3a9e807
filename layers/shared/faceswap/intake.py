"""Turning uploads into job requests: the face library and manifests.

Upload contract (README "Upload contracts"):

1. Face library: ``faces/<face-id>.<ext>`` holds a swap face; every image put under ``incoming/<face-id>/…``
   gets that face swapped onto it, kept at ``results/<face-id>/<same relative path>`` in the results bucket. A video
   (named ``.mp4``, ``.m4v``, ``.mov``, ``.webm`` or ``.mkv``; its content is checked before any provider is paid) is a
   video job, its result the MP4 at that path with the extension ``.mp4``. When
   the face photo carries the metadata ``reference=<key>`` (a photo of one person, in the inputs bucket), the face
   replaced in each image is that person's (a face map of one pair, :mod:`faceswap.faces`); without it, the
   provider's default face. The metadata comes with the HEAD that finds the face photo: no request more per upload.
2. Manifest: ``jobs/<name>.json`` (at most 64 KiB), see :func:`parse_manifest` for its fields; the result is
   kept at its ``result_key``, or ``results/jobs/<name>.<target extension>``.

Job ids come from the uploaded object (``s3``, bucket, key, version id or else ETag), so a repeated S3 event
names the same job.
"""

from __future__ import annotations

import base64
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
from faceswap.messages import request_from_message
from faceswap.model import FacePair, ImageRef, JobRequest
from faceswap.ports import ObjectStore

FACES_PREFIX = "faces/"
REFERENCE_METADATA = "reference"
"""User metadata of a face photo (``x-amz-meta-reference``) naming, by key in the inputs bucket, a photo of the one
person whose face that face id replaces."""
INCOMING_PREFIX = "incoming/"
MANIFEST_PREFIX = "jobs/"
RESULTS_PREFIX = "results/"
MAX_MANIFEST_BYTES = 64 * 1024
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
VIDEO_EXTENSIONS = ("mp4", "m4v", "mov", "webm", "mkv")
"""Names of face-library uploads that are video jobs (the content decides whether they are videos: faceswap.media)."""
SAME_IMAGE_SWAP = "same-image-swap"
"""The task that swaps the two faces of one target image with each other (AIPhotoCraft's
``swapfacesameimage``): it takes no swap image, since the faces come from the target itself."""
TASKS = ("face-swap", "multi-face-swap", SAME_IMAGE_SWAP)

_FACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024
"""Most decoded ``base64`` image bytes in one API request, all images together (larger ones go through ``POST
/uploads``): 4 MiB is 5.3 MiB of base64, which with the rest of the event fits Lambda's 6 MB synchronous payload
limit (https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html). A request far over it never reaches the
function: the HTTP API or Lambda refuses it with 413."""


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
    stem, extension = posixpath.splitext(relative)
    video = extension[1:].lower() in VIDEO_EXTENSIONS
    result_key = RESULTS_PREFIX + (f"{stem}.mp4" if video else relative)
    invalid: InputError | None = None
    swap = ImageRef()
    face_map: tuple[FacePair, ...] = ()
    if not _FACE_ID.match(face_id) or not rest:
        invalid = InvalidRequest(f"Uploads go to incoming/<face-id>/<file>; {key!r} names no face id and file.")
    elif {"", ".", ".."} & set(rest.split("/")):
        # The result key mirrors the upload's key, so it must stay a plain relative key under results/.
        invalid = InvalidRequest(f"The upload key {key!r} has an empty, '.' or '..' segment.")
    else:
        swap_key, metadata = _find_face(bucket, face_id, objects)
        if swap_key is None:
            invalid = SwapFaceMissing(
                f"No swap face for face id {face_id!r}: upload faces/{face_id}.jpg "
                f"(or .jpeg/.png/.webp) first, then upload the target again."
            )
        else:
            swap = ImageRef(bucket=bucket, key=swap_key)
            reference_key = metadata.get(REFERENCE_METADATA)
            if reference_key:
                try:
                    check_key(reference_key, f"The face photo's {REFERENCE_METADATA!r} metadata")
                    face_map = (FacePair(ImageRef(bucket=bucket, key=reference_key), swap),)
                except InvalidRequest as e:
                    invalid = e
    return JobRequest(
        job_id=job_id,
        target_image=ImageRef() if video else target,
        swap_image=swap,
        provider=provider,
        task="face-swap",
        result_key=result_key,
        source="s3",
        invalid=invalid,
        face_map=face_map,
        target_video=target if video else None,
    )


def _find_face(bucket: str, face_id: str, objects: ObjectStore) -> tuple[str | None, Mapping[str, str]]:
    """The key of ``faces/<face-id>.<ext>`` for the first image extension that exists, and its user metadata (a
    reference photo's key, :data:`REFERENCE_METADATA`), or ``(None, {})``. HEAD requests (billed as GETs): most
    libraries hold .jpg, so usually one, which brings the metadata with it."""
    for extension in IMAGE_EXTENSIONS:
        key = f"{FACES_PREFIX}{face_id}.{extension}"
        metadata = objects.head(bucket, key)
        if metadata is not None:
            return key, metadata
    return None, {}


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
    video = fields.target_video is not None
    result_key = fields.result_key or f"{RESULTS_PREFIX}jobs/{name}{_extension(fields.target, video=video)}"
    check_key(result_key, "result_key", prefix=RESULTS_PREFIX)
    return fields.request(job_id=job_id, result_key=result_key, source="manifest")


@dataclass(frozen=True)
class RequestFields:
    """A validated job request as a user wrote it (manifest, API body or "Job Requested" event detail).

    ``target_image`` / ``swap_image`` are references, or the decoded bytes of a ``base64`` image (API only),
    which the caller stores before building the :class:`JobRequest`. A video job has ``target_video`` instead of
    ``target_image`` (an empty reference).
    """

    target_image: ImageRef | bytes
    swap_image: ImageRef | bytes
    provider: str
    task: str
    options: dict[str, str]
    result_key: str | None
    idempotency_key: str | None
    fallback_providers: tuple[str, ...] = ()
    face_map: tuple[tuple[ImageRef | bytes, ImageRef | bytes], ...] = ()
    """``(reference, swap image)`` per pair; with the one-pair shorthand, the swap image is ``swap_image`` itself."""
    target_video: ImageRef | bytes | None = None

    @property
    def target(self) -> ImageRef | bytes:
        """The target: ``target_video`` for a video job, else ``target_image``."""
        return self.target_video if self.target_video is not None else self.target_image

    def images(self) -> dict[str, ImageRef | bytes]:
        """Every distinct input of the request by the field that names it first (``target_image`` or
        ``target_video``, ``swap_image``, ``face_map[0].reference`` …)."""
        named: dict[str, ImageRef | bytes] = (
            {"target_video": self.target_video}
            if self.target_video is not None
            else {"target_image": self.target_image}
        )
        if self.swap_image is not self.target_image:
            named["swap_image"] = self.swap_image
        for i, (reference, swap) in enumerate(self.face_map):
            named[f"face_map[{i}].reference"] = reference
            if swap is not self.swap_image:
                named[f"face_map[{i}].swap_image"] = swap
        return named

    def request(
        self, *, job_id: str, result_key: str, source: str, stored: Mapping[str, ImageRef] | None = None
    ) -> JobRequest:
        """The job request; ``stored``: the references of inline images by field (see :meth:`images`)."""
        stored = stored or {}
        target_ref = stored.get("target_image", self.target_image)
        video_ref = stored.get("target_video", self.target_video)
        assert video_ref is None or isinstance(video_ref, ImageRef)
        swap_ref = target_ref if self.swap_image is self.target_image else stored.get("swap_image", self.swap_image)
        face_map = []
        for i, (reference, swap) in enumerate(self.face_map):
            reference_ref = stored.get(f"face_map[{i}].reference", reference)
            pair_swap = swap_ref if swap is self.swap_image else stored.get(f"face_map[{i}].swap_image", swap)
            assert isinstance(reference_ref, ImageRef) and isinstance(pair_swap, ImageRef)
            face_map.append(FacePair(reference_ref, pair_swap))
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
            face_map=tuple(face_map),
            target_video=video_ref,
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
                **({"face_map": [[ref(r), ref(s)] for r, s in self.face_map]} if self.face_map else {}),
                **({"target_video": ref(self.target_video)} if self.target_video is not None else {}),
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
    """Validate a job request (manifest, API body, or "Job Requested" event detail) against its schema.

    Parameters
    ----------
    data
        The decoded JSON object.
    bucket
        The inputs bucket (``s3_key`` references point into it).
    default_provider
        Provider when the request names none.
    what
        ``manifest`` (:class:`faceswap.schema.Manifest`), ``event`` (:class:`faceswap.schema.JobRequestDetail`) or
        ``request`` (:class:`faceswap.schema.JobSubmission` with ``allow_base64``, else the event's shape): used in
        messages too.
    allow_base64
        Accept ``{"base64": …}`` images (the API: up to the API's body limit).
    allow_http
        Accept ``http://`` image URLs (only where the local stack allows loopback downloads).

    Raises
    ------
    InvalidRequest
        The message names the bad field.
    """
    from faceswap import schema  # pydantic: loaded only by the functions that validate a request, when they do

    model: type[schema.Manifest] = (
        schema.Manifest if what == "manifest" else schema.JobSubmission if allow_base64 else schema.JobRequestDetail
    )
    spec = schema.validate(model, data, what=what, allow_http=allow_http)
    target = _image(spec.target_image, bucket) if spec.target_image is not None else ImageRef()
    video = _image(spec.target_video, bucket) if spec.target_video is not None else None
    face_map: tuple[tuple[ImageRef | bytes, ImageRef | bytes], ...] = tuple(
        (_image(pair.reference, bucket), _image(pair.swap_image, bucket)) for pair in spec.face_map or ()
    )
    if spec.task == SAME_IMAGE_SWAP:
        swap = target
    elif spec.swap_image is not None:
        swap = _image(spec.swap_image, bucket)
        if spec.reference is not None:  # the one-pair shorthand
            face_map = ((_image(spec.reference, bucket), swap),)
    else:  # a face map: the first pair's swap image stands for the job's
        swap = face_map[0][1]
    provider = spec.provider if spec.provider is not None else default_provider
    providers = (provider,) if isinstance(provider, str) else tuple(provider)
    return RequestFields(
        target_image=target,
        swap_image=swap,
        provider=providers[0],
        task=spec.task,
        options=spec.options.model_dump(exclude_none=True),
        result_key=spec.result_key,
        idempotency_key=getattr(spec, "idempotency_key", None),
        fallback_providers=providers[1:],
        face_map=face_map,
        target_video=video,
    )


def _image(source: Any, bucket: str) -> ImageRef | bytes:
    """A validated image source as a reference into ``bucket``, a URL reference, or inline bytes."""
    if getattr(source, "base64", None):
        return base64.b64decode(source.base64, validate=True)
    if source.url:
        return ImageRef(url=source.url)
    return ImageRef(bucket=bucket, key=source.s3_key)


def _extension(target: ImageRef | bytes, *, video: bool = False) -> str:
    if video:  # every video result is an MP4
        return ".mp4"
    if isinstance(target, bytes):
        return ".jpg"
    extension = posixpath.splitext(target.key or (target.url or "").split("?", 1)[0])[1].lower()
    return extension if extension[1:] in IMAGE_EXTENSIONS else ".jpg"


def default_result_key(job_id: str, target: ImageRef | bytes, *, video: bool = False) -> str:
    """Where an API or event job's result goes when the request names no ``result_key`` (``video``: an MP4)."""
    return f"{RESULTS_PREFIX}api/{job_id}{_extension(target, video=video)}"


def check_key(key: Any, field: str, *, prefix: str = "") -> None:
    """Refuse ``key`` unless it is a plain relative S3 key of 1 to 1024 characters (under ``prefix``): the key
    safety a JSON Schema cannot say, used by :mod:`faceswap.schema` and for keys made from uploads.

    Raises
    ------
    InvalidRequest
        The message names ``field``.
    """
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise InvalidRequest(f"Field {field!r} must be an S3 key of 1 to 1024 characters.")
    parts = key.split("/")
    if key.startswith("/") or ".." in parts or "." in parts or "" in parts or "\\" in key or "\x00" in key:
        raise InvalidRequest(f"Field {field!r} must be a plain relative key (no '..', '.', '//' or leading '/').")
    if prefix and not key.startswith(prefix):
        raise InvalidRequest(f"Field {field!r} must start with {prefix!r}.")


def request_job_id(fields: RequestFields) -> str:
    """The job id of an API or event request: from its ``idempotency_key``, else from what defines the work.

    The same request (or the same key) always names the same job, by whichever way it arrives.
    """
    return job_id_for("request", fields.idempotency_key or fields.fingerprint())


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
    video = fields.target_video is not None
    return fields.request(
        job_id=job_id,
        result_key=fields.result_key or default_result_key(job_id, fields.target, video=video),
        source="event",
    )
