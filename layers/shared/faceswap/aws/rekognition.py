"""The face matcher on Amazon Rekognition: :class:`RekognitionFaceMatcher`.

One ``CompareFaces`` call per reference (https://docs.aws.amazon.com/rekognition/latest/APIReference/
API_CompareFaces.html): the largest face of the source image (the reference) is compared with each of the 100
largest faces of the target image. ``SimilarityThreshold`` is 0, so every compared face comes back in
``FaceMatches`` with its similarity and the threshold and margin are applied by :class:`faceswap.faces.FaceChooser`,
which needs the runner-up too; a face still listed in ``UnmatchedFaces`` scores 0. ``QualityFilter`` is ``NONE``
(CompareFaces' default), so no face is dropped for blur or pose and every face of the target can be chosen or kept
out of the way. Boxes come as ratios of the image and may fall outside 0..1; they are turned into pixels of the
target and clipped to it.

Errors: "If no faces are detected in the source or target images, CompareFaces returns an InvalidParameterException
error" (the API reference), with the generic message "Request has invalid parameters"; it is the only documented
reason left once both images are JPEG or PNG, at most 5 MB and at least 80 pixels a side, which the caller ensures
(https://docs.aws.amazon.com/rekognition/latest/dg/limits.html): it is :class:`faceswap.faces.ReferenceWithoutFace`;
``InvalidImageFormatException`` and ``ImageTooLargeException`` are ``invalid_image``; anything else (throttling,
access denied, a service error) is :class:`faceswap.errors.StoreUnavailable`, so the job's message is delivered
again.

Images sent to AWS AI services may be used to improve them unless the account opts out (README, "Deploy to AWS").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from faceswap.aws import error_code, translated
from faceswap.errors import InvalidImage
from faceswap.faces import FaceScore, ReferenceWithoutFace

if TYPE_CHECKING:
    from mypy_boto3_rekognition import RekognitionClient

    from faceswap.images import PreparedImage


class RekognitionFaceMatcher:
    """:class:`faceswap.ports.FaceMatcher` on Amazon Rekognition's ``CompareFaces``.

    ``make_client`` makes the Rekognition client when the first face map is matched (most jobs have none, so a cold
    start does not pay for it).
    """

    def __init__(self, make_client: Callable[[], RekognitionClient]) -> None:
        self._make_client = make_client
        self._made: RekognitionClient | None = None

    @property
    def _client(self) -> RekognitionClient:
        if self._made is None:
            self._made = self._make_client()
        return self._made

    @translated("rekognition:CompareFaces")
    def compare(self, reference: PreparedImage, target: PreparedImage) -> list[FaceScore]:
        """Score every face of ``target`` against ``reference``'s largest face; see
        :meth:`faceswap.ports.FaceMatcher.compare`."""
        try:
            response = self._client.compare_faces(
                SourceImage={"Bytes": reference.data},
                TargetImage={"Bytes": target.data},
                SimilarityThreshold=0.0,
                QualityFilter="NONE",
            )
        except ClientError as e:
            code = error_code(e)
            if code == "InvalidParameterException":
                raise ReferenceWithoutFace() from e
            if code in ("InvalidImageFormatException", "ImageTooLargeException"):
                raise InvalidImage(f"The face matcher could not read an image ({code}).") from e
            raise
        scores = [
            FaceScore(_box(match.get("Face", {}).get("BoundingBox", {}), target), float(match.get("Similarity", 0.0)))
            for match in response.get("FaceMatches", [])
        ]
        scores += [
            FaceScore(_box(face.get("BoundingBox", {}), target), 0.0) for face in response.get("UnmatchedFaces", [])
        ]
        return sorted(scores, key=lambda score: score.similarity, reverse=True)


def _box(ratios: Any, image: PreparedImage) -> tuple[int, int, int, int]:
    """A ``BoundingBox`` (``Left``, ``Top``, ``Width``, ``Height`` as ratios of the image) in pixels of ``image``,
    clipped to it."""
    left = float(ratios.get("Left", 0.0)) * image.width
    top = float(ratios.get("Top", 0.0)) * image.height
    right = left + float(ratios.get("Width", 0.0)) * image.width
    bottom = top + float(ratios.get("Height", 0.0)) * image.height
    return (
        max(0, round(left)),
        max(0, round(top)),
        min(image.width, round(right)),
        min(image.height, round(bottom)),
    )
