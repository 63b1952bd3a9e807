"""Benchmark 8: video jobs.

- **Result copy** (:func:`result_memory.measure_video_copy`): a video result of 50, 200 and 500 MiB kept from a file
  with the pipeline's upload (parts in flight, create-only) against boto3's ``upload_fileobj`` from memory, each in a
  fresh process on a moto server: speed and peak RSS (target: at least 0.8x the speed, memory flat).
- **Engine speed** (:func:`engine_seconds_per_frame`): the self-hosted engine's video swap
  (``faceswap_engine.video.swap_video_file``) on a clip made from ``obama.jpg`` at 480p and 720p, in a process pinned
  to one core with OpenCV's threads at 1; seconds per frame, the median of the runs.
- **Colour flicker** (:func:`engine_colour_flicker`): ``faceswap_engine.quality.colour_flicker`` (ΔE76 per frame step
  of the swapped face's colour against the input's) of the engine's video swap on a 2-second 480p clip, clean and with
  sensor noise (sigma 8 of 255 per frame), each frame swapped on its own against the swap carried over frames
  (``FaceMemory``): what the smoothing buys. About 2.3 is a just noticeable difference.
- **Upload to SUCCEEDED** (:func:`upload_to_succeeded`): a 10-second 720p clip at 24 fps with sound, uploaded to the
  face library of a fresh local stack (self-hosted engine): seconds from the upload until the job's row says
  SUCCEEDED with its result kept.

Usage: ``make bench`` (part ``video``), or ``.venv/bin/python bench/video.py`` for this part alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import REPO, say

FACES = REPO.parent / "shared" / "faces"
COPY_SIZES_MIB = (50, 200, 500)
FRAME_SIZES = {"480p": (854, 480), "720p": (1280, 720)}


def engine_seconds_per_frame(height: str, *, frames: int = 24, runs: int = 3) -> float:
    """Seconds per frame of the engine's video swap at ``height`` (``480p``, ``720p``) on one core (median of
    ``runs``), measured in a child process pinned to one CPU."""
    width, rows = FRAME_SIZES[height]
    code = f"""
import json, os, sys, tempfile, time, statistics
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
import cv2
cv2.setNumThreads(1)
from faceswap_local.clips import make_clip
from faceswap_engine.video import swap_video_file
photo = open({str(FACES / "obama.jpg")!r}, "rb").read()
swap = open({str(FACES / "biden.jpg")!r}, "rb").read()
folder = tempfile.mkdtemp()
path = os.path.join(folder, "c.mp4")
clip = make_clip(path, photo=photo, width={width}, height={rows}, fps=24, seconds={frames / 24})
swap_video_file(str(clip), swap, os.path.join(folder, "warm.mp4"))
seconds = []
for i in range({runs}):
    started = time.perf_counter()
    stats = swap_video_file(str(clip), swap, os.path.join(folder, f"out{{i}}.mp4"))
    seconds.append((time.perf_counter() - started) / stats.frames)
