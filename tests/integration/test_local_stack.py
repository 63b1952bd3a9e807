"""The local stack as users run it: the self-hosted engine as a provider, `make up`/`env`/`down`, and `make demo`."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FACES, Stack
from PIL import Image

from faceswap import media
from faceswap.lifecycle import JobState
from faceswap_engine import SAME_PERSON_THRESHOLD, decode_image, face_descriptor, face_distance

ROOT = Path(__file__).resolve().parents[2]


def manifest_job(stack: Stack, name: str, target_key: str, **fields: object) -> None:
    body = {
        "target_image": {"s3_key": target_key},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        "provider": "selfhosted",
        **fields,
    }
    stack.upload(f"jobs/{name}.json", json.dumps(body).encode())


def test_selfhosted_engine_swaps_the_face_through_the_pipeline(stack: Stack) -> None:
    stack.upload("photos/engine/biden.jpg", (FACES / "biden.jpg").read_bytes())
    manifest_job(stack, "engine-single", "photos/engine/biden.jpg")

    job = stack.wait_for("photos/engine/biden.jpg")

    assert job.state is JobState.SUCCEEDED, job.error
    assert job.provider == "selfhosted" and job.result is not None
    result = stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read()
    assert job.result["content_type"] == "image/jpeg"
    swapped = face_descriptor(decode_image(result))
    to_swap = face_distance(swapped, face_descriptor(decode_image((FACES / "obama.jpg").read_bytes())))
    to_target = face_distance(swapped, face_descriptor(decode_image((FACES / "biden.jpg").read_bytes())))
    assert to_swap < SAME_PERSON_THRESHOLD and to_swap < to_target, (to_swap, to_target)


def test_selfhosted_multi_face_swap_replaces_only_the_chosen_face(stack: Stack) -> None:
    stack.upload("photos/engine/pair.jpg", (FACES / "obama_and_biden_side_by_side.jpg").read_bytes())
    manifest_job(
        stack,
        "engine-multi",
        "photos/engine/pair.jpg",
        task="multi-face-swap",
        options={"swap_faces_index": "0", "target_faces_index": "1"},
    )

    job = stack.wait_for("photos/engine/pair.jpg")

    assert job.state is JobState.SUCCEEDED, job.error
    result = decode_image(stack.s3.get_object(Bucket=stack.results_bucket, Key=job.result["key"])["Body"].read())  # type: ignore[index]
    obama = face_descriptor(decode_image((FACES / "obama.jpg").read_bytes()))
    assert face_distance(face_descriptor(result, 1), obama) < SAME_PERSON_THRESHOLD
    assert face_distance(face_descriptor(result, 0), obama) < SAME_PERSON_THRESHOLD  # face 0 was Obama already


def test_selfhosted_reports_no_face_detected(stack: Stack) -> None:
    gradient = Image.linear_gradient("L").resize((400, 300)).convert("RGB")
    out = io.BytesIO()
    gradient.save(out, format="JPEG")
    stack.upload("photos/engine/no-face.jpg", out.getvalue())
    manifest_job(stack, "engine-no-face", "photos/engine/no-face.jpg")

    job = stack.wait_for("photos/engine/no-face.jpg")

    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "no_face_detected" and job.error["retryable"] is False


def _venv_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["FACESWAP_LOCAL_STATE_DIR"] = str(tmp_path / "state")
    return env


def test_make_up_serves_the_aws_cli_example_and_stops_cleanly(tmp_path: Path) -> None:
    env = _venv_env(tmp_path)
    stack_file = tmp_path / "state" / "stack.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "faceswap_local", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not stack_file.exists() and time.monotonic() < deadline:
            assert process.poll() is None, "make up exited early"
            time.sleep(0.2)
        info = json.loads(stack_file.read_text())
        assert set(info) >= {
            "stack_name",
            "aws_endpoint_url",
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "input_bucket",
            "results_bucket",
            "jobs_table",
            "api_url",
            "event_bus",
        }
        exports = subprocess.run(
            [sys.executable, "-m", "faceswap_local", "env"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        shell = f"""set -e
{exports}
aws s3 cp "{FACES / "obama.jpg"}" "s3://$INPUT_BUCKET/faces/obama.jpg" --only-show-errors
aws s3 cp "{FACES / "biden.jpg"}" "s3://$INPUT_BUCKET/incoming/obama/biden.jpg" --only-show-errors
for i in $(seq 60); do
  aws s3 ls "s3://$RESULTS_BUCKET/results/obama/biden.jpg" && exit 0
  sleep 0.5
done
exit 1
"""
        aws_bin = Path(sys.executable).parent
        run = subprocess.run(
            ["bash", "-c", shell],
            env={**env, "PATH": f"{aws_bin}:{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert run.returncode == 0, run.stderr
        assert "biden.jpg" in run.stdout
        smoke = subprocess.run(  # make smoke, against make up
            [sys.executable, "-m", "faceswap_local.smoke", "--timeout", "60"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        found = json.loads(smoke.stdout[smoke.stdout.index("{") : smoke.stdout.rindex("}") + 1])
        assert found["alarm"]["name"] == f"{info['stack_name']}-jobs-swept" and "ALARM" in found["alarm"]["seen"]
        assert found["result_bytes"] > 0 and len(found["sha256"]) == 64
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not stack_file.exists(), "the stack file is removed when the stack stops"


@pytest.mark.timeout(180)
def test_make_demo_swaps_every_demo_pair_and_writes_a_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "faceswap_local", "demo", "--out", str(out)],
        cwd=ROOT,
        env=_venv_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=170,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "5/5 jobs succeeded" in run.stdout
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 600 and sheet.height > 1500
    assert len(list(out.glob("*.jpg"))) == 4
    (video,) = out.glob("*.mp4")  # the demo's video job: its result keeps the clip's sound
    info = media.probe(str(video))
    assert info.has_audio and info.frames == 24
