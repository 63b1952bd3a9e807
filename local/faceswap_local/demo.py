"""``make demo``: the real handlers end to end on the local stack, on real photos, with a contact sheet.

Default run: ``faces/obama.jpg`` + ``incoming/obama/biden.jpg`` (face library), ``faces/biden.jpg`` +
``incoming/biden/obama.jpg``, and a manifest job swapping Obama's face onto the right-hand face (index 1) of
``obama_and_biden_side_by_side.jpg``, and the same photo with Obama's face put onto Biden's, the face chosen by a
reference photo of Biden (the contact sheet marks the chosen face), and a video job: a 2-second clip with sound made
here from ``biden.jpg`` (:mod:`faceswap_local.clips`), uploaded as ``incoming/obama/clip.mp4`` (its before and after
frames side by side on the contact sheet). With ``--face`` and ``--target``: one manifest job on any pair, the target an
image or a video (MP4, MOV, WebM, by its content); ``--reference``: the face replaced is the person in that photo.
An input the demo cannot use is refused with a one-line reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from faceswap import media
from faceswap.aws.dynamodb import job_from_item
from faceswap.model import Job, parse_time
from faceswap_local.app import ROOT, LocalStack
from faceswap_local.clips import make_clip

FACES = ROOT.parent / "shared" / "faces"
LOG_FILE = Path(os.environ.get("FACESWAP_LOCAL_STATE_DIR") or ROOT / ".local") / "logs" / "demo.log"
_CONSOLE: TextIO = sys.__stdout__ or sys.stderr
WAIT_SECONDS = 120


@dataclass
class DemoJob:
    """One job of the demo: what was uploaded, and what came of it."""

    label: str
    target_key: str
    target: Path
    face: Path
    uploaded_at: float = 0.0
    job: Job | None = None
    local_file: Path | None = None
    reference: Path | None = None
    video: bool = False


def run(
    *, face: Path | None, target: Path | None, provider: str | None, out: Path, reference: Path | None = None
) -> int:
    """Run the demo; returns the process exit code (0 only if every job succeeded).

    The functions' structured logs go to ``.local/logs/demo.log`` (they are written to stdout, as on Lambda,
    so stdout is pointed there while the stack runs); the demo's own output goes to the terminal.
    """
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("w") as log, contextlib.redirect_stdout(log):
        return _run(face=face, target=target, provider=provider, out=out, reference=reference)


def say(*parts: object) -> None:
    """Print to the terminal (stdout itself carries the functions' logs while the demo runs)."""
    print(*parts, file=_CONSOLE, flush=True)


def _run(*, face: Path | None, target: Path | None, provider: str | None, out: Path, reference: Path | None) -> int:
    started = time.monotonic()
    say("Starting the local stack (moto server, resources from template.yaml, engine, emulators)…")
    stack = LocalStack().start()
    try:
        info = stack.info()
        say(
            f"  up in {time.monotonic() - started:.1f} s: inputs s3://{info['input_bucket']}, "
            f"results s3://{info['results_bucket']}, API {info['api_url']}"
        )
        s3 = stack.client("s3")
        jobs = _custom_jobs(s3, info, face, target, provider, reference) if face and target else _default_jobs(s3, info)
        _follow(stack, info, jobs)
        out.mkdir(parents=True, exist_ok=True)
        _download(s3, jobs, out)
        sheet = _contact_sheet(jobs, out / "contact_sheet.png")
        _print_table(jobs)
        _print_identity(jobs)
        say(f"\nContact sheet: {sheet}")
    finally:
        stack.stop()
    succeeded = sum(1 for j in jobs if j.job is not None and j.job.state == "SUCCEEDED")
    say(f"{succeeded}/{len(jobs)} jobs succeeded in {time.monotonic() - started:.1f} s; local stack stopped.")
    return 0 if succeeded == len(jobs) else 1


def _default_jobs(s3: Any, info: dict[str, str]) -> list[DemoJob]:
    bucket = info["input_bucket"]
    for name in ("obama", "biden"):
        s3.put_object(Bucket=bucket, Key=f"faces/{name}.jpg", Body=(FACES / f"{name}.jpg").read_bytes())
    jobs = [
        DemoJob("obama onto biden", "incoming/obama/biden.jpg", FACES / "biden.jpg", FACES / "obama.jpg"),
        DemoJob("biden onto obama", "incoming/biden/obama.jpg", FACES / "obama.jpg", FACES / "biden.jpg"),
        DemoJob(
            "obama onto face 1 of side-by-side",
            "photos/obama_and_biden_side_by_side.jpg",
            FACES / "obama_and_biden_side_by_side.jpg",
            FACES / "obama.jpg",
        ),
    ]
    jobs.append(
        DemoJob(
            "obama onto biden, chosen by reference",
            "photos/reference/obama_and_biden_side_by_side.jpg",
            FACES / "obama_and_biden_side_by_side.jpg",
            FACES / "obama.jpg",
            reference=FACES / "biden.jpg",
        )
    )
    clip = make_clip(
        LOG_FILE.parent / "demo-clip.mp4",
        photo=(FACES / "biden.jpg").read_bytes(),
        width=480,
        height=360,
        fps=12,
        seconds=2.0,
    )
    jobs.append(DemoJob("obama onto a clip of biden", "incoming/obama/clip.mp4", clip, FACES / "obama.jpg", video=True))
    for job in jobs:
        job.uploaded_at = time.time()
        s3.put_object(Bucket=bucket, Key=job.target_key, Body=job.target.read_bytes())
    by_reference = {
        "target_image": {"s3_key": jobs[3].target_key},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        "reference": {"s3_key": "faces/biden.jpg"},
        "result_key": "results/jobs/chosen-by-reference.jpg",
    }
    s3.put_object(Bucket=bucket, Key="jobs/chosen-by-reference.json", Body=json.dumps(by_reference).encode())
    manifest = {
        "target_image": {"s3_key": jobs[2].target_key},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        "task": "multi-face-swap",
        "options": {"swap_faces_index": "0", "target_faces_index": "1"},
        "result_key": "results/jobs/side-by-side.jpg",
    }
    s3.put_object(Bucket=bucket, Key="jobs/side-by-side.json", Body=json.dumps(manifest).encode())
    return jobs


def _custom_jobs(
    s3: Any, info: dict[str, str], face: Path, target: Path, provider: str | None, reference: Path | None
) -> list[DemoJob]:
    bucket = info["input_bucket"]
    face_key, target_key = f"faces/{face.name}", f"photos/{target.name}"
    s3.put_object(Bucket=bucket, Key=face_key, Body=face.read_bytes())
    label = f"{face.stem} onto {target.stem}" + (f", the face of {reference.stem}" if reference else "")
    video = _is_video(target)
    job = DemoJob(label, target_key, target, face, uploaded_at=time.time(), reference=reference, video=video)
    s3.put_object(Bucket=bucket, Key=target_key, Body=target.read_bytes())
    manifest: dict[str, Any] = {
        "target_video" if video else "target_image": {"s3_key": target_key},
        "swap_image": {"s3_key": face_key},
        "provider": provider or "selfhosted",
        "result_key": f"results/demo/{target.stem}{'.mp4' if video else target.suffix.lower()}",
    }
    if reference is not None:
        s3.put_object(Bucket=bucket, Key=f"references/{reference.name}", Body=reference.read_bytes())
        manifest["reference"] = {"s3_key": f"references/{reference.name}"}
    s3.put_object(Bucket=bucket, Key="jobs/demo.json", Body=json.dumps(manifest).encode())
    return [job]


def _follow(stack: LocalStack, info: dict[str, str], jobs: list[DemoJob]) -> None:
    ddb = stack.client("dynamodb")
    start = min(j.uploaded_at for j in jobs)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        rows = [job_from_item(i) for i in ddb.scan(TableName=info["jobs_table"], ConsistentRead=True)["Items"]]
        for demo_job in jobs:
            demo_job.job = next((r for r in rows if r.target.key == demo_job.target_key), demo_job.job)
            job = demo_job.job
            if job is not None and seen.get(job.job_id) != job.state:
                seen[job.job_id] = job.state
                say(
                    f"  [{time.time() - start:5.1f} s] {job.job_id[:8]}  {demo_job.label:<36} {job.state}"
                    + (f" ({job.error['code']})" if job.error and job.terminal else "")
                )
        if all(j.job is not None and j.job.terminal for j in jobs):
            return
        time.sleep(0.2)
    say(f"  gave up waiting after {WAIT_SECONDS} s")


def _download(s3: Any, jobs: list[DemoJob], out: Path) -> None:
    for demo_job in jobs:
        job = demo_job.job
        if job is None or job.result is None:
            continue
        suffix = {"image/png": ".png", "image/webp": ".webp", "video/mp4": ".mp4"}.get(
            job.result["content_type"], ".jpg"
        )
        path = out / f"{demo_job.label.replace(' ', '_')}{suffix}"
        path.write_bytes(s3.get_object(Bucket=job.result["bucket"], Key=job.result["key"])["Body"].read())
        demo_job.local_file = path


def _is_video(path: Path) -> bool:
    with path.open("rb") as f:
        return media.sniff(f.read(media.SNIFF_BYTES)) is not None


def _picture(path: Path) -> Image.Image:
    """The image at ``path``, or a video's middle frame."""
    if not _is_video(path):
        return Image.open(path)
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return frames[len(frames) // 2]


def _tile(image: Image.Image, height: int) -> Image.Image:
    image = ImageOps.exif_transpose(image).convert("RGB")
    return image.resize((max(1, round(image.width * height / image.height)), height))


def _contact_sheet(jobs: list[DemoJob], path: Path, height: int = 320) -> Path:
    """Rows of target | swap face | result (| reference), labelled; a face chosen by a reference is outlined on the
    result; written as PNG."""
    rows = []
    for demo_job in jobs:
        tiles = [_tile(_picture(demo_job.target), height), _tile(Image.open(demo_job.face), height)]
        if demo_job.local_file is not None:
            tiles.append(_tile(_picture(demo_job.local_file), height))
            for chosen in demo_job.job.chosen_faces if demo_job.job else ():
                scale = height / chosen["image_size"][1]
                box = [round(v * scale) for v in chosen["box"]]
                ImageDraw.Draw(tiles[-1]).rectangle(box, outline=(255, 200, 0), width=3)
        else:
            tiles.append(Image.new("RGB", (height, height), (60, 0, 0)))
        if demo_job.reference is not None:
            tiles.append(_tile(Image.open(demo_job.reference), height))
        rows.append((demo_job, tiles))
    gap, label_h = 12, 22
    width = max(sum(t.width for t in tiles) + gap * (len(tiles) + 1) for _, tiles in rows)
    sheet = Image.new("RGB", (width, len(rows) * (height + label_h + gap) + gap), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    y = gap
    for demo_job, tiles in rows:
        x = gap
        state = demo_job.job.state if demo_job.job else "no job"
        captions = ("target (before)", "swap face", f"result ({state})", "reference: the face replaced")
        if demo_job.video:
            captions = ("video, middle frame (before)", "swap face", f"video, middle frame ({state})")
        for tile, caption in zip(tiles, captions[: len(tiles)], strict=True):
            draw.text((x, y), caption, fill=(20, 20, 20))
            sheet.paste(tile, (x, y + label_h))
            x += tile.width + gap
        y += height + label_h + gap
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _seconds(start: str | float | None, end: str | None) -> str:
    if not start or not end:
        return "-"
    begin = datetime.fromtimestamp(start, UTC) if isinstance(start, float) else parse_time(start)
    return f"{(parse_time(end) - begin).total_seconds():.2f}"


def _print_table(jobs: list[DemoJob]) -> None:
    """Job id, provider, state, seconds per stage, result S3 URI and local file, one row per job.

    Stages: ``queue`` upload → job row (S3 notification, SQS, submit function), ``submit`` row → provider task
    created (image checks, create call), ``provider`` task created → result kept (the swap, the webhook, the
    copy into the results bucket), ``total`` upload → result kept.
    """
    header = ("job id", "provider", "state", "queue s", "submit s", "provider s", "total s", "result", "local file")
    rows = []
    for demo_job in jobs:
        job = demo_job.job
        if job is None:
            rows.append(("-", "-", "no job", *("-",) * 6))
            continue
        result = (
            f"s3://{job.result['bucket']}/{job.result['key']}" if job.result else (job.error or {}).get("code", "-")
        )
        rows.append(
            (
                job.job_id,
                job.provider,
                str(job.state),
                _seconds(demo_job.uploaded_at, job.created_at),
                _seconds(job.created_at, job.submitted_at),
                _seconds(job.submitted_at, job.finished_at),
                _seconds(demo_job.uploaded_at, job.finished_at),
                result,
                str(
                    demo_job.local_file.relative_to(Path.cwd())
                    if demo_job.local_file and demo_job.local_file.is_relative_to(Path.cwd())
                    else demo_job.local_file or "-"
                ),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    say()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        say("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def _print_identity(jobs: list[DemoJob]) -> None:
    """Identity check with dlib's face embeddings: the swapped face should be nearer the swap face.

    In a multi-face target the swapped face is the one whose embedding moved furthest from the original.
    """
    from faceswap_engine import decode_image, detect_faces, face_descriptor, face_distance

    say("\nIdentity (dlib embedding distance; < 0.6 = same person):")
    for demo_job in jobs:
        if demo_job.local_file is None:
            continue
        result, target = (_bgr(_picture(path)) for path in (demo_job.local_file, demo_job.target))
        pairs = [(face_descriptor(result, i), face_descriptor(target, i)) for i in range(len(detect_faces(target)))]
        swapped, original = max(pairs, key=lambda pair: face_distance(*pair))
        to_swap = face_distance(swapped, face_descriptor(decode_image(demo_job.face.read_bytes()), 0))
        to_original = face_distance(swapped, original)
        say(f"  {demo_job.label:<36} to swap face {to_swap:.3f}   to original face {to_original:.3f}")


def _bgr(image: Image.Image) -> Any:
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def unusable(path: Path, *, video: bool) -> str | None:
    """Why the demo cannot use the file at ``path`` (``video``: a target, which may be a video), in one line; ``None``
    when it can."""
    if not path.is_file():
        return f"no such file: {path}"
    if video and _is_video(path):
        return None
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        kinds = "an image Pillow reads (JPEG, PNG, WebP…) or a video (MP4, MOV, WebM)" if video else "an image"
        return f"{path} is not {kinds}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m faceswap_local demo``."""
    import argparse

    parser = argparse.ArgumentParser(prog="faceswap_local demo")
    parser.add_argument("--face", type=Path, help="image whose face is swapped in")
    parser.add_argument("--target", type=Path, help="image whose face is replaced")
    parser.add_argument("--reference", type=Path, help="photo of the person whose face is replaced (with --face)")
    parser.add_argument("--provider", default=None, help="selfhosted (default) or piapi (through its emulator)")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args(argv)
    if bool(args.face) != bool(args.target):
        parser.error("give both --face and --target, or neither")
    if args.reference and not args.face:
        parser.error("--reference needs --face and --target")
    for path, video in ((args.face, False), (args.target, True), (args.reference, False)):
        reason = unusable(path, video=video) if path is not None else None
        if reason:
            parser.error(reason)
    return run(face=args.face, target=args.target, provider=args.provider, out=args.out, reference=args.reference)


if __name__ == "__main__":
    sys.exit(main())
