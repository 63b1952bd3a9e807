"""In-memory fakes of the domain's ports, for testing :mod:`faceswap.jobs` without AWS or HTTP."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import Image

from faceswap.errors import ImageTooLarge, InputNotFound
from faceswap.fetch import ResultFetcher
from faceswap.images import ImageLimits
from faceswap.jobs import Pipeline, Settings
from faceswap.model import Job, JobState, StoredResult, TaskSnapshot, TaskStatus
from faceswap.ports import TaskInput, Webhook

SIGNING_KEY = b"unit-test-signing-key"
RESULT_HOST = "results.example.com"


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    """A small JPEG made in memory."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


class MemoryJobStore:
    """JobStore over a dict, with the same conditional semantics as the DynamoDB adapter."""

    def __init__(self) -> None:
        self.rows: dict[str, Job] = {}
        self.writes = 0

    def create(self, job: Job) -> bool:
        if job.job_id in self.rows:
            return False
        self.writes += 1
        self.rows[job.job_id] = job
        return True

    def get(self, job_id: str) -> Job | None:
        return self.rows.get(job_id)

    def transition(
        self, job_id: str, *, from_states: Iterable[JobState], to_state: JobState, changes: Mapping[str, Any]
    ) -> Job | None:
        return self._update(job_id, from_states, {**changes, "state": to_state})

    def update(
        self,
        job_id: str,
        *,
        in_states: Iterable[JobState],
        changes: Mapping[str, Any],
        require_absent: str | None = None,
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        job = self.rows.get(job_id)
        if job is not None and require_absent and getattr(job, require_absent) is not None:
            return None
        if job is not None and any(getattr(job, name) != value for name, value in (expected or {}).items()):
            return None
        return self._update(job_id, in_states, changes)

    def _update(self, job_id: str, states: Iterable[JobState], changes: Mapping[str, Any]) -> Job | None:
        job = self.rows.get(job_id)
        if job is None or job.state not in set(states):
            return None
        self.writes += 1
        self.rows[job_id] = replace(
            job, **{name: _default(name) if value is None else value for name, value in changes.items()}
        )
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

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.objects

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


class RecordingScheduler:
    """CheckScheduler that records ``(job_id, delay_seconds, check)``."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[str, int, int]] = []

    def schedule(self, job_id: str, *, delay_seconds: int, check: int) -> None:
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

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        self.creates.append((task, webhook))
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

    def poll_delays(self) -> tuple[float, float, float]:
        return (10.0, 2.0, 60.0)

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


def make_world(*, result: bytes | None = None, result_max_bytes: int = 1024 * 1024) -> World:
    """Build a pipeline over fakes; the result host serves ``result`` (a PNG by default)."""
    served = {"/result.png": result if result is not None else _png()}

    def handler(request: httpx.Request) -> httpx.Response:
        body = served.get(request.url.path)
        if body is None:
            return httpx.Response(404)
        return httpx.Response(200, content=body, headers={"content-type": "image/png"})

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
        store=store,
        objects=objects,
        scheduler=scheduler,
        providers={"fake": provider},
        fetcher=fetcher,
        signing_key=SIGNING_KEY,
        settings=Settings(
            results_bucket="results",
            callback_base_url="https://api.example.com",
            job_deadline_seconds=600,
            max_submit_attempts=3,
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
