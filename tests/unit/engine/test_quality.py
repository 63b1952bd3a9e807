"""The quality benchmark's pairs, held to what a swap people would keep needs: the identity moves to the swap
person on every pair, an occluder over the swap face is not carried over, the blend adds no visible seam, and poses
too far apart are refused rather than mangled."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from faceswap_engine import PoseMismatch, detect_faces, swap_faces
from faceswap_engine import swap as swap_module
from faceswap_engine.quality import Pair, benchmark_pairs, identity, occluder_pixels, seam_score

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
