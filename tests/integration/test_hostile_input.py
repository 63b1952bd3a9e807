"""Hostile inputs against the local stack: every one ends in a documented outcome, and nothing else happens.

The corpus is made here (Pillow and raw bytes from the sample photos in ``../shared/faces``; nothing is
downloaded) and goes in the ways users send work: face-library uploads (``incoming/obama/…``, with the
session's ``faces/obama.jpg``), manifests (``jobs/<name>.json``) and, for images behind URLs, ``POST /jobs``.
All of it is sent at once by a module fixture; each entry is then its own test. The suite proves that, for
every entry:

- the job ends SUCCEEDED (convertible images of a real face: CMYK, 16-bit, RGBA, GIF, WebP, EXIF-rotated) or
  FAILED with the exact ``error.code`` that ``faceswap/errors.py`` defines for that input, not retryable;
- nothing goes unhandled: the job reaches a terminal state, publishes one terminal event, and no message of
  it lands in a dead-letter queue;
- there is no retry storm: the provider emulator gets at most one create per job (none for input errors the
  submit step can see), no create is refused or repeated, and ``submit_attempts`` stays at most 1;
- inputs are never deleted or changed: every uploaded object still has one version, with the same ETag;
- a failed job leaves nothing at its result key.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from botocore.credentials import Credentials
from conftest import FACES, Stack
from PIL import Image

from faceswap.aws.dynamodb import job_from_item
from faceswap.ids import job_id_for
from faceswap.lifecycle import JobState
from faceswap.model import Job
from faceswap_cli.sigv4 import SigV4
from faceswap_local.stack import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

WAIT_SECONDS = 30
"""Longest the whole corpus may take to end, from the last upload (it takes about 6 s on two cores)."""

INPUT_MAX_BYTES = 20 * 1024 * 1024
"""The stack's input byte cap (``INPUT_MAX_BYTES``, README "Error codes": 20 MiB)."""

MAX_MANIFEST_BYTES = 64 * 1024
"""The manifest size cap (README "Upload contracts": 64 KiB)."""

SUCCEEDED, FAILED = JobState.SUCCEEDED, JobState.FAILED

# --- Making the corpus ------------------------------------------------------------------------------------------------


