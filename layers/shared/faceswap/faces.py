"""Choosing the faces to replace by reference photos: a job's face map.

A face map is one to four pairs ``{reference, swap_image}``: the face of the target that is the person in a pair's
reference gets that pair's swap face, and every other face is left as it was. Face order is never used: PiAPI
documents that its face numbers follow no strict order, and users of index-based tools report near-random orders in
group photos.

The face matcher (:class:`faceswap.ports.FaceMatcher`; Amazon Rekognition's ``CompareFaces`` on AWS,
:mod:`faceswap.aws.rekognition`, and the local stack's emulation of it) scores every face of the target, exactly as
the provider will receive it (EXIF rotation and downscaling applied), against the largest face of each reference.
:class:`FaceChooser` decides, never guessing:

- a pair's face is the best-scoring one only if its similarity (0-100) is at least ``threshold`` **and** at least
  ``margin`` points above the runner-up; otherwise the job fails before any provider is paid, with
  ``reference_face_not_found`` (no face is the person) or ``reference_face_ambiguous`` (two faces are too close to
  call);
- two pairs may not choose the same face (``reference_face_ambiguous``);
- a reference in which the matcher finds no face is ``invalid_image`` naming the reference (Rekognition answers a
  target without a face the same way, so the message names both for the first pair); a target whose faces the
  matcher lists but none of which it scores is ``no_face_detected``.

How a provider is given the chosen faces is its registry entry's ``face_choice`` (:data:`NATIVE`,
:data:`DETECT_CROP`, :data:`ISOLATE_COMPOSITE`); each chosen face records it as its ``method``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faceswap.errors import InvalidImage, NoFaceDetected, ReferenceFaceAmbiguous, ReferenceFaceNotFound
from faceswap.images import MATCHER_MIN_SIDE

if TYPE_CHECKING:
    from faceswap.images import PreparedImage
    from faceswap.ports import FaceMatcher

Box = tuple[int, int, int, int]
"""A face's box ``(left, top, right, bottom)`` in pixels of the image it was found in (right and bottom
exclusive)."""

NATIVE = "native"
"""The provider takes the chosen face's box itself (the self-hosted engine)."""
DETECT_CROP = "detect-crop"
"""The provider's own detect step returns a crop per face; the crops are scored against the reference (CRUN)."""
ISOLATE_COMPOSITE = "isolate-composite"
"""The target is cropped around the chosen face (other faces masked), the crop swapped as a one-face task, and the
swapped crop composited back over that face only (providers without face ids)."""

DEFAULT_THRESHOLD = 80.0
"""Default least similarity (0-100) of a match: CompareFaces' own default ``SimilarityThreshold``
(https://docs.aws.amazon.com/rekognition/latest/APIReference/API_CompareFaces.html)."""
DEFAULT_MARGIN = 10.0
"""Default least lead (similarity points) of a match over the runner-up face."""


class ReferenceWithoutFace(Exception):
    """The matcher found no face in a reference image, or (Rekognition cannot say which) in the target image: raised
    by :class:`faceswap.ports.FaceMatcher` adapters."""


@dataclass(frozen=True)
class FaceScore:
    """One face of the target as the matcher scored it: its ``box`` (pixels of the target) and ``similarity`` to
    the reference's face (0-100)."""

    box: Box
    similarity: float


