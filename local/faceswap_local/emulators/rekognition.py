"""Amazon Rekognition emulator: ``CompareFaces`` with inline image bytes (``providers.md`` §8), on loopback.

A plain boto3 client works against it: ``boto3.client("rekognition", endpoint_url=emulator.url)``, or any client
with ``AWS_ENDPOINT_URL_REKOGNITION=<emulator.url>`` in the environment. It serves exactly one operation,
``CompareFaces`` (https://docs.aws.amazon.com/rekognition/latest/APIReference/API_CompareFaces.html), computed with
the self-hosted engine's dlib face detector and 128-d face descriptors.

Protocol (AWS JSON 1.1, as botocore speaks it for Rekognition): ``POST /`` with ``X-Amz-Target:
RekognitionService.CompareFaces``, ``Content-Type: application/x-amz-json-1.1`` and a SigV4 ``Authorization``
header (its signature is not checked); blobs are base64 strings in the JSON body. Errors are HTTP 400 with
``{"__type": "<Code>", "Message": "..."}``, which botocore turns into ``ClientError`` with that code:

- no ``Authorization: AWS4-HMAC-SHA256 …`` header → ``MissingAuthenticationTokenException``;
- any other target → ``UnknownOperationException``; a body that is not a JSON object → ``SerializationException``;
- an image over 5 MB (5,242,880 bytes) once decoded from base64 → ``ImageTooLargeException``; not JPEG or PNG by
  its content (magic bytes), or not decodable → ``InvalidImageFormatException``; narrower or lower than 80 pixels
  → ``InvalidParameterException`` (https://docs.aws.amazon.com/rekognition/latest/dg/limits.html);
- ``S3Object`` instead of ``Bytes`` → ``InvalidParameterException`` (this emulator serves ``Bytes`` only);
- ``SimilarityThreshold`` outside 0..100 or an unknown ``QualityFilter`` → ``InvalidParameterException``;
- no face in the source image → ``InvalidParameterException`` with CompareFaces' generic "Request has invalid
  parameters" (the message says nothing more on AWS either: boto/botocore#1203).

Semantics: the source image's largest face (by box area) is compared with each of the target image's 100 largest
faces. ``FaceMatches`` holds the faces whose similarity is at least ``SimilarityThreshold`` (default 80), by
similarity descending; ``UnmatchedFaces`` the others (left to right, without a similarity). A target without a face
answers ``InvalidParameterException`` as the API reference says ("If no faces are detected in the source or target
images, CompareFaces returns an InvalidParameterException error"); :attr:`RekognitionEmulator.faceless_target_error`
set to ``False`` answers empty lists instead, to check that a caller copes with both. ``QualityFilter`` is
accepted (NONE, AUTO, LOW, MEDIUM, HIGH) and every value is treated as NONE: no face is filtered out.

Faces: ``BoundingBox`` is dlib's box (brows to chin; Rekognition's reaches further up the forehead) as ratios of the
image's width and height, which may fall slightly outside 0..1 as AWS's can; ``Confidence`` is 99.9; ``Landmarks``
are the 30 Rekognition landmark types taken from dlib's 68 points as ratios of the image (``eyeLeft`` is the eye on
the image's left, as in AWS's examples); ``Pose`` has a rough ``Roll`` (the eye line's angle) and ``Yaw`` (the nose
tip's offset between the jaw's ends), ``Pitch`` 0.0, signs not checked against AWS; ``Quality`` has a rough
``Brightness`` (mean grey level of the face box, 0-100) and ``Sharpness`` (variance of its Laplacian, squashed into
0-100).

Images are decoded with Pillow. A JPEG's EXIF orientation is applied before detection and boxes are given in the
corrected image; a PNG is never rotated. That is what the API reference (API_CompareFaces.html, Response Elements) says
of ``SourceImageOrientationCorrection``/``TargetImageOrientationCorrection``: "Amazon Rekognition uses this orientation
information to perform image correction. The bounding box coordinates are translated to represent object locations after
the orientation information in the Exif metadata is used to correct the image orientation. Images in .png format don't
contain Exif metadata." Both fields are always null, so they are left out of the answer.

Similarity: from the dlib descriptor distance ``d`` (Euclidean, unitless), ``100 / (1 + exp(K * (d - C)))`` with ``K`` =
:data:`SIMILARITY_K` (20) and ``C`` = :data:`SIMILARITY_C` (0.67). ``C`` puts dlib's recommended same-person threshold
(d = 0.6) at similarity 80, CompareFaces' default ``SimilarityThreshold``; ``K`` makes the scores nearly all-or-nothing,
as Rekognition's tend to be: similarity 90 at d = 0.560, 20 at d = 0.739. Measured on ``shared/faces`` through this
emulator's decoding (the altered references sent as JPEG quality 90; Obama is the left face of the pair, Biden the
right)::

    source                                   to Obama in pair       to Biden in pair
                                             d       similarity     d       similarity
    obama.jpg                                0.333   99.88          0.847    2.83
    obama.jpg mirrored                       0.345   99.85          0.842    3.10
    obama.jpg at 0.5x                        0.351   99.83          0.851    2.62
    obama.jpg warm tint, saturation 0.5      0.354   99.82          0.842    3.12
    obama.jpg cropped to face box + 25 %     0.339   99.87          0.850    2.67
    obama.jpg 0.5x on its side, EXIF 6       0.342   99.86          0.843    3.07
    biden.jpg                                0.845    2.93          0.051  100.00
    biden.jpg mirrored                       0.870    1.80          0.203   99.99

Every same-person case is >= 99.8 and every different-person case <= 3.2: the farthest same-person distance
(0.354) could grow by 0.2 and the nearest different-person one (0.842) shrink by 0.1 before leaving the >= 90 /
<= 20 bands.

:attr:`RekognitionEmulator.requests` records every request (operation, arrival time, status, error code, each
image's byte count and pixel size), never the images. Requests may be served concurrently: the engine's models are
behind locks.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image, ImageOps
from werkzeug.wrappers import Request, Response

from faceswap_local.emulators.server import RecordingEmulatorServer

if TYPE_CHECKING:
    from faceswap_engine import Face

logger = logging.getLogger("faceswap_local.rekognition")

TARGET_PREFIX = "RekognitionService."
"""``X-Amz-Target`` prefix of Rekognition's operations (botocore's ``targetPrefix`` for the service)."""
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""Largest image passed as ``Bytes``, in bytes after base64 decoding (5 MB; https://docs.aws.amazon.com/rekognition/
latest/dg/limits.html, and the ``max`` of ``ImageBlob`` in botocore's service model)."""
MIN_SIDE = 80
"""Smallest width and height of an image, in pixels (limits page above)."""
MAX_TARGET_FACES = 100
"""CompareFaces compares the source face with at most this many of the target's largest faces."""
DEFAULT_SIMILARITY_THRESHOLD = 80.0
QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")
FACE_CONFIDENCE = 99.9
NO_FACE_MESSAGE = "Request has invalid parameters"

