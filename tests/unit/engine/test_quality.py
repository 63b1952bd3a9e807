"""The quality benchmark's pairs, held to what a swap people would keep needs: the identity moves to the swap
person on every pair, an occluder over the swap face is not carried over, the blend adds no visible seam, and poses
too far apart are refused rather than mangled."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap_engine import PoseMismatch, detect_faces, swap_faces
from faceswap_engine import swap as swap_module
from faceswap_engine.quality import (
    OCCLUDER_BGR,
    OCCLUDER_TOLERANCE,
    Pair,
    benchmark_pairs,
    identity,
    occluder_pixels,
    seam_score,
    with_occluder,
)

FACES_DIR = Path(os.environ.get("FACES_DIR") or Path(__file__).resolve().parents[3].parent / "shared" / "faces")
PAIRS = benchmark_pairs(FACES_DIR)


@pytest.fixture(scope="module")
def results() -> dict[str, np.ndarray]:
    return {pair.name: swap_faces(pair.target, pair.swap) for pair in PAIRS}


@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_the_result_is_nearer_the_swap_person_than_the_face_it_replaced(
    results: dict[str, np.ndarray], pair: Pair
) -> None:
    to_target, to_swap, margin = identity(results[pair.name], pair)
    print(f"{pair.name}: to target {to_target:.3f}, to swap {to_swap:.3f}, margin {margin:.3f}")
    assert margin > 0.1, (to_target, to_swap)
    assert to_swap < 0.6


@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_the_blend_adds_no_visible_seam(results: dict[str, np.ndarray], pair: Pair) -> None:
    assert seam_score(results[pair.name], pair.target) < 0.5


def test_an_occluder_over_the_swap_face_is_not_carried_over(results: dict[str, np.ndarray]) -> None:
    (occluded,) = [pair for pair in PAIRS if pair.occluded]
    assert occluder_pixels(results[occluded.name], occluded.target) == 0


def test_the_occluder_measure_sees_an_occluder_pasted_onto_the_chin() -> None:
    (occluded,) = [pair for pair in PAIRS if pair.occluded]
    face = max(detect_faces(occluded.target), key=lambda f: f.area)
    pasted = occluded.target.copy()
    x, y = face.landmarks[8]
    pasted[y - 30 : y - 5, x - 40 : x + 40] = (58, 52, 48)
    assert occluder_pixels(pasted, occluded.target) > 1000


def test_faces_turned_too_differently_are_refused_not_mangled(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = PAIRS[0]
    monkeypatch.setattr(swap_module, "MAX_YAW_DIFFERENCE", -1.0)
    with pytest.raises(PoseMismatch) as refused:
        swap_faces(pair.target, pair.swap)
    assert refused.value.code == "pose_mismatch" and "degrees" in str(refused.value)


def test_yaw_is_near_zero_for_the_frontal_portraits_and_flips_with_a_mirror() -> None:
    def yaw(image: np.ndarray) -> float:
        return swap_module._yaw(max(detect_faces(image), key=lambda f: f.area).landmarks.astype(np.float32))

    obama, mirrored = PAIRS[0].swap, PAIRS[2].swap  # obama.jpg, and obama.jpg mirrored
    assert abs(yaw(obama)) < 15 and abs(yaw(PAIRS[0].target)) < 15
    assert yaw(mirrored) == pytest.approx(-yaw(obama), abs=3)


def _inside(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def test_an_open_mouth_onto_a_closed_one_gives_closed_lips_not_streaks_of_teeth(
    results: dict[str, np.ndarray],
) -> None:
    pair = PAIRS[0]  # Obama smiling with his teeth showing, onto Biden's closed mouth
    face = max(detect_faces(pair.target), key=lambda f: f.area)
    lips = _inside(pair.target, face.landmarks[48:60])
    lab = cv2.cvtColor(results[pair.name], cv2.COLOR_BGR2LAB).astype(np.float32)
    chroma = np.hypot(lab[:, :, 1] - 128, lab[:, :, 2] - 128)
    teeth = (lab[:, :, 0] > 150) & (chroma < 12) & lips  # bright and grey: enamel (OpenCV L* is 0-255)
    assert teeth.sum() < 0.02 * lips.sum(), f"{teeth.sum()} teeth-like pixels in {lips.sum()} of lips"


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))


def test_the_eyes_keep_the_targets_gaze(results: dict[str, np.ndarray]) -> None:
    for pair in PAIRS[:3]:
        face = max(detect_faces(pair.target), key=lambda f: f.area)
        for eye in (face.landmarks[36:42], face.landmarks[42:48]):
            x, y, w, h = cv2.boundingRect(eye.astype(np.int32))

            def grey(image: np.ndarray, x: int = x, y: int = y, w: int = w, h: int = h) -> np.ndarray:
                return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[y : y + h, x : x + w].astype(np.float32)

            # the target's iris and whites, in place (the blend may shift their brightness, not their pattern)
            assert _ncc(grey(results[pair.name]), grey(pair.target)) > 0.65, pair.name


def test_what_covers_the_targets_face_stays_in_front() -> None:
    pair = PAIRS[0]
    covered = with_occluder(pair.target)  # a microphone in front of Biden's chin
    result = swap_faces(covered, pair.swap)
    painted = np.abs(covered.astype(np.int16) - np.int16(OCCLUDER_BGR)).max(axis=2) <= 3
    kept = np.abs(result.astype(np.int16) - np.int16(OCCLUDER_BGR)).max(axis=2) <= OCCLUDER_TOLERANCE
    assert (kept & painted).sum() > 0.9 * painted.sum()


def test_a_face_put_into_a_black_and_white_photo_turns_grey_too() -> None:
    pair = PAIRS[0]
    grey = cv2.cvtColor(cv2.cvtColor(pair.target, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    result = swap_faces(grey, pair.swap)
    face = max(detect_faces(grey), key=lambda f: f.area)
    lab = cv2.cvtColor(result, cv2.COLOR_BGR2LAB).astype(np.float32)
    chroma = np.hypot(lab[:, :, 1] - 128, lab[:, :, 2] - 128)[_inside(result, cv2.convexHull(face.landmarks)[:, 0])]
    assert np.percentile(chroma, 99) < 6, np.percentile(chroma, 99)