@dataclass(frozen=True)
class ChosenFace:
    """The face of the target chosen for one pair of a face map.

    Attributes
    ----------
    pair
        The pair's index in the face map (0-based).
    box
        The face's box in pixels of the target image as the provider received it (see ``size``).
    size
        ``(width, height)`` of that image in pixels.
    similarity
        The face's similarity to the reference (0-100).
    runner_up
        The next best face's similarity, or ``None`` when the target has one face.
    method
        How the provider was given the face (:data:`NATIVE`, :data:`DETECT_CROP`, :data:`ISOLATE_COMPOSITE`).
    others
        The boxes of the target's other faces (kept out of the way by isolate and composite).
    """

    pair: int
    box: Box
    size: tuple[int, int]
    similarity: float
    runner_up: float | None
    method: str
    others: tuple[Box, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The choice as stored on the job row, shown by ``GET /jobs/{id}`` and published in "Job Succeeded"."""
        return {
            "pair": self.pair,
            "box": list(self.box),
            "image_size": list(self.size),
            "similarity": round(self.similarity, 2),
            "runner_up": None if self.runner_up is None else round(self.runner_up, 2),
            "method": self.method,
            "others": [list(box) for box in self.others],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChosenFace:
        """Inverse of :meth:`as_dict`."""
        width, height = (int(v) for v in data["image_size"])
        runner_up = data.get("runner_up")
        return cls(
            pair=int(data["pair"]),
            box=_box(data["box"]),
            size=(width, height),
            similarity=float(data["similarity"]),
            runner_up=None if runner_up is None else float(runner_up),
            method=str(data["method"]),
            others=tuple(_box(box) for box in data.get("others") or ()),
        )


@dataclass(kw_only=True)
class FaceChooser:
    """Chooses the target's face for each reference (the rules are in the module's docstring).

    Attributes
    ----------
    matcher
        Scores the target's faces against a reference.
    threshold
        Least similarity of a match (0-100).
    margin
        Least lead of a match over the runner-up, in similarity points.
    """

    matcher: FaceMatcher
    threshold: float = DEFAULT_THRESHOLD
    margin: float = DEFAULT_MARGIN

    def choose(self, target: PreparedImage, references: Sequence[PreparedImage], *, method: str) -> list[ChosenFace]:
        """The face of ``target`` for each of ``references``, in order.

        Parameters
        ----------
        target
            The target image exactly as the provider will receive it (JPEG or PNG for the matcher: see
            :func:`faceswap.images.for_matcher`).
        references
            One prepared reference image per pair.
        method
            The provider's ``face_choice``, recorded on each choice.

        Raises
        ------
        InvalidImage
            A reference (named by its pair) or the target is under :data:`MATCHER_MIN_SIDE` pixels a side, or the
            matcher finds no face in a reference.
        NoFaceDetected
            The target has no face.
        ReferenceFaceNotFound, ReferenceFaceAmbiguous
            As the module's docstring says.
        faceswap.errors.StoreUnavailable
            The matcher's service failed (throttled, down): deliver the job's message again.
        """
        _check_size(target, "target image")
        chosen: list[ChosenFace] = []
        for pair, reference in enumerate(references):
            name = f"reference of face_map[{pair}]"
            _check_size(reference, name)
            try:
                scores = sorted(self.matcher.compare(reference, target), key=lambda s: s.similarity, reverse=True)
            except ReferenceWithoutFace:
                where = f"the {name}" if chosen else f"the {name} or in the target image"
                raise InvalidImage(f"The face matcher found no face in {where}.") from None
            if not scores:
                raise NoFaceDetected("The target image has no face the face matcher can find.")
            best = scores[0]
            runner_up = scores[1].similarity if len(scores) > 1 else None
            if best.similarity < self.threshold:
                raise ReferenceFaceNotFound(
                    f"No face of the target image is the person in the {name}: the best similarity is "
                    f"{best.similarity:.1f}, under the threshold of {self.threshold:g}."
                )
            if runner_up is not None and best.similarity - runner_up < self.margin:
                raise ReferenceFaceAmbiguous(
                    f"Two faces of the target image match the {name} too closely to choose (similarities "
                    f"{best.similarity:.1f} and {runner_up:.1f}; a match needs a lead of {self.margin:g})."
                )
            for earlier in chosen:
                if _overlap(earlier.box, best.box) > 0.5:
                    raise ReferenceFaceAmbiguous(
                        f"The references of face_map[{earlier.pair}] and face_map[{pair}] choose the same face of "
                        "the target image."
                    )
            size = (target.width, target.height)
            others = tuple(score.box for score in scores[1:])
            chosen.append(ChosenFace(pair, best.box, size, best.similarity, runner_up, method, others))
        return chosen

    def choose_crops(self, crops: Sequence[bytes], references: Sequence[PreparedImage]) -> list[int]:
        """For each reference, the index of the provider's face crop that is its person (:data:`DETECT_CROP`). The
        crops are put side by side in one image (:func:`faceswap.images.tile_crops`), so each reference takes one
        comparison however many faces the provider found; a crop scores its best face's similarity (0 if the
        matcher finds none in it), and the same threshold, margin and one-face-per-pair rules apply.

        Raises
        ------
        ReferenceFaceNotFound, ReferenceFaceAmbiguous
            As :meth:`choose`, among the crops.
        InvalidImage
            A crop is not a readable image.
        faceswap.errors.StoreUnavailable
            The matcher's service failed.
        """
        from faceswap.images import tile_crops

        sheet, tiles = tile_crops(crops)
        chosen: list[int] = []
        for pair, reference in enumerate(references):
            name = f"reference of face_map[{pair}]"
            try:
                found = self.matcher.compare(reference, sheet)
            except ReferenceWithoutFace:  # the reference's face was found before: none on the sheet
                found = []
            scores = [max((f.similarity for f in found if _centre_in(f.box, tile)), default=0.0) for tile in tiles]
            index = _pick(scores, self.threshold, self.margin, name)
            if index in chosen:
                raise ReferenceFaceAmbiguous(
                    f"The references of face_map[{chosen.index(index)}] and face_map[{pair}] choose the same face."
                )
            chosen.append(index)
        return chosen


def _pick(scores: Sequence[float], threshold: float, margin: float, name: str) -> int:
    """The index of the best of ``scores`` if it passes ``threshold`` and leads the runner-up by ``margin``."""
    ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    if not ranked or scores[ranked[0]] < threshold:
        best = scores[ranked[0]] if ranked else 0.0
        raise ReferenceFaceNotFound(
            f"No face the provider found is the person in the {name}: the best similarity is {best:.1f}, under the "
            f"threshold of {threshold:g}."
        )
    if len(ranked) > 1 and scores[ranked[0]] - scores[ranked[1]] < margin:
        raise ReferenceFaceAmbiguous(
            f"Two faces the provider found match the {name} too closely to choose (similarities "
            f"{scores[ranked[0]]:.1f} and {scores[ranked[1]]:.1f}; a match needs a lead of {margin:g})."
        )
    return ranked[0]


def _box(values: Any) -> Box:
    left, top, right, bottom = (int(v) for v in values)
    return left, top, right, bottom


def _centre_in(box: Box, tile: Box) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return tile[0] <= x < tile[2] and tile[1] <= y < tile[3]


def _check_size(image: PreparedImage, name: str) -> None:
    if min(image.width, image.height) < MATCHER_MIN_SIDE:
        raise InvalidImage(
            f"The {name} is {image.width}x{image.height} pixels; choosing a face by a reference needs at least "
            f"{MATCHER_MIN_SIDE} on each side."
        )


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0..1)."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
