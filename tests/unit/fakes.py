"""In-memory fakes of the domain's ports, for testing :mod:`faceswap.jobs` without AWS or HTTP."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import Image

from faceswap.errors import ImageTooLarge, InputNotFound
from faceswap.fetch import ResultFetcher
from faceswap.images import ImageLimits
from faceswap.jobs import Pipeline, Ports, Settings
from faceswap.lifecycle import JobState, Phase
from faceswap.model import ImageRef, Job, JobRequest, StoredResult, TaskSnapshot, TaskStatus
from faceswap.ports import FaceMatcher, InputStore, Provider, RateLimiter, RequestQueue, TaskInput, Webhook

SIGNING_KEY = b"unit-test-signing-key"
RESULT_HOST = "results.example.com"


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    """A small JPEG made in memory."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


def job_request(job_id: str = "a" * 32, **changes: Any) -> JobRequest:
    """The request of an upload to ``incoming/obama/target.jpg`` (swap face ``faces/obama.jpg``, provider ``fake``),
    with ``changes``: what :func:`make_world`'s inputs bucket holds."""
    fields: dict[str, Any] = {
        "job_id": job_id,
        "target_image": ImageRef(bucket="inputs", key="incoming/obama/target.jpg"),
        "swap_image": ImageRef(bucket="inputs", key="faces/obama.jpg"),
        "provider": "fake",
        "task": "face-swap",
        "result_key": "results/obama/target.jpg",
        "source": "s3",
    }
    return JobRequest(**{**fields, **changes})


def job_row(**changes: Any) -> Job:
    """A job row as the lifecycle writes it: a SUBMITTED (``running``) PiAPI face swap of
    ``incoming/obama/biden.jpg`` by default, with ``changes``; a terminal ``state`` gets the ``ended`` phase and
    ``RECEIVED`` the ``awaiting_create`` one unless ``phase`` is given."""
    state = changes.get("state", JobState.SUBMITTED)
    phase = Phase.ENDED if state.terminal else Phase.RUNNING if state is JobState.SUBMITTED else Phase.AWAITING_CREATE
    fields: dict[str, Any] = {
        "job_id": "a" * 32,
        "state": state,
        "phase": phase,
        "provider": "piapi",
        "task": "face-swap",
        "target_image": ImageRef(bucket="inputs", key="incoming/obama/biden.jpg"),
        "swap_image": ImageRef(bucket="inputs", key="faces/obama.jpg"),
        "result_key": "results/obama/biden.jpg",
        "source": "s3",
        "created_at": "2026-11-25T12:00:00.000Z",
        "updated_at": "2026-11-25T12:00:00.000Z",
        "deadline_at": "2026-11-25T12:15:00.000Z",
    }
    return Job(**{**fields, **changes})


