"""The job request's schema: one definition read by manifests, "Job Requested" events and ``POST /jobs``.

Three shapes of one request, each a pydantic model:

- :class:`Manifest`: a ``jobs/<name>.json`` upload (images by ``s3_key`` or ``url``);
- :class:`JobRequestDetail`: a "Job Requested" event's ``detail``: a manifest plus ``idempotency_key``;
- :class:`JobSubmission`: the body of ``POST /jobs``: an event's detail whose images may also be inline ``base64``.

``events/schemas/manifest.schema.json``, ``events/schemas/job_requested.schema.json`` and the jobs API's OpenAPI
document (``functions/api/openapi.json``) are generated from these models (``make schemas``), and a unit test fails
when a committed copy is stale. Validation runs through the same models (:func:`validate`); the few rules a JSON
Schema cannot say are validators here, in code: S3 key safety (no ``..``, ``.`` or empty segments), decoded
``base64`` sizes, and which options and images a task takes.

Every refusal names its field, with a stable code (``invalid_request``): :func:`validate` turns pydantic's errors
into one :class:`faceswap.errors.InvalidRequest`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from faceswap.errors import InvalidRequest
from faceswap.intake import MAX_INLINE_IMAGE_BYTES, RESULTS_PREFIX, SAME_IMAGE_SWAP, TASKS, check_key

INDEX_OPTIONS = ("swap_faces_index", "target_faces_index", "swap_index")
_INDEX_LIST = re.compile(r"^\d{1,2}(,\d{1,2}){0,15}$")

Task = Literal["face-swap", "multi-face-swap", "same-image-swap"]
assert get_args(Task) == TASKS
ProviderName = Annotated[str, Field(min_length=1, max_length=64)]
Providers = ProviderName | Annotated[list[ProviderName], Field(min_length=1, max_length=5)]
Url = Annotated[str, Field(max_length=2048, json_schema_extra={"pattern": "^https://"})]
IndexList = Annotated[str, Field(pattern=_INDEX_LIST.pattern)]
ResultKey = Annotated[str, Field(pattern=r"^results/", max_length=1024)]
Omitted = SkipJsonSchema[None]
"""An optional field's default: left out of the JSON Schema, since a field given as ``null`` is refused."""
S3Key = Annotated[str, Field(min_length=1, max_length=1024, description="A plain relative key (no '..', '.', '//').")]


def _refuse(message: str) -> PydanticCustomError:
    """A refusal whose message is complete as it stands (it names its field)."""
    return PydanticCustomError("invalid_request", message)


