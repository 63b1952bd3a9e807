"""Measures of a swap's quality, for the quality benchmark (``bench/engine_quality.py``) and the engine's tests.

- **Identity margin**: ``d(result, target) - d(result, swap)``, dlib embedding distances of the swapped face in the
  result to the face it replaced and to the swap face. Positive: the result is nearer the swap person.
- **Seam score**: along the border of the replaced region (the target face's landmark hull), the mean gradient of
  the result's lightness (CIE L*, 0-100 per pixel) in excess of the target's own gradient there. 0: no edge was added.
- **Occluder pixels**: pixels of the target's chin (its face region below the lower lip, where the occluder drawn over
  the swap face's chin lands) that the result paints in the occluder's colour when the target had none there (an
  object covering the swap face carried over). The region leaves out the brows and eyes, whose dark hair would
  otherwise count.
- **Colour flicker** (video): for each frame, the mean CIE Lab colour of the replaced face (the hull of the input
  frame's largest face) in the result minus in the input; the mean ΔE (CIE76) between consecutive frames' differences.
  0: the swapped face's colour changes only as the video's own does.

Pairs (:func:`benchmark_pairs`) are built from the shared photos and transformations of them: mirrored, recoloured,
a drawn occluder over the swap face's chin, a smiling face onto a neutral one and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .detect import Face, detect_faces
from .identity import face_descriptor, face_distance
from .imageio import decode_image

__all__ = [
    "OCCLUDER_BGR",
    "Pair",
    "benchmark_pairs",
    "colour_flicker",
    "identity",
    "occluder_pixels",
    "replaced_face",
    "seam_score",
]

OCCLUDER_BGR = (58, 52, 48)
"""The drawn occluder's colour (a dark, slightly warm grey, like a microphone's foam)."""
OCCLUDER_TOLERANCE = 18
"""Largest per-channel difference for a pixel to count as the occluder's colour."""


@dataclass(frozen=True)
class Pair:
    """One benchmark pair: ``swap``'s face goes onto the largest face of ``target`` (BGR ``uint8`` arrays)."""

    name: str
    target: np.ndarray
    swap: np.ndarray
    occluded: bool = False


def benchmark_pairs(faces_dir: Path) -> list[Pair]:
    """The benchmark's pairs from ``faces_dir`` (``obama.jpg``, ``biden.jpg``, ``obama_and_biden_side_by_side.jpg``).

    Obama smiles with his teeth showing and Biden's mouth is closed, so the first two pairs are also the open mouth
    onto a closed one and back.
    """
    obama = decode_image((faces_dir / "obama.jpg").read_bytes())
    biden = decode_image((faces_dir / "biden.jpg").read_bytes())
    pair = decode_image((faces_dir / "obama_and_biden_side_by_side.jpg").read_bytes())
    return [
        Pair("obama onto biden (smile onto closed mouth)", biden, obama),
        Pair("biden onto obama (closed mouth onto smile)", obama, biden),
        Pair("obama mirrored onto biden", biden, np.ascontiguousarray(obama[:, ::-1])),
        Pair("obama recoloured (warm, dim) onto biden", biden, recoloured(obama)),
        Pair("obama onto the larger face (biden) of the pair photo", pair, obama),
        Pair("obama with an occluder over the chin onto biden", biden, with_occluder(obama), occluded=True),
    ]


def recoloured(image: np.ndarray) -> np.ndarray:
    """``image`` under warmer, dimmer light (a different camera and lamp)."""
    out = image.astype(np.float32) * np.float32((0.78, 0.9, 1.12)) * 0.85
    return np.clip(out, 0, 255).astype(np.uint8)