print(json.dumps(statistics.median(seconds)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=False, cwd=REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine video benchmark failed: {done.stderr[-2000:]}")
    return round(float(json.loads(done.stdout.strip().splitlines()[-1])), 3)


def engine_colour_flicker() -> dict[str, float]:
    """The engine's colour flicker on a 2-second 480p clip of ``obama.jpg`` with ``biden.jpg`` swapped in, clean and
    noisy, per frame (``colour_weight=1``) and carried over frames (the default): ``{name: ΔE76}``."""
    from faceswap_engine.quality import colour_flicker
    from faceswap_engine.video import swap_video_file
    from faceswap_local.clips import frames, make_clip

    figures: dict[str, float] = {}
    swap = (FACES / "biden.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        for clip_name, noise in (("clean", 0.0), ("noisy", 8.0)):
            clip = make_clip(
                f"{folder}/{clip_name}.mp4",
                photo=(FACES / "obama.jpg").read_bytes(),
                width=854,
                height=480,
                fps=24,
                seconds=2,
                audio=False,
                move=0.08,
                noise=noise,
            )
            source = frames(str(clip))
            for swap_name, weight in (("per_frame", 1.0), ("carried", 0.3)):
                out = f"{folder}/{clip_name}-{swap_name}.mp4"
                swap_video_file(str(clip), swap, out, colour_weight=weight)
                value = round(colour_flicker(zip(source, frames(out), strict=True)), 3)
                figures[f"video_engine_colour_flicker_{clip_name}_{swap_name}"] = value
    return figures


def upload_to_succeeded(*, seconds: float = 10.0) -> dict[str, Any]:
    """Upload a ``seconds``-long 720p clip (24 fps, with sound) to a fresh local stack's face library and time it to
    SUCCEEDED; the job's stages too (queue, submit with the fit, provider with the swap and the result's check)."""
    from faceswap.aws.dynamodb import job_from_item
    from faceswap.model import parse_time
    from faceswap_local.app import LocalStack
    from faceswap_local.clips import make_clip

    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(
            Path(folder) / "clip.mp4",
            photo=(FACES / "obama.jpg").read_bytes(),
            width=1280,
            height=720,
            fps=24,
            seconds=seconds,
        ).read_bytes()
    log = (REPO / ".local" / "logs" / "bench-video.log").open("w")
    stack = LocalStack(log_stream=log).start()
    try:
        info = stack.info()
        s3, ddb = stack.client("s3"), stack.client("dynamodb")
        s3.put_object(Bucket=info["input_bucket"], Key="faces/biden.jpg", Body=(FACES / "biden.jpg").read_bytes())
        uploaded = time.time()
        s3.put_object(Bucket=info["input_bucket"], Key="incoming/biden/clip.mp4", Body=clip)
        deadline = time.monotonic() + 900
        job = None
        while time.monotonic() < deadline:
            rows = [job_from_item(i) for i in ddb.scan(TableName=info["jobs_table"], ConsistentRead=True)["Items"]]
            job = next((r for r in rows if r.target.key == "incoming/biden/clip.mp4"), None)
            if job is not None and job.terminal:
                break
            time.sleep(0.5)
        if job is None or job.state != "SUCCEEDED" or not job.finished_at or not job.submitted_at:
            raise RuntimeError(f"the video job did not succeed: {job}")
        created, submitted, finished = (
            parse_time(t).timestamp() for t in (job.created_at, job.submitted_at, job.finished_at)
        )
        clip_name = f"{seconds:g}s_720p"
        return {
            f"video_upload_to_succeeded_seconds_{clip_name}": round(finished - uploaded, 1),
            f"video_queue_seconds_{clip_name}": round(created - uploaded, 1),
            f"video_submit_seconds_{clip_name}": round(submitted - created, 1),
            f"video_provider_seconds_{clip_name}": round(finished - submitted, 1),
            f"video_frames_{clip_name}": (job.media or {}).get("sent", {}).get("frames"),
        }
    finally:
        stack.stop()
        log.close()


def measure(repeats: int, *, quick: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Benchmark 8's figures (see the module docstring) and its raw measurements."""
    from result_memory import measure_video_copy

    figures: dict[str, Any] = {}
    found, raw = measure_video_copy(COPY_SIZES_MIB[:1] if quick else COPY_SIZES_MIB, repeats)
    figures.update(found)
    for height in FRAME_SIZES:
        figures[f"video_engine_seconds_per_frame_{height}_one_core"] = value = engine_seconds_per_frame(
            height, runs=1 if quick else 3
        )
        say(f"  engine, {height}: {value} s per frame on one core")
    flicker = engine_colour_flicker()
    figures.update(flicker)
    key = "video_engine_colour_flicker_{}_{}".format
    pairs = [f"{flicker[key(c, 'per_frame')]} / {flicker[key(c, 'carried')]}" for c in ("clean", "noisy")]
    say("  colour flicker (dE76 per frame step), per frame / carried over frames: clean {}, noisy {}".format(*pairs))
    seconds = 2.0 if quick else 10.0
    timed = upload_to_succeeded(seconds=seconds)
    figures.update(timed)
    total = timed[f"video_upload_to_succeeded_seconds_{seconds:g}s_720p"]
    say(f"  {seconds:g} s 720p clip, upload to SUCCEEDED: {total} s")
    return figures, {"video_copy": raw}


def main() -> int:
    """Run this part alone and print its figures."""
    figures, _ = measure(1)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