@functools.cache
def portrait() -> Image.Image:
    """A real face photo (``biden.jpg``, one face), downscaled to 1200 px tall to keep the swaps quick."""
    with Image.open(FACES / "biden.jpg") as image:
        image.load()
        return image.resize((image.width * 1200 // image.height, 1200), Image.Resampling.LANCZOS)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """``image`` saved in ``fmt`` (a Pillow format name) with the save ``params``."""
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def portrait_jpeg() -> bytes:
    """The portrait as a plain JPEG (what the cases below are variations of)."""
    return encode(portrait(), "JPEG", quality=90)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed, tiny PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


def bomb_png() -> bytes:
    """A decompression bomb: a PNG of a few hundred bytes declaring 100000x100000 pixels (30 GB decoded)."""
    return png_declaring(100_000, 100_000)


def cmyk_jpeg() -> bytes:
    """The portrait as a CMYK JPEG (what print workflows export)."""
    return encode(portrait().convert("CMYK"), "JPEG", quality=90)


def png_16_bit_rgb() -> bytes:
    """The portrait as a 48-bit (16 bits per channel) RGB PNG, written by hand: Pillow cannot save one."""
    pixels = np.asarray(portrait().convert("RGB"), dtype=">u2") * 257
    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.view(np.uint8).reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + png_chunk(b"IEND", b"")
    )


def png_16_bit_grey() -> bytes:
    """The portrait as a 16-bit greyscale PNG (Pillow mode ``I;16``)."""
    grey = np.asarray(portrait().convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG", compress_level=1)


def rgba_png() -> bytes:
    """The portrait as an RGBA PNG: opaque in the middle, a fully transparent 40 px border."""
    image = portrait().convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (40, 40, image.width - 40, image.height - 40))
    image.putalpha(alpha)
    return encode(image, "PNG", compress_level=1)


def animated_gif() -> bytes:
    """A 3-frame animated GIF whose first frame is the portrait (the others are plain colours)."""
    first = portrait().convert("P", palette=Image.Palette.ADAPTIVE)
    others = [Image.new("P", first.size, i) for i in (10, 200)]
    return encode(first, "GIF", save_all=True, append_images=others, duration=200, loop=0)


def webp() -> bytes:
    """The portrait as a lossy WebP."""
    return encode(portrait(), "WEBP", quality=85)


def exif_rotated_jpeg() -> bytes:
    """The portrait stored on its side with EXIF Orientation 6: upright only once the orientation is applied.

    Stored sideways, the engine finds no face in it (a face detector does not look for faces lying down), so
    the job succeeds only if the pipeline turns it upright before the provider sees it.
    """
    stored = portrait().transpose(Image.Transpose.ROTATE_90)  # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def one_pixel_png() -> bytes:
    """A 1x1 PNG of skin colour."""
    return encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG")


def photo_without_a_face() -> bytes:
    """A real photo with no face in it: the lower part of ``biden.jpg`` (folded arms and suit)."""
    with Image.open(FACES / "biden.jpg") as image:
        image.load()
        lower = image.crop((0, image.height * 45 // 100, image.width, image.height))
    return encode(lower.resize((lower.width // 2, lower.height // 2)), "JPEG", quality=90)


def over_the_byte_cap() -> bytes:
    """A valid JPEG padded after its end marker to one byte over the input cap (decoders ignore the padding)."""
    jpeg = portrait_jpeg()
    return jpeg + b"\0" * (INPUT_MAX_BYTES + 1 - len(jpeg))


def over_the_pixel_cap() -> bytes:
    """A complete, valid 7200x7200 bilevel PNG: 51.8 Mpx (over the 50 Mpx cap) in a few KiB."""
    return encode(Image.new("1", (7200, 7200), 1), "PNG")


def manifest(**fields: Any) -> bytes:
    """A manifest with ``fields`` as its JSON object."""
    return json.dumps(fields).encode()


def oversized_manifest() -> bytes:
    """A valid manifest padded with whitespace to one byte over the 64 KiB cap."""
    body = manifest(target_image="photos/hostile/oversized.jpg", swap_image="faces/obama.jpg")
    return body[:-1] + b" " * (MAX_MANIFEST_BYTES + 1 - len(body)) + b"}"


# --- The corpus -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input and the outcome the pipeline must give it.

    Attributes
    ----------
    id
        The test id.
    key
        The inputs-bucket key whose upload makes the job (``None`` for a ``POST /jobs`` case).
    data
        Makes the object's bytes.
    state, code
        The terminal state and, for FAILED, the exact ``error.code``.
    message
        Text the error message must contain (so the user can act on it), if any.
    tasks
        Provider tasks the job must create: 1 when only the provider can judge the input (a face to swap),
        0 when the submit step must refuse it before paying the provider.
    extras
        ``(key, make bytes)`` of other inputs uploaded first (images a manifest names, a face-library face).
    url_path
        For a ``POST /jobs`` case: the path of its target image on :class:`HostileImageHandler` (``key`` and
        ``data`` are then unused).
    """

    id: str
    key: str | None
    data: Callable[[], bytes]
    state: JobState
    code: str | None = None
    message: str | None = None
    tasks: int = 0
    extras: tuple[tuple[str, Callable[[], bytes]], ...] = ()
    url_path: str | None = None


def incoming(name: str) -> str:
    """A face-library upload key: the session's ``faces/obama.jpg`` is swapped onto it."""
    return f"incoming/obama/hostile/{name}"


def nothing() -> bytes:
    """Zero bytes."""
    return b""


def shopping_list() -> bytes:
    """Plain text (what a ``.jpg`` sometimes turns out to be)."""
    return b"Shopping list:\n- eggs\n- milk\n" * 40


CASES = [
    # Not images, or broken ones: refused before the provider is paid.
    Case("zero-bytes", incoming("zero.jpg"), nothing, FAILED, "invalid_image", message="empty"),
    Case("truncated-jpeg", incoming("truncated.jpg"), lambda: portrait_jpeg()[:20_000], FAILED, "invalid_image"),
    Case("text-named-jpg", incoming("notes.jpg"), shopping_list, FAILED, "invalid_image"),
    Case(
        "swap-face-is-text",
        "incoming/hostile-text-face/portrait.jpg",
        portrait_jpeg,
        FAILED,
        "invalid_image",
        message="swap image",
        extras=(("faces/hostile-text-face.jpg", shopping_list),),
    ),
    # Over the pipeline's limits.
    Case("png-declaring-100000x100000", incoming("bomb.png"), bomb_png, FAILED, "image_too_large"),
    Case(
        "valid-png-over-50-megapixels",
        incoming("huge.png"),
        over_the_pixel_cap,
        FAILED,
        "image_too_large",
        message="7200x7200",
    ),
    Case(
        "jpeg-over-20-MiB", incoming("padded.jpg"), over_the_byte_cap, FAILED, "image_too_large", message="20,971,520"
    ),
    # Convertible images of a real face: converted, then swapped.
    Case("cmyk-jpeg", incoming("cmyk.jpg"), cmyk_jpeg, SUCCEEDED, tasks=1),
    Case("16-bit-grey-png", incoming("grey16.png"), png_16_bit_grey, SUCCEEDED, tasks=1),
    Case("16-bit-rgb-png", incoming("rgb48.png"), png_16_bit_rgb, SUCCEEDED, tasks=1),
    Case("rgba-png", incoming("rgba.png"), rgba_png, SUCCEEDED, tasks=1),
    Case("animated-gif", incoming("animated.gif"), animated_gif, SUCCEEDED, tasks=1),
    Case("webp", incoming("portrait.webp"), webp, SUCCEEDED, tasks=1),
    Case("exif-rotated-jpeg", incoming("rotated.jpg"), exif_rotated_jpeg, SUCCEEDED, tasks=1),
    # No face to swap: too small to hold one (refused by the submit step), or none found (by the provider).
    Case("1x1-png", incoming("one-pixel.png"), one_pixel_png, FAILED, "invalid_image", message="1x1"),
    Case("photo-without-a-face", incoming("no-face.jpg"), photo_without_a_face, FAILED, "no_face_detected", tasks=1),
    # A face-library key that climbs out of its prefix: its result key would too.
    Case(
        "incoming-key-with-dot-dot", "incoming/obama/../../hostile-escape.jpg", portrait_jpeg, FAILED, "invalid_request"
    ),
    # Manifests.
    Case(
        "manifest-bad-json",
        "jobs/hostile-bad-json.json",
        lambda: b'{"target_image": "photos/x.jpg", ',
        FAILED,
        "invalid_request",
        message="not valid JSON",
    ),
    Case(
        "manifest-not-utf-8",
        "jobs/hostile-not-utf8.json",
        lambda: b'{"target_image": "\xff\xfe\xfa"}',
        FAILED,
        "invalid_request",
        message="not valid JSON",
    ),
    Case(
        "manifest-nested-json-bomb",
        "jobs/hostile-nested.json",
        lambda: b"[" * 20_000 + b"]" * 20_000,  # 40 KB, under the 64 KiB cap
        FAILED,
        "invalid_request",
    ),
    Case(
        "manifest-unknown-field",
        "jobs/hostile-unknown-field.json",
        lambda: manifest(target_image="photos/hostile/x.jpg", swap_image="faces/obama.jpg", priority="urgent"),
        FAILED,
        "invalid_request",
        message="priority",
    ),
    Case(
        "manifest-naming-missing-images",
        "jobs/hostile-missing.json",
        lambda: manifest(target_image="photos/hostile/never-uploaded.jpg", swap_image="faces/never-uploaded.jpg"),
        FAILED,
        "input_not_found",
        message="photos/hostile/never-uploaded.jpg",
    ),
    Case(
        "manifest-dot-dot-in-target-key",
        "jobs/hostile-dotdot-target.json",
        lambda: manifest(target_image={"s3_key": "photos/../faces/obama.jpg"}, swap_image="faces/obama.jpg"),
        FAILED,
        "invalid_request",
        message="target_image.s3_key",
    ),
    Case(
        "manifest-dot-dot-in-swap-key",
        "jobs/hostile-dotdot-swap.json",
        lambda: manifest(target_image="photos/hostile/x.jpg", swap_image={"s3_key": "../../etc/passwd"}),
        FAILED,
        "invalid_request",
        message="swap_image.s3_key",
    ),
    Case(
        "manifest-dot-dot-in-result-key",
        "jobs/hostile-dotdot-result.json",
        lambda: manifest(
            target_image="photos/hostile/dotdot-result.jpg",
            swap_image="faces/obama.jpg",
            result_key="results/../faces/obama.jpg",
        ),
        FAILED,
        "invalid_request",
        message="result_key",
        extras=(("photos/hostile/dotdot-result.jpg", portrait_jpeg),),
    ),
    Case(
        "manifest-named-with-dot-dot",  # its derived result key would be results/jobs/../../hostile-escape.jpg
        "jobs/../../hostile-escape.json",
        lambda: manifest(target_image="photos/hostile/dotdot-name.jpg", swap_image="faces/obama.jpg"),
        FAILED,
        "invalid_request",
        message="result_key",
        extras=(("photos/hostile/dotdot-name.jpg", portrait_jpeg),),
    ),
    Case(
        "manifest-over-64-KiB",
        "jobs/hostile-oversized.json",
        oversized_manifest,
        FAILED,
        "invalid_request",
        message="64 KiB",
    ),
    Case(
        "manifest-huge-option-value",
        "jobs/hostile-huge-option.json",
        lambda: manifest(
            target_image="photos/hostile/x.jpg",
            swap_image="faces/obama.jpg",
            task="multi-face-swap",
            options={"swap_faces_index": "0", "target_faces_index": "9" * 50_000},
        ),
        FAILED,
        "invalid_request",
        message="target_faces_index",
    ),
    Case(
        "manifest-face-index-99-on-a-one-face-photo",  # the largest index the manifest accepts
        "jobs/hostile-index-99.json",
        lambda: manifest(
            target_image="photos/hostile/index-99.jpg",
            swap_image="faces/obama.jpg",
            task="multi-face-swap",
            options={"swap_faces_index": "0", "target_faces_index": "99"},
        ),
        FAILED,
        "no_face_detected",
        tasks=1,
        extras=(("photos/hostile/index-99.jpg", portrait_jpeg),),
    ),
    # Images behind URLs (POST /jobs; the local stack allows loopback http for them).
    Case("url-declaring-a-terabyte", None, nothing, FAILED, "image_too_large", url_path="/terabyte.jpg"),
    Case("url-with-an-endless-body", None, nothing, FAILED, "image_too_large", url_path="/endless.jpg"),
    Case("url-serving-text", None, nothing, FAILED, "invalid_image", url_path="/notes.jpg"),
    Case("url-serving-an-animated-gif", None, nothing, SUCCEEDED, tasks=1, url_path="/animated.gif"),
]
"""The corpus, in the order it is sent."""


# --- Sending it all at once -------------------------------------------------------------------------------------------


class HostileImageHandler(BaseHTTPRequestHandler):
    """Serves the URL cases: a declared 1 TB body, an endless body, text posing as a JPEG and an animated GIF
    (converted like an uploaded one).

    ``gets`` counts the requests for each path (a download repeated for a bad image would be a retry storm).
    """

    gets: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        self.gets[self.path] += 1
        try:
            if self.path == "/terabyte.jpg":
                self._headers({"Content-Type": "image/jpeg", "Content-Length": str(10**12)})
                self.wfile.write(b"\xff\xd8\xff\xe0" + b"\0" * 65_536)
            elif self.path == "/endless.jpg":
                self._headers({"Content-Type": "image/jpeg"})  # no length: the body ends when the server closes
                self.wfile.write(b"\xff\xd8\xff\xe0")
                for _ in range(1024):  # 64 MiB at most, so the thread ends even if nobody stops reading
                    self.wfile.write(b"\0" * 65_536)
            elif self.path == "/animated.gif":
                body = animated_gif()
                self._headers({"Content-Type": "image/gif", "Content-Length": str(len(body))})
                self.wfile.write(body)
            elif self.path == "/notes.jpg":
                body = shopping_list()
                self._headers({"Content-Type": "image/jpeg", "Content-Length": str(len(body))})
                self.wfile.write(body)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the pipeline stopped reading: what the size cap is for

    def _headers(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@dataclass
class Input:
    """An object uploaded for a case, as it was right after the upload."""

    key: str
    version_id: str
    etag: str


@dataclass
class Sent:
    """A case as sent: its job id, the inputs it uploaded, and the job once it ended (``None`` if it did not).

    For an upload the job id is derived from the S3 event's version id, or from the ETag when the event has
    none (moto's events carry no version id): both are candidates until a row with one of them turns up.
    """

    case: Case
    candidates: tuple[str, ...]
    inputs: list[Input] = field(default_factory=list)
    job: Job | None = None

    @property
    def job_id(self) -> str:
        """The job's id: the candidate that has a row (the first one while none has)."""
        return self.job.job_id if self.job is not None else self.candidates[0]


@dataclass
class Corpus:
    """Every case as sent, plus what the provider emulator counted while the corpus ran."""

    sent: dict[str, Sent]
    creates: int
    tasks_created: int


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    """Base URL of :class:`HostileImageHandler` on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def corpus(stack: Stack, hostile_server: str) -> Corpus:
    """Send every case, then wait (at most :data:`WAIT_SECONDS` in all) until every job has ended."""
    creates_before, tasks_before = stack.piapi.create_calls, len(stack.piapi.tasks)
    sent: dict[str, Sent] = {}
    api = httpx.Client(
        base_url=stack.api_url, auth=SigV4(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), REGION), timeout=30
    )
    with api:
        for case in CASES:
            inputs = [upload(stack, key, make()) for key, make in case.extras]
            if case.url_path is not None:
                target = {"url": hostile_server + case.url_path}
                response = api.post("/jobs", json={"target_image": target, "swap_image": {"s3_key": "faces/obama.jpg"}})
                assert response.status_code == 202, response.text
                sent[case.id] = Sent(case, (response.json()["job_id"],), inputs)
                continue
            assert case.key is not None
            uploaded = upload(stack, case.key, case.data())
            candidates = tuple(
                job_id_for("s3", stack.input_bucket, case.key, tag) for tag in (uploaded.version_id, uploaded.etag)
            )
            sent[case.id] = Sent(case, candidates, [*inputs, uploaded])

    deadline = time.monotonic() + WAIT_SECONDS
    pending = {job_id: s for s in sent.values() for job_id in s.candidates}
    while pending and time.monotonic() < deadline:
        for job in read_jobs(stack, list(pending)):
            if job.terminal:
                done = pending[job.job_id]
                done.job = job
                for job_id in done.candidates:
                    pending.pop(job_id)
        time.sleep(0.25)
    for job in read_jobs(stack, list(pending)):  # the last look: record how far the stragglers got
        pending[job.job_id].job = job
    return Corpus(
        sent=sent,
        creates=stack.piapi.create_calls - creates_before,
        tasks_created=len(stack.piapi.tasks) - tasks_before,
    )


def upload(stack: Stack, key: str, data: bytes) -> Input:
    """Put one input object and record its version and ETag (without quotes, as S3 events give it)."""
    response = stack.s3.put_object(Bucket=stack.input_bucket, Key=key, Body=data)
    return Input(key, response["VersionId"], response["ETag"].strip('"'))


def read_jobs(stack: Stack, job_ids: list[str]) -> list[Job]:
    """The job rows that exist among ``job_ids`` (consistent reads)."""
    jobs = []
    for start in range(0, len(job_ids), 100):
        keys = [{"job_id": {"S": job_id}} for job_id in job_ids[start : start + 100]]
        request = {stack.jobs_table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            response = stack.ddb.batch_get_item(RequestItems=request)
            jobs += [job_from_item(item) for item in response["Responses"].get(stack.jobs_table, [])]
            request = response.get("UnprocessedKeys") or {}
    return jobs


# --- The tests --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_ends_with_its_documented_outcome(case: Case, corpus: Corpus, stack: Stack) -> None:
    sent = corpus.sent[case.id]
    job = sent.job
    assert job is not None, (
        f"no job row for {case.key or case.id} after {WAIT_SECONDS} s: the submit step never recorded the job "
        "(an unhandled exception makes SQS deliver the message again and again, then park it in the DLQ)"
    )
    assert job.terminal, f"the job did not end in {WAIT_SECONDS} s: {job.state} {job.error}"
    error = job.error or {}
    outcome = f"{job.state} {error or {'result_key': job.result_key}}"
    assert (job.state, error.get("code")) == (case.state, case.code), outcome
    if case.state is FAILED:
        assert error.get("retryable") is False, error
        assert error.get("message"), error
        if case.message:
            assert case.message in error["message"], error["message"]

    tasks = stack.piapi.tasks_for_job(job.job_id)
    assert len(tasks) == case.tasks, f"{len(tasks)} provider tasks"
    assert job.submit_attempts <= 1, f"{job.submit_attempts} submit attempts"
    if case.url_path is not None:
        assert HostileImageHandler.gets[case.url_path] == 1, "the image URL was fetched more than once"

    for uploaded in sent.inputs:
        versions = stack.s3.list_object_versions(Bucket=stack.input_bucket, Prefix=uploaded.key)
        mine = [v for v in versions.get("Versions", []) if v["Key"] == uploaded.key]
        assert [(v["VersionId"], v["ETag"].strip('"')) for v in mine] == [(uploaded.version_id, uploaded.etag)], (
            uploaded.key
        )
        assert not [m for m in versions.get("DeleteMarkers", []) if m["Key"] == uploaded.key], uploaded.key

    if case.state is SUCCEEDED:
        (task,) = tasks
        assert job.result is not None
        head = stack.s3.head_object(Bucket=stack.results_bucket, Key=job.result_key)
        assert head["ContentLength"] == job.result["size"] == len(task.result or b"")
        assert job.result["content_type"].startswith("image/")
        assert max(task.image_sizes["target_image"]) <= 2048
    elif job.result_key:
        kept = stack.s3.list_object_versions(Bucket=stack.results_bucket, Prefix=job.result_key)
        assert not [v for v in kept.get("Versions", []) if v["Key"] == job.result_key], "a failed job left a result"


def test_exif_rotated_photo_reaches_the_provider_upright(corpus: Corpus, stack: Stack) -> None:
    job = corpus.sent["exif-rotated-jpeg"].job
    assert job is not None
    (task,) = stack.piapi.tasks_for_job(job.job_id)
    width, height = task.image_sizes["target_image"]
    assert height > width, "the stored photo lies on its side; the provider must get it standing"


def test_corpus_sends_the_provider_no_refused_or_repeated_create(corpus: Corpus, stack: Stack) -> None:
    per_job = {s.case.id: len(stack.piapi.tasks_for_job(s.job_id)) for s in corpus.sent.values()}
    assert {i: n for i, n in per_job.items() if n > 1} == {}
    assert corpus.creates == corpus.tasks_created, "creates the emulator refused (no task) mean a retried submit"
    assert corpus.tasks_created == sum(per_job.values())


def test_corpus_leaves_nothing_in_the_dead_letter_queues(corpus: Corpus, stack: Stack) -> None:
    """No message of the corpus was given up on (the per-case test catches one still being redelivered)."""
    info = stack.local.info()
    marks = {job_id for s in corpus.sent.values() for job_id in s.candidates}
    marks |= {quote(s.case.key, safe="") for s in corpus.sent.values() if s.case.key}
    for name in ("submit_dead_letter_queue_url", "check_dead_letter_queue_url", "publisher_dead_letter_queue_url"):
        bodies = peek(stack, info[name])
        assert not [b for b in bodies if any(mark in b for mark in marks)], name


def test_corpus_publishes_one_terminal_event_per_job(corpus: Corpus, stack: Stack) -> None:
    ended = {s.job_id: s.job for s in corpus.sent.values() if s.job is not None and s.job.terminal}
    events = [e for e in stack.events() if e.get("detail", {}).get("job_id") in ended]
    seen = sorted(
        (e["detail"]["job_id"], e["detail-type"], (e["detail"].get("error") or {}).get("code")) for e in events
    )
    expected = sorted(
        (job_id, "Job Succeeded" if job.state is SUCCEEDED else "Job Failed", (job.error or {}).get("code"))
        for job_id, job in ended.items()
    )
    assert seen == expected


def peek(stack: Stack, queue_url: str) -> list[str]:
    """The bodies of the messages in a queue, left in it (each is hidden for 1 s while the queue is paged)."""
    bodies: dict[str, str] = {}
    for _ in range(100):
        messages = stack.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=1, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            break
        bodies |= {m["MessageId"]: m["Body"] for m in messages}
    return list(bodies.values())
