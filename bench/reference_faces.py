"""Identity carried by face maps, per provider, on the local stack.

For every provider, one job puts Biden's face onto the face of ``obama_and_biden_side_by_side.jpg`` chosen by a
reference photo of Obama (``obama.jpg`` mirrored, so its pixels differ from the target's), then measures with dlib's
face embeddings, on the result: the chosen face's distance to the swap face and to the face it replaced, and the other
face's distance to its own original (under 0.6 is usually the same person). Prints a table, and ``--json`` writes it.

Usage::

    .venv/bin/python bench/reference_faces.py [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from faceswap.aws.dynamodb import job_from_item
from faceswap_engine import decode_image, detect_faces, face_descriptor, face_distance
from faceswap_local.app import ROOT, LocalStack

FACES = ROOT.parent / "shared" / "faces"
PAIR = "obama_and_biden_side_by_side.jpg"
PROVIDERS = ("selfhosted", "piapi", "ailabapi", "crun", "aiphotocraft")


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def measure() -> list[dict[str, Any]]:
    """One face-map job per provider on a fresh local stack; the identity figures of each."""
    stack = LocalStack().start()
    try:
        info, s3, ddb = stack.info(), stack.client("s3"), stack.client("dynamodb")
        bucket = info["input_bucket"]
        s3.put_object(Bucket=bucket, Key="faces/biden.jpg", Body=(FACES / "biden.jpg").read_bytes())
        s3.put_object(
            Bucket=bucket, Key="references/obama.jpg", Body=_jpeg(ImageOps.mirror(Image.open(FACES / "obama.jpg")))
        )
        started = {}
        for provider in PROVIDERS:
            key = f"photos/{provider}.jpg"
            s3.put_object(Bucket=bucket, Key=key, Body=(FACES / PAIR).read_bytes())
            manifest = {
                "target_image": key,
                "swap_image": "faces/biden.jpg",
                "reference": "references/obama.jpg",
                "provider": provider,
            }
            started[key] = time.monotonic()
            s3.put_object(Bucket=bucket, Key=f"jobs/reference-{provider}.json", Body=json.dumps(manifest).encode())
        deadline = time.monotonic() + 180
        jobs: dict[str, Any] = {}
        while time.monotonic() < deadline and len(jobs) < len(PROVIDERS):
            for item in ddb.scan(TableName=info["jobs_table"], ConsistentRead=True)["Items"]:
                job = job_from_item(item)
                if job.terminal and job.target_image.key in started:
                    jobs.setdefault(job.target_image.key, job)
            time.sleep(0.5)
        target = decode_image((FACES / PAIR).read_bytes())
        swap = face_descriptor(decode_image((FACES / "biden.jpg").read_bytes()))
        rows = []
        for provider in PROVIDERS:
            job = jobs.get(f"photos/{provider}.jpg")
            row: dict[str, Any] = {"provider": provider, "state": str(job.state) if job else "no job"}
            if job is not None and job.result:
                result = decode_image(s3.get_object(Bucket=job.result["bucket"], Key=job.result["key"])["Body"].read())
                (chosen,) = job.chosen_faces
                faces = detect_faces(result)
                index = min(range(len(faces)), key=lambda i: abs(faces[i].box[0] - chosen["box"][0]))
                other = 1 - index
                row.update(
                    method=chosen["method"],
                    similarity=chosen["similarity"],
                    runner_up=chosen["runner_up"],
                    chosen_to_swap=round(face_distance(face_descriptor(result, index), swap), 3),
                    chosen_to_original=round(
                        face_distance(face_descriptor(result, index), face_descriptor(target, index)), 3
                    ),
                    other_to_own=round(
                        face_distance(face_descriptor(result, other), face_descriptor(target, other)), 3
                    ),
                    tasks=len(job.attempts),
                )
            rows.append(row)
        return rows
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the table (and write ``--json``); 1 if any job did not succeed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the functions' log lines
        rows = measure()
    columns = (
        "provider",
        "state",
        "method",
        "similarity",
        "runner_up",
        "chosen_to_swap",
        "chosen_to_original",
        "other_to_own",
        "tasks",
    )
    print("  ".join(f"{c:>18}" for c in columns))
    for row in rows:
        print("  ".join(f"{row.get(c, '-')!s:>18}" for c in columns))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["state"] == "SUCCEEDED" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