def with_occluder(image: np.ndarray) -> np.ndarray:
    """``image`` with a microphone-like rounded bar in :data:`OCCLUDER_BGR` over its largest face's chin."""
    face = max(detect_faces(image), key=lambda f: f.area)
    jaw = face.landmarks[5:12]
    x0, x1 = int(jaw[:, 0].min()), int(jaw[:, 0].max())
    y0 = int(face.landmarks[57, 1] + 0.15 * (face.landmarks[8, 1] - face.landmarks[57, 1]))
    y1 = int(face.landmarks[8, 1] + 0.05 * (face.box[3] - face.box[1]))
    out = image.copy()
    radius = max(2, (y1 - y0) // 3)
    cv2.rectangle(out, (x0 + radius, y0), (x1 - radius, y1), OCCLUDER_BGR, -1)
    cv2.rectangle(out, (x0, y0 + radius), (x1, y1 - radius), OCCLUDER_BGR, -1)
    for cx, cy in ((x0 + radius, y0 + radius), (x1 - radius, y0 + radius), (x0 + radius, y1 - radius)):
        cv2.circle(out, (cx, cy), radius, OCCLUDER_BGR, -1)
    cv2.circle(out, (x1 - radius, y1 - radius), radius, OCCLUDER_BGR, -1)
    return out


def replaced_face(result: np.ndarray, target: np.ndarray) -> tuple[int, Face]:
    """The index (left to right) of the result's face at the target's largest face, and that target face."""
    chosen = max(detect_faces(target), key=lambda f: f.area)
    faces = detect_faces(result)
    if not faces:
        raise ValueError("the result has no face where the target had one: the swap destroyed it")
    index = min(range(len(faces)), key=lambda i: abs(faces[i].center_x - chosen.center_x))
    return index, chosen


def identity(result: np.ndarray, pair: Pair) -> tuple[float, float, float]:
    """``(d(result, target), d(result, swap), margin)`` for the replaced face (see the module docstring)."""
    index, chosen = replaced_face(result, pair.target)
    swapped = face_descriptor(result, index)
    to_target = face_distance(swapped, face_descriptor(pair.target, _index_of(pair.target, chosen)))
    swap_faces = detect_faces(pair.swap)
    largest = max(range(len(swap_faces)), key=lambda i: swap_faces[i].area)
    to_swap = face_distance(swapped, face_descriptor(pair.swap, largest))
    return to_target, to_swap, to_target - to_swap


def _index_of(image: np.ndarray, face: Face) -> int:
    faces = detect_faces(image)
    return min(range(len(faces)), key=lambda i: abs(faces[i].center_x - face.center_x))


def _hull_mask(shape: tuple[int, ...], face: Face) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(face.landmarks.astype(np.int32)), 255)
    return mask


def _border_band(shape: tuple[int, ...], face: Face) -> np.ndarray:
    """A 5-pixel band along a face's blend border (its landmark hull, eroded as the engine erodes its mask)."""
    mask = _hull_mask(shape, face)
    size = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
    k = max(3, int(0.03 * size)) | 1
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return (cv2.dilate(inner, np.ones((5, 5), np.uint8)) - cv2.erode(inner, np.ones((5, 5), np.uint8))) > 0


def _lightness_gradient(image: np.ndarray) -> np.ndarray:
    lightness = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0].astype(np.float32) * (100.0 / 255.0)
    gx, gy = cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) / 8.0


def seam_score(result: np.ndarray, target: np.ndarray) -> float:
    """Mean lightness gradient along the swapped face's blend border in ``result`` less the mean along the original
    face's border in ``target`` (each face's own outline: the engine may reshape the face), in L* per pixel; about 0
    when the blend added no edge, positive for a visible seam."""
    index, face = replaced_face(result, target)
    swapped = detect_faces(result)[index]
    on_result = _lightness_gradient(result)[_border_band(result.shape, swapped)]
    on_target = _lightness_gradient(target)[_border_band(target.shape, face)]
    return float(on_result.mean() - on_target.mean())


def occluder_pixels(result: np.ndarray, target: np.ndarray) -> int:
    """Pixels of the target's face region painted in :data:`OCCLUDER_BGR` by the swap (see the module docstring)."""
    _, face = replaced_face(result, target)
    region = _hull_mask(target.shape, face) > 0
    region[: int(face.landmarks[57, 1]), :] = False  # the chin, where the swap face's occluder lands
    colour = np.int16(OCCLUDER_BGR)

    def painted(image: np.ndarray) -> np.ndarray:
        return (np.abs(image.astype(np.int16) - colour).max(axis=2) <= OCCLUDER_TOLERANCE) & region

    return int((painted(result) & ~painted(target)).sum())


def colour_flicker(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """The colour flicker of a swapped video (see the module docstring), from ``(input frame, result frame)`` pairs
    (BGR ``uint8``, in order): ΔE (CIE76) per frame step. Frames whose input has no face break the sequence; fewer
    than two frames with a face: ``ValueError``."""
    steps: list[float] = []
    last: np.ndarray | None = None
    for source, result in frames:
        faces = detect_faces(source)
        if not faces:
            last = None
            continue
        mask = _hull_mask(source.shape, max(faces, key=lambda f: f.area)) > 0
        difference = _mean_lab(result, mask) - _mean_lab(source, mask)
        if last is not None:
            steps.append(float(np.linalg.norm(difference - last)))
        last = difference
    if not steps:
        raise ValueError("fewer than two consecutive frames with a face")
    return float(np.mean(steps))


def _mean_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean CIE Lab (L 0-100) of ``image``'s pixels under ``mask``."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    return np.asarray(lab[mask].mean(axis=0), dtype=np.float64)