SIMILARITY_K = 20.0
"""Steepness of the similarity logistic, per unit of dlib descriptor distance (see the module docstring)."""
SIMILARITY_C = 0.67
"""dlib descriptor distance at which the similarity is 50 (see the module docstring)."""

_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))

# Rekognition landmark type -> the dlib 68-point indices averaged for it (iBUG 300-W numbering; points 36-41 are
# the eye on the image's left). https://docs.aws.amazon.com/rekognition/latest/APIReference/API_Landmark.html
_LANDMARKS: dict[str, tuple[int, ...]] = {
    "eyeLeft": (36, 37, 38, 39, 40, 41),
    "eyeRight": (42, 43, 44, 45, 46, 47),
    "nose": (30,),
    "mouthLeft": (48,),
    "mouthRight": (54,),
    "leftEyeBrowLeft": (17,),
    "leftEyeBrowRight": (21,),
    "leftEyeBrowUp": (19,),
    "rightEyeBrowLeft": (22,),
    "rightEyeBrowRight": (26,),
    "rightEyeBrowUp": (24,),
    "leftEyeLeft": (36,),
    "leftEyeRight": (39,),
    "leftEyeUp": (37, 38),
    "leftEyeDown": (40, 41),
    "rightEyeLeft": (42,),
    "rightEyeRight": (45,),
    "rightEyeUp": (43, 44),
    "rightEyeDown": (46, 47),
    "noseLeft": (31,),
    "noseRight": (35,),
    "mouthUp": (51,),
    "mouthDown": (57,),
    "leftPupil": (36, 37, 38, 39, 40, 41),
    "rightPupil": (42, 43, 44, 45, 46, 47),
    "upperJawlineLeft": (0,),
    "midJawlineLeft": (4,),
    "chinBottom": (8,),
    "midJawlineRight": (12,),
    "upperJawlineRight": (16,),
}


def similarity(distance: float) -> float:
    """Map a dlib descriptor distance to a CompareFaces-like similarity.

    Parameters
    ----------
    distance : float
        Euclidean distance between two 128-d dlib descriptors (unitless, >= 0).

    Returns
    -------
    float
        ``100 / (1 + exp(SIMILARITY_K * (distance - SIMILARITY_C)))``, in 0..100 (percent).
    """
    exponent = min(SIMILARITY_K * (distance - SIMILARITY_C), 700.0)  # exp overflows past ~709
    return 100.0 / (1.0 + math.exp(exponent))


