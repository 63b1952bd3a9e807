"""Quality of the self-hosted engine's swaps: identity margin, seam score and occluder pixels per benchmark pair.

The pairs and the measures are ``faceswap_engine.quality``'s (its docstring defines them). For each pair it also
writes the result into ``--out`` and a contact sheet (target | swap | result per pair) for the README.

Usage::

    PYTHONPATH=engine .venv/bin/python bench/engine_quality.py [--faces-dir DIR] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

from faceswap_engine import swap_faces  # noqa: E402
from faceswap_engine.quality import benchmark_pairs, identity, occluder_pixels, seam_score  # noqa: E402


def _tile(image: np.ndarray, height: int) -> np.ndarray:
    return cv2.resize(image, (max(1, round(image.shape[1] * height / image.shape[0])), height))


def around_face(image: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """``image`` cropped to its largest face (of ``like``'s, when given: the same place in a result) with a margin."""
    from faceswap_engine import detect_faces

    face = max(detect_faces(like if like is not None else image), key=lambda f: f.area)
    left, top, right, bottom = face.box
    w, h = right - left, bottom - top
    return image[max(0, top - h // 2) : bottom + h // 3, max(0, left - w // 2) : right + w // 2]


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], height: int = 260) -> np.ndarray:
    """Rows of tiles, each row labelled, on a white sheet."""
    gap, label = 10, 24
    tiled = [(name, [_tile(image, height) for image in images]) for name, images in rows]
    width = max(sum(t.shape[1] for t in tiles) + gap * (len(tiles) + 1) for _, tiles in tiled)
    sheet = np.full((len(tiled) * (height + label + gap) + gap, width, 3), 250, np.uint8)
    y = gap
    for name, tiles in tiled:
        cv2.putText(sheet, name, (gap, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        x = gap
        for tile in tiles:
            sheet[y + label : y + label + height, x : x + tile.shape[1]] = tile
            x += tile.shape[1] + gap
        y += height + label + gap
    return sheet


def main(argv: list[str] | None = None) -> int:
    """Run every pair, print the table; 1 if a pair has a negative identity margin or occluder pixels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces-dir", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "quality")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, sheet_rows = [], []
    for pair in benchmark_pairs(args.faces_dir):
        started = time.perf_counter()
        result = swap_faces(pair.target, pair.swap)
        seconds = time.perf_counter() - started
        to_target, to_swap, margin = identity(result, pair)
        row = {
            "pair": pair.name,
            "to_target": round(to_target, 3),
            "to_swap": round(to_swap, 3),
            "identity_margin": round(margin, 3),
            "seam": round(seam_score(result, pair.target), 2),
            "occluder_pixels": occluder_pixels(result, pair.target) if pair.occluded else None,
            "seconds": round(seconds, 3),
        }
        rows.append(row)
        sheet_rows.append(
            (pair.name, [around_face(pair.target), around_face(pair.swap), around_face(result, pair.target)])
        )
        cv2.imwrite(str(args.out / f"{len(rows)}.jpg"), result)
    cv2.imwrite(str(args.out / "contact_sheet.jpg"), contact_sheet(sheet_rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    header = f"{'pair':<50} {'to target':>9} {'to swap':>8} {'margin':>7} {'seam':>6} {'occluder px':>11} {'s':>6}"
    print(header)
    for row in rows:
        occluder = "-" if row["occluder_pixels"] is None else row["occluder_pixels"]
        print(
            f"{row['pair']:<50} {row['to_target']:>9} {row['to_swap']:>8} {row['identity_margin']:>7} "
            f"{row['seam']:>6} {occluder!s:>11} {row['seconds']:>6}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    bad = [r for r in rows if r["identity_margin"] <= 0 or (r["occluder_pixels"] or 0) > 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