class ImageSource(BaseModel):
    """Exactly one of ``s3_key`` (the inputs bucket) or ``url`` (https); a plain string is short for ``s3_key``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})
    s3_key: S3Key | Omitted = None
    url: Url | Omitted = None
    """An https URL (``http://`` only where the local stack allows loopback downloads: checked in code)."""


class InlineImageSource(ImageSource):
    """Exactly one of ``s3_key``, ``url`` or ``base64`` (at most 4 MiB decoded for all of a request's images; more
    is refused 413 ``payload_too_large``: use ``POST /uploads``)."""

    base64: str | Omitted = None


class Options(BaseModel):
    """Task options: face indices (``multi-face-swap``, or ``face-swap`` on a target video, whose faces are counted in
    its first frame; ``"0"`` or ``"1,0"``; AIPhotoCraft's ``swap_index`` is 1-based), ``enhance`` (AIPhotoCraft's
    GFPGAN) and ``trim`` (a target video longer than the provider takes is cut to what it takes, instead of refused
    ``video_too_long``)."""

    model_config = ConfigDict(extra="forbid")
    swap_faces_index: IndexList | Omitted = None
    target_faces_index: IndexList | Omitted = None
    swap_index: IndexList | Omitted = None
    enhance: bool | Literal["true", "false"] | Omitted = None
    trim: bool | Literal["true", "false"] | Omitted = None

    @field_validator(*INDEX_OPTIONS, mode="before")
    @classmethod
    def _indices(cls, value: Any, info: ValidationInfo) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _INDEX_LIST.match(text):
            raise _refuse(f'Option {info.field_name!r} must be face indices such as "0" or "1,0".')
        return text

    @field_validator("enhance", "trim", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> str:
        text = str(value).lower() if isinstance(value, bool | str) else ""
        if text not in ("true", "false"):
            raise _refuse(f"Option {info.field_name!r} must be true or false.")
        return text


MAX_FACE_MAP_PAIRS = 4
"""Most pairs in a face map."""
_FACE_MAP_FIELD: Any = Field(
    default=None,
    description="One to four pairs {reference, swap_image}: the face of the target that is the person in a reference "
    "gets that pair's swap face; other faces are left as they were. Task face-swap only; no top-level swap_image.",
)
_TARGET_VIDEO_FIELD: Any = Field(
    default=None,
    description="A video (MP4, MOV or WebM, recognised by its content) whose face is replaced, instead of "
    "target_image: task face-swap, at a provider with a video task (piapi, crun, selfhosted). It is fitted to the "
    "provider's limits (H.264 MP4, frame size, frame rate, bytes); one longer than the provider takes is refused "
    "video_too_long unless options.trim is true. With face_map or reference, faces are chosen in its first frame "
    "(provider selfhosted).",
)
_REFERENCE_FIELD: Any = Field(
    default=None,
    description="Short for a face map of one pair: the face of the target that is the person in this photo gets "
    "swap_image's face.",
)


class FacePair(BaseModel):
    """One pair of a face map: the face of the target that is the person in ``reference`` gets ``swap_image``'s
    face."""

    model_config = ConfigDict(extra="forbid")
    reference: S3Key | ImageSource
    swap_image: S3Key | ImageSource

    @field_validator("reference", "swap_image", mode="before")
    @classmethod
    def _image(cls, value: Any, info: ValidationInfo) -> Any:
        return _image(value, info.field_name or "", inline=cls._inline(), info=info)

    @classmethod
    def _inline(cls) -> bool:
        return False


class InlineFacePair(FacePair):
    """A face map's pair in ``POST /jobs``: its images may also be inline (``base64``)."""

    reference: S3Key | InlineImageSource
    swap_image: S3Key | InlineImageSource

    @classmethod
    def _inline(cls) -> bool:
        return True


class Manifest(BaseModel):
    """A job: the face of ``swap_image`` goes onto ``target_image`` (``same-image-swap``: the two faces of
    ``target_image`` swap places, and there is no ``swap_image``).

    ``face_map`` chooses the faces to replace by reference photos instead: each pair's swap face goes onto the face of
    the target that is the person in its reference, and every other face is left as it was. ``reference`` beside
    ``swap_image`` is the one-pair shorthand.

    A field left out takes its default; ``null`` means the same for ``swap_image``, ``result_key`` and
    ``idempotency_key`` and is refused elsewhere, so the JSON Schema of the other optional fields has no ``null``
    (:data:`Omitted`).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["target_image"]}, {"required": ["target_video"]}]},
    )
    target_image: S3Key | ImageSource | Omitted = Field(default=None, description="Required unless target_video.")
    target_video: S3Key | ImageSource | Omitted = _TARGET_VIDEO_FIELD
    swap_image: S3Key | ImageSource | None = Field(
        default=None, description="Required except for same-image-swap and with face_map."
    )
    provider: Providers | Omitted = Field(
        default=None,
        description="A provider, or an ordered list of up to 5 distinct ones to fail over through. Default: the "
        "stack's DefaultProvider.",
    )
    task: Task = "face-swap"
    options: Options = Field(default_factory=Options)
    result_key: ResultKey | None = Field(default=None, description="Key under results/ in the results bucket.")
    face_map: Annotated[Sequence[FacePair], Field(min_length=1, max_length=MAX_FACE_MAP_PAIRS)] | Omitted = (
        _FACE_MAP_FIELD
    )
    reference: S3Key | ImageSource | Omitted = _REFERENCE_FIELD

    @field_validator("target_image", "target_video", "swap_image", "reference", mode="before")
    @classmethod
    def _image(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name == "swap_image":
            return None
        return _image(value, info.field_name or "", inline=cls._inline(), info=info)

    @field_validator("face_map", mode="before")
    @classmethod
    def _face_map(cls, value: Any) -> Any:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_FACE_MAP_PAIRS:
            raise _refuse(
                f"Field 'face_map' must be a list of 1 to {MAX_FACE_MAP_PAIRS} pairs "
                '{"reference": <image>, "swap_image": <image>}.'
            )
        for i, pair in enumerate(value):
            if not isinstance(pair, dict) or set(pair) != {"reference", "swap_image"}:
                raise _refuse(f"Field 'face_map[{i}]' must be an object with exactly 'reference' and 'swap_image'.")
        return value

    @classmethod
    def _inline(cls) -> bool:
        return False

    @field_validator("provider", mode="before")
    @classmethod
    def _provider(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= 5
            or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names)
            or len(set(names)) != len(names)
        ):
            raise _refuse("Field 'provider' must be a provider name, or a list of up to 5 distinct names.")
        return value

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        if value not in TASKS:
            raise _refuse(f"Field 'task' must be one of {', '.join(TASKS)}.")
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _refuse("Field 'options' must be an object.")
        unknown = sorted(set(value) - set(Options.model_fields))
        if unknown:
            raise _refuse(f"Unknown option {unknown[0]!r}; allowed: {', '.join(sorted(Options.model_fields))}.")
        return value

    @field_validator("result_key", mode="before")
    @classmethod
    def _result_key(cls, value: Any) -> Any:
        if value is None:  # null: absent (the default result key)
            return None
        try:
            check_key(value, "result_key", prefix=RESULTS_PREFIX)
        except InvalidRequest as e:
            raise _refuse(e.message) from e
        return value

    @model_validator(mode="after")
    def _task_rules(self) -> Manifest:
        chosen = self.options.model_dump(exclude_none=True)
        if (self.target_image is None) == (self.target_video is None):
            if self.target_image is not None:
                raise _refuse("Give either 'target_image' or 'target_video', not both.")
            kinds = "'s3_key', 'url' or 'base64'" if self._inline() else "'s3_key' or 'url'"
            raise _refuse(f"Field 'target_image' (or 'target_video') is missing: give an object with one of {kinds}.")
        if self.target_video is not None:
            if self.task != "face-swap":
                raise _refuse("Field 'target_video' needs task 'face-swap'.")
        elif "trim" in chosen:
            raise _refuse("Option 'trim' needs a 'target_video'.")
        if set(chosen) & set(INDEX_OPTIONS) and self.task != "multi-face-swap" and self.target_video is None:
            raise _refuse("Face index options need task 'multi-face-swap' (or a 'target_video').")
        if self.face_map is not None or self.reference is not None:
            field = "face_map" if self.face_map is not None else "reference"
            if set(chosen) & set(INDEX_OPTIONS):
                raise _refuse(f"Field {field!r} chooses the faces itself: leave out the face index options.")
            if self.task != "face-swap":
                raise _refuse(f"Field {field!r} needs task 'face-swap' (it chooses the faces itself).")
            if self.face_map is not None and self.reference is not None:
                raise _refuse("Give either 'face_map' or 'reference' (the one-pair shorthand), not both.")
            if self.face_map is not None and self.swap_image is not None:
                raise _refuse("With 'face_map', each pair names its swap image: leave out the top-level 'swap_image'.")
            if self.reference is not None and self.swap_image is None:
                raise _refuse("Field 'reference' needs 'swap_image' beside it (or use 'face_map').")
            return self
        if self.task == SAME_IMAGE_SWAP:
            if self.swap_image is not None:
                raise _refuse(f"Task {SAME_IMAGE_SWAP!r} takes no 'swap_image': the target's own faces swap.")
            if chosen:
                raise _refuse(f"Task {SAME_IMAGE_SWAP!r} takes no options.")
        elif self.swap_image is None:
            kinds = "'s3_key', 'url' or 'base64'" if self._inline() else "'s3_key' or 'url'"
            raise _refuse(f"Field 'swap_image' is missing: give an object with one of {kinds}.")
        return self


class JobRequestDetail(Manifest):
    """A "Job Requested" event's ``detail``: a manifest's fields and an ``idempotency_key`` (same key, same job)."""

    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Same key, same job."
    )

    @field_validator("idempotency_key", mode="before")
    @classmethod
    def _idempotency_key(cls, value: Any) -> Any:
        if value is None:  # null: absent
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise _refuse("Field 'idempotency_key' must be a string of 1 to 128 characters.")
        return value


class JobSubmission(JobRequestDetail):
    """The body of ``POST /jobs``: an event's detail whose images may also be inline (``base64``)."""

    target_image: S3Key | InlineImageSource | Omitted = Field(default=None, description="Required unless target_video.")
    target_video: S3Key | InlineImageSource | Omitted = _TARGET_VIDEO_FIELD
    swap_image: S3Key | InlineImageSource | None = Field(
        default=None, description="Required except for same-image-swap and with face_map."
    )
    face_map: Annotated[Sequence[InlineFacePair], Field(min_length=1, max_length=MAX_FACE_MAP_PAIRS)] | Omitted = (
        _FACE_MAP_FIELD
    )
    reference: S3Key | InlineImageSource | Omitted = _REFERENCE_FIELD

    @classmethod
    def _inline(cls) -> bool:
        return True


def _image(value: Any, field: str, *, inline: bool, info: ValidationInfo) -> Any:
    """Check an image field (the rules :func:`validate` reports by field) and return it in object form."""
    kinds = "'s3_key', 'url' or 'base64'" if inline else "'s3_key' or 'url'"
    if isinstance(value, str):
        value = {"s3_key": value}
    allowed = {"s3_key", "url", "base64"} if inline else {"s3_key", "url"}
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= allowed:
        raise _refuse(f"Field {field!r} must be an object with exactly one of {kinds}.")
    ((kind, ref),) = value.items()
    if not isinstance(ref, str) or not ref:
        raise _refuse(f"Field {field}.{kind} must be a non-empty string.")
    if kind == "url":
        # Without a context (the jobs API's first pass, in Powertools) http:// passes; faceswap.api validates again
        # with the deployment's context, which refuses it on AWS.
        allow_http = info.context is None or bool(info.context.get("allow_http"))
        schemes = ("https://", "http://") if allow_http else ("https://",)
        if not ref.startswith(schemes) or len(ref) > 2048:
            raise _refuse(f"Field {field}.url must be an https URL of at most 2048 characters.")
    elif kind == "base64":
        if len(ref) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4:
            raise _refuse(
                f"Field {field}.base64 is over {MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MiB; "
                "upload it with POST /uploads and give its s3_key."
            )
        if info.context is not None:  # the jobs API's first pass (Powertools) leaves decoding to the second
            try:
                base64.b64decode(ref, validate=True)
            except (binascii.Error, ValueError) as e:
                raise _refuse(f"Field {field}.base64 is not valid base64.") from e
    else:
        try:
            check_key(ref, f"{field}.s3_key")
        except InvalidRequest as e:
            raise _refuse(e.message) from e
    return value


def validate[M: Manifest](model: type[M], data: Any, *, what: str, allow_http: bool = False) -> M:
    """Validate a request against one of the schema's models.

    Parameters
    ----------
    model
        :class:`Manifest`, :class:`JobRequestDetail` or :class:`JobSubmission`.
    data
        The decoded JSON value.
    what
        ``manifest``, ``request`` or ``event``: used in messages.
    allow_http
        Accept ``http://`` image URLs (only where the local stack allows loopback downloads).

    Returns
    -------
    Manifest
        The validated request (images in object form; options normalised).

    Raises
    ------
    InvalidRequest
        The message names the first bad field.
    """
    if not isinstance(data, dict):
        raise InvalidRequest(f"The {what} must be a JSON object.")
    try:
        return model.model_validate(data, context={"allow_http": allow_http})
    except ValidationError as e:
        raise InvalidRequest(error_message(e, model=model, what=what)) from None


def error_message(error: ValidationError, *, model: type[BaseModel], what: str = "request") -> str:
    """The one sentence a refusal says: the first error of ``error``, naming its field (see :func:`describe`)."""
    return describe(error.errors()[0], model=model, what=what)


def describe(first: Mapping[str, Any], *, model: type[BaseModel], what: str = "request") -> str:
    """One validation error (a pydantic error dict) as a sentence naming its field.

    Errors the schema's own validators raise are complete sentences; an unknown field lists the allowed ones; other
    pydantic errors are given as ``Field '<dotted.location>': <message>.`` (locations without ``body``/``query``).
    """
    parts = [part for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    location = ".".join(str(part) for part in parts)
    if first["type"] == "invalid_request":
        index = next((part for part in parts if isinstance(part, int)), None)
        if parts and parts[0] == "face_map" and index is not None:  # a pair's refusal names its field, not the pair
            return f"In face_map[{index}]: {first['msg']}"
        return str(first["msg"])
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(model.model_fields))
        return f"Unknown {what} field {location!r}; allowed: {allowed}."
    if first["type"] == "missing":
        return f"Field {location!r} is missing."
    return f"Field {location or 'body'!r}: {first['msg']}."
