"""Seconds per face swap of the self-hosted engine on one CPU core.

Swaps the face of obama.jpg onto biden.jpg resized so its longest side is 512, 1024 and 2048 px (upscaled as
needed), and onto a close-up of Biden's face at 2048 px (the face about 1000 px across, the costliest case), and
reports the median of 5 timed runs after 1 warm-up, with OpenCV limited to one thread.

Usage::

    PYTHONPATH=engine python bench/engine_speed.py [--faces-dir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

from faceswap_engine import swap_faces  # noqa: E402

SIDES = (512, 1024, 2048)
RUNS = 5


def _resize_longest(image: cv2.typing.MatLike, side: int) -> cv2.typing.MatLike:
    h, w = image.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=interp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_faces = Path(os.environ.get("FACES_DIR") or REPO.parent / "shared" / "faces")
    parser.add_argument("--faces-dir", type=Path, default=default_faces, help="folder with obama.jpg and biden.jpg")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    swap = cv2.imread(str(args.faces_dir / "obama.jpg"))
    target_full = cv2.imread(str(args.faces_dir / "biden.jpg"))
    if swap is None or target_full is None:
        parser.error(f"cannot read obama.jpg / biden.jpg in {args.faces_dir}")

    from faceswap_engine import detect_faces

    face = max(detect_faces(target_full), key=lambda f: f.area)
    left, top, right, bottom = face.box
    half = (right - left) // 2
    close_up = target_full[max(0, top - half) : bottom + half, max(0, left - half) : right + half]

    results: dict[str, float] = {}
    print(f"{'target':>12}  {'median s/swap':>13}  {'min':>7}  {'max':>7}")
    cases = [(str(side), _resize_longest(target_full, side)) for side in SIDES]
    cases.append(("2048_close_up", _resize_longest(close_up, 2048)))  # the face fills the frame (about 1000 px)
    for name, target in cases:
        swap_faces(target, swap)  # warm-up (also loads the models)
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            swap_faces(target, swap)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[f"engine_swap_seconds_{name}px" if name.isdigit() else f"engine_swap_seconds_{name}"] = round(med, 4)
        label = f"{target.shape[1]}x{target.shape[0]}" + (" face" if not name.isdigit() else "")
        print(f"{label:>12}  {med:13.3f}  {min(times):7.3f}  {max(times):7.3f}")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