class RekognitionError(Exception):
    """An AWS JSON protocol error: HTTP ``status`` with ``{"__type": code, "Message": message}``."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Received:
    """One API request as it was answered (images described by size only, never kept).

    Attributes
    ----------
    operation
        The ``X-Amz-Target`` operation name (``CompareFaces``), or the raw header when it is not Rekognition's.
    at
        Arrival time (epoch seconds).
    status
        HTTP status of the answer.
    error
        The error code answered, ``None`` on success.
    image_bytes
        ``{"SourceImage": n, "TargetImage": n}``: bytes of each image read (after base64 decoding).
    image_sizes
        ``{"SourceImage": (width, height), …}`` in pixels, for each image decoded (after EXIF rotation).
    """

    operation: str
    at: float
    status: int = 200
    error: str | None = None
    image_bytes: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


class RekognitionEmulator(RecordingEmulatorServer[Received]):
    """The emulator server, standing in for ``https://rekognition.<region>.amazonaws.com``.

    Parameters
    ----------
    port
        The port to listen on; a free one when ``None``.

    Attributes
    ----------
    faceless_target_error
        ``True`` (default): a target image without a face answers ``InvalidParameterException``, as the API
        reference says CompareFaces does. ``False``: it answers empty ``FaceMatches`` and ``UnmatchedFaces``.
    requests
        Every request, as :class:`Received`, in the order they were answered.
    """

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(name="rekognition", port=port)
        self.faceless_target_error = True

    # ---------------------------------------------------------------------------------------------- HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        target = request.headers.get("X-Amz-Target", "")
        received = Received(operation=target.removeprefix(TARGET_PREFIX), at=time.time())
        try:
            body = self._dispatch(request, received)
            response = Response(json.dumps(body), status=200, content_type=CONTENT_TYPE)
        except RekognitionError as e:
            response = _error(e)
            received.status, received.error = e.status, e.code
        except Exception as e:  # a bug in the emulator: answered as AWS's own failure, and logged
            logger.exception("CompareFaces failed")
            response = _error(RekognitionError("InternalServerError", str(e), status=500))
            received.status, received.error = 500, "InternalServerError"
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        self._keep(received)
        return response(environ, start_response)

    def _dispatch(self, request: Request, received: Received) -> dict[str, Any]:
        if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
            raise RekognitionError("MissingAuthenticationTokenException", "Missing Authentication Token")
        if request.method != "POST" or request.path != "/" or received.operation != "CompareFaces":
            raise RekognitionError("UnknownOperationException", "The local emulator serves CompareFaces only.")
        if request.mimetype != CONTENT_TYPE:
            raise RekognitionError("SerializationException", f"Content-Type must be {CONTENT_TYPE}.")
        try:
            body = json.loads(request.get_data())
        except ValueError as e:
            raise RekognitionError("SerializationException", "The request body is not valid JSON.") from e
        if not isinstance(body, dict):
            raise RekognitionError("SerializationException", "The request body must be a JSON object.")
        return self._compare_faces(body, received)

    # ------------------------------------------------------------------------------------------ CompareFaces

    def _compare_faces(self, body: dict[str, Any], received: Received) -> dict[str, Any]:
        from faceswap_engine import face_distance, faces_with_descriptors  # loads dlib models on first use

        threshold = body.get("SimilarityThreshold", DEFAULT_SIMILARITY_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 100:
            raise _invalid("SimilarityThreshold must be a number from 0 to 100.")
        if body.get("QualityFilter", "NONE") not in QUALITY_FILTERS:
            raise _invalid(f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}.")
        source = _image(body, "SourceImage", received)
        target = _image(body, "TargetImage", received)

        source_faces = faces_with_descriptors(source)
        if not source_faces:
            raise _invalid(NO_FACE_MESSAGE)
        source_face, source_descriptor = max(source_faces, key=lambda fd: fd[0].area)
        target_faces = faces_with_descriptors(target)
        if not target_faces and self.faceless_target_error:
            raise _invalid(NO_FACE_MESSAGE)
        compared = set(sorted(range(len(target_faces)), key=lambda i: -target_faces[i][0].area)[:MAX_TARGET_FACES])

        matches: list[dict[str, Any]] = []
        unmatched: list[dict[str, Any]] = []
        for i, (face, descriptor) in enumerate(target_faces):
            if i not in compared:
                continue
            score = similarity(face_distance(source_descriptor, descriptor))
            details = _compared_face(target, face)
            if score >= threshold:
                matches.append({"Similarity": score, "Face": details})
            else:
                unmatched.append(details)
        matches.sort(key=lambda match: -match["Similarity"])
        return {
            "SourceImageFace": {"BoundingBox": _box(source, source_face.box), "Confidence": FACE_CONFIDENCE},
            "FaceMatches": matches,
            "UnmatchedFaces": unmatched,
        }


def _image(body: dict[str, Any], name: str, received: Received) -> np.ndarray:
    """Validate and decode ``body[name]`` (an ``Image`` with ``Bytes``) into an upright ``(H, W, 3)`` BGR array."""
    value = body.get(name)
    if not isinstance(value, dict):
        raise _invalid(f"{name} is required.")
    if "S3Object" in value:
        raise _invalid(f"{name}.S3Object: the local Rekognition emulator serves images given as Bytes only.")
    encoded = value.get("Bytes")
    if not isinstance(encoded, str):
        raise _invalid(f"{name}.Bytes is required.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RekognitionError("SerializationException", f"{name}.Bytes is not valid base64.") from e
    received.image_bytes[name] = len(data)
    if not data:
        raise _invalid(f"{name}.Bytes is empty.")
    if len(data) > MAX_IMAGE_BYTES:
        raise RekognitionError("ImageTooLargeException", f"{name} is larger than {MAX_IMAGE_BYTES} bytes.")
    image_format = next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)
    if image_format is None:
        raise RekognitionError("InvalidImageFormatException", "Request has invalid image format")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[image_format]) as img:
                img.load()
                # JPEG only: "Images in .png format don't contain Exif metadata" (API_CompareFaces.html, above).
                upright = ImageOps.exif_transpose(img) if image_format == "JPEG" else img
                rgb = np.asarray(upright.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RekognitionError("InvalidImageFormatException", "Request has invalid image format") from e
    height, width = rgb.shape[:2]
    received.image_sizes[name] = (width, height)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise _invalid(f"{name} is {width}x{height} pixels; the minimum is {MIN_SIDE}x{MIN_SIDE}.")
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _compared_face(image: np.ndarray, face: Face) -> dict[str, Any]:
    """A ``ComparedFace`` for ``face``, found in ``image`` (BGR)."""
    height, width = image.shape[:2]
    points = face.landmarks.astype(np.float64)
    landmarks = {kind: points[list(indices)].mean(axis=0) for kind, indices in _LANDMARKS.items()}
    eye_left, eye_right, nose = landmarks["eyeLeft"], landmarks["eyeRight"], landmarks["nose"]
    roll = math.degrees(math.atan2(eye_right[1] - eye_left[1], eye_right[0] - eye_left[0]))
    jaw_left, jaw_right = points[0], points[16]
    half_width = max(float(np.linalg.norm(jaw_right - jaw_left)) / 2.0, 1.0)
    offset = (nose[0] - (jaw_left[0] + jaw_right[0]) / 2.0) / half_width
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset))))
    return {
        "BoundingBox": _box(image, face.box),
        "Confidence": FACE_CONFIDENCE,
        "Landmarks": [
            {"Type": kind, "X": float(x) / width, "Y": float(y) / height} for kind, (x, y) in landmarks.items()
        ],
        "Pose": {"Roll": roll, "Yaw": yaw, "Pitch": 0.0},
        "Quality": _quality(image, face.box),
    }


def _box(image: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, float]:
    """A ``BoundingBox``: ``box`` (``left, top, right, bottom`` in pixels) as ratios of ``image``'s size."""
    height, width = image.shape[:2]
    left, top, right, bottom = box
    return {
        "Width": (right - left) / width,
        "Height": (bottom - top) / height,
        "Left": left / width,
        "Top": top / height,
    }


def _quality(image: np.ndarray, box: tuple[int, int, int, int]) -> dict[str, float]:
    """Rough ``ImageQuality`` of the face box: mean grey level and Laplacian variance, each mapped to 0-100."""
    height, width = image.shape[:2]
    left, top, right, bottom = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
    if right <= left or bottom <= top:
        return {"Brightness": 0.0, "Sharpness": 0.0}
    grey = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return {"Brightness": float(grey.mean()) / 255.0 * 100.0, "Sharpness": 100.0 * variance / (variance + 100.0)}


def _invalid(message: str) -> RekognitionError:
    return RekognitionError("InvalidParameterException", message)


def _error(error: RekognitionError) -> Response:
    body = {"__type": error.code, "Message": error.message}
    response = Response(json.dumps(body), status=error.status, content_type=CONTENT_TYPE)
    response.headers["x-amzn-ErrorType"] = error.code
    return response