class MemoryJobStore:
    """JobStore over a dict, with the same conditional semantics as the DynamoDB adapter; ``history`` keeps every
    version written, as the jobs table's stream does."""

    def __init__(self) -> None:
        self.rows: dict[str, Job] = {}
        self.writes = 0
        self.history: list[Job] = []
        """Every version of every row, in the order written (the jobs table's stream)."""

    def create(self, job: Job) -> bool:
        if job.job_id in self.rows:
            return False
        self.writes += 1
        self.rows[job.job_id] = job
        self.history.append(job)
        return True

    def get(self, job_id: str) -> Job | None:
        return self.rows.get(job_id)

    def apply(
        self,
        job_id: str,
        *,
        from_phases: Iterable[Phase],
        changes: Mapping[str, Any],
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        job = self.rows.get(job_id)
        if job is None or job.phase not in set(from_phases):
            return None
        if any(getattr(job, name) != value for name, value in (expected or {}).items()):
            return None
        self.writes += 1
        self.rows[job_id] = replace(
            job, **{name: _default(name) if value is None else value for name, value in changes.items()}
        )
        self.history.append(self.rows[job_id])
        return self.rows[job_id]


def _default(name: str) -> Any:
    """A removed attribute reads back as the field's default, as it does from DynamoDB."""
    spec = next(f for f in fields(Job) if f.name == name)
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


class MemoryObjects:
    """ObjectStore over a dict ``{(bucket, key): bytes}``; results are create-once per job."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.owners: dict[tuple[str, str], str] = {}
        self.result_writes = 0

    def read(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        if (bucket, key) not in self.objects:
            raise InputNotFound(f"s3://{bucket}/{key} does not exist.")
        data = self.objects[(bucket, key)]
        if len(data) > max_bytes:
            raise ImageTooLarge("too large")
        return data

    def head(self, bucket: str, key: str) -> dict[str, str] | None:
        return {} if (bucket, key) in self.objects else None

    def download(self, bucket: str, key: str, path: str, *, version_id: str | None = None, max_bytes: int) -> int:
        data = self.read(bucket, key, version_id=version_id, max_bytes=max_bytes)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)

    def put_file(self, bucket: str, key: str, path: str, *, content_type: str) -> None:
        with open(path, "rb") as f:
            self.objects[(bucket, key)] = f.read()

    def store_result_file(
        self, bucket: str, key: str, path: str, *, content_type: str, job_id: str, sha256: str | None = None
    ) -> StoredResult:
        with open(path, "rb") as f:
            return self.store_result(bucket, key, iter([f.read()]), content_type=content_type, job_id=job_id)

    def store_result(
        self, bucket: str, key: str, chunks: Iterator[bytes], *, content_type: str, job_id: str
    ) -> StoredResult:
        if self.owners.get((bucket, key)) == job_id:
            data = self.objects[(bucket, key)]
        else:
            data = b"".join(chunks)
            self.objects[(bucket, key)] = data
            self.owners[(bucket, key)] = job_id
            self.result_writes += 1
        return StoredResult(bucket, key, len(data), hashlib.sha256(data).hexdigest(), content_type)

    def put_input(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        self.objects[(bucket, key)] = data

    def put_new(self, bucket: str, key: str, data: bytes, *, content_type: str) -> bool:
        if (bucket, key) in self.objects:
            return False
        self.objects[(bucket, key)] = data
        return True

    def presign_put(self, bucket: str, key: str, *, content_type: str, expires_seconds: int) -> str:
        return f"https://{bucket}.s3.example.com/{key}?put"

    def presign_get(self, bucket: str, key: str, *, version_id: str | None, expires_seconds: int) -> str:
        return f"https://{bucket}.s3.example.com/{key}?get"


class RecordingQueue:
    """RequestQueue that keeps what is sent, for the test to deliver."""

    def __init__(self) -> None:
        self.sent: list[JobRequest] = []

    def send(self, request: JobRequest) -> None:
        self.sent.append(request)


class RecordingScheduler:
    """CheckScheduler that records ``(job_id, delay_seconds, check)``."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[str, int, int]] = []
        self.tasks: list[str | None] = []
        self.videos: list[bool] = []

    def schedule(
        self, job_id: str, *, delay_seconds: int, check: int, task_id: str | None = None, video: bool = False
    ) -> None:
        self.tasks.append(task_id)
        self.videos.append(video)
        self.scheduled.append((job_id, delay_seconds, check))


@dataclass
class FakeProvider:
    """A provider whose answers the test scripts."""

    name: str = "fake"
    uses_webhook: bool = True
    json_callbacks: bool = False
    image_limits: ImageLimits = field(default_factory=lambda: ImageLimits(max_side=2048, max_bytes=10 * 1024 * 1024))
    result_hosts: tuple[str, ...] = (RESULT_HOST,)
    create_errors: list[Exception] = field(default_factory=list)
    get_errors: list[Exception] = field(default_factory=list)
    status: TaskStatus = TaskStatus.RUNNING
    result_url: str | None = f"https://{RESULT_HOST}/result.png"
    error: Exception | None = None
    creates: list[tuple[TaskInput, Webhook | None]] = field(default_factory=list)
    gets: int = 0
    sent_video_urls: list[tuple[str, str]] = field(default_factory=list)

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        self.creates.append((task, webhook))
        if task.video_urls is not None:  # as the real adapters do: the video is stored and sent by URL in the create
            self.sent_video_urls.append(task.video_urls())
        if self.create_errors:
            raise self.create_errors.pop(0)
        return f"task-{len(self.creates)}"

    def get_task(self, task_id: str) -> TaskSnapshot:
        self.gets += 1
        if self.get_errors:
            raise self.get_errors.pop(0)
        return TaskSnapshot(
            task_id,
            self.status,
            result_url=self.result_url if self.status is TaskStatus.SUCCEEDED else None,
            error=self.error,
        )

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-webhook-secret")

    def task_id_from_callback(self, body: bytes) -> str | None:
        return body.decode() or None

    def quota_delay(self) -> float | None:
        return None


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    """A pipeline wired to fakes, and the fakes, for a test to drive and inspect."""

    pipeline: Pipeline
    store: MemoryJobStore
    objects: MemoryObjects
    scheduler: RecordingScheduler
    provider: FakeProvider
    clock: Clock
    served: dict[str, bytes]
    sleep: Callable[[float], None] = time.sleep

    @property
    def ports(self) -> Ports:
        """The adapters the pipeline runs over."""
        return self.pipeline.ports

    def rewire(
        self,
        *,
        limiter: RateLimiter | object | None = ...,
        sleep: Callable[[float], None] | None = None,
        providers: Mapping[str, Provider] | None = None,
        requeue: RequestQueue | None = None,
        matcher: FaceMatcher | None = None,
        inputs: InputStore | None = None,
        **settings: Any,
    ) -> Pipeline:
        """Build the pipeline again over the same fakes, with another limiter, sleep, providers or settings (as a
        deployment with that configuration would be wired)."""
        ports = self.pipeline.ports
        if limiter is not ...:
            ports = replace(ports, limiter=limiter)  # type: ignore[arg-type]
        if providers is not None:
            ports = replace(ports, providers=providers)
        if requeue is not None:
            ports = replace(ports, requeue=requeue)
        if matcher is not None:
            ports = replace(ports, matcher=matcher)
        if inputs is not None:
            ports = replace(ports, inputs=inputs)
        self.sleep = sleep or self.sleep
        self.pipeline = Pipeline(ports, replace(self.pipeline.settings, **settings), clock=self.clock, sleep=self.sleep)
        return self.pipeline


def make_world(*, result: bytes | None = None, result_max_bytes: int = 1024 * 1024) -> World:
    """Build a pipeline over fakes; the result host serves ``result`` (a PNG by default)."""
    served = {"/result.png": result if result is not None else _png()}

    def handler(request: httpx.Request) -> httpx.Response:
        body = served.get(request.url.path)
        if body is None:
            return httpx.Response(404)
        content_type = "video/mp4" if request.url.path.endswith(".mp4") else "image/png"
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    fetcher = ResultFetcher(
        httpx.Client(transport=httpx.MockTransport(handler)),
        max_bytes=result_max_bytes,
        resolve=lambda host, port: ["93.184.216.34"],
    )
    store, objects, scheduler, provider, clock = (
        MemoryJobStore(),
        MemoryObjects(),
        RecordingScheduler(),
        FakeProvider(),
        Clock(),
    )
    pipeline = Pipeline(
        Ports(
            store=store,
            objects=objects,
            scheduler=scheduler,
            providers={"fake": provider},
            fetcher=fetcher,
            signing_key=SIGNING_KEY,
        ),
        Settings(
            results_bucket="results",
            callback_base_url="https://api.example.com",
            job_deadline_seconds=600,
            max_input_bytes=20 * 1024 * 1024,
            max_submit_attempts=3,
            poll_delays={name: (10.0, 2.0, 60.0) for name in ("fake", "backup", "third")},
        ),
        clock=clock,
    )
    objects.objects[("inputs", "incoming/obama/target.jpg")] = jpeg()
    objects.objects[("inputs", "faces/obama.jpg")] = jpeg(color=(10, 20, 30))
    return World(pipeline, store, objects, scheduler, provider, clock, served)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()
