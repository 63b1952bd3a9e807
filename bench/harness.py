"""The local stack with instruments: invocation timings, AWS and provider calls, and log bytes, per function.

The :class:`Recorder` is an observer of the local runtime (``faceswap_local.environments.Observer``): each execution
environment reports its function's invocations, AWS calls (with their parameters: DynamoDB operations are counted as
``Operation:LogicalTableId``), HTTP requests and log lines. Waiting for a job to end needs no polling of the table:
the callback's answer names the job and its state, the publisher's stream records name the jobs that ended.

The event sources' own AWS requests (receiving and deleting messages, reading the stream) are made in this process:
every boto3 session created from now on gets a ``before-parameter-build`` handler that counts the calls of the event
sources' threads as ``event-source:<thread>``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import boto3.session
import httpx

from faceswap_local.environments import AwsCall, HttpCall, Observer
from faceswap_local.runtime import OBSERVERS

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT"})


@dataclass
class Invocation:
    """One handler invocation as recorded."""

    function: str
    started: float
    ended: float
    wall_started: float
    records: int
    ended_jobs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    init_seconds: float | None = None

    @property
    def seconds(self) -> float:
        """Wall-clock duration of the handler call."""
        return self.ended - self.started


class Recorder(Observer):
    """Collects what the instruments see; thread-safe. See the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.aws_calls: Counter[tuple[str, str, str]] = Counter()
        self.http_calls: Counter[tuple[str, str, str]] = Counter()
        self.log_bytes: Counter[str] = Counter()
        self.invocations: list[Invocation] = []
        self.ended: dict[str, tuple[str, float]] = {}
        self.running = 0
        self.providers: dict[str, str] = {}
        self._undo: list[Callable[[], None]] = []

    def reset_counts(self) -> None:
        """Forget the AWS calls, HTTP calls and log bytes counted so far (invocations are kept)."""
        with self._lock:
            self.aws_calls.clear()
            self.http_calls.clear()
            self.log_bytes.clear()

    # ------------------------------------------------------------------------------------- the observer

    def invocation_started(self, function: str, event: dict[str, Any]) -> None:
        """Count a running invocation."""
        with self._lock:
            self.running += 1

    def invocation(self, invocation: Any) -> None:
        """Record an ended invocation (times converted to ``perf_counter``'s clock)."""
        offset = time.perf_counter() - time.time()
        event, outcome = invocation.event, invocation.outcome
        recorded = Invocation(
            function=invocation.function,
            started=invocation.started + offset,
            ended=invocation.ended + offset,
            wall_started=invocation.started,
            records=len(event.get("Records", [])) if isinstance(event, dict) else 0,
            ended_jobs=_ended_jobs(event, outcome.payload),
            error=(outcome.error or {}).get("errorMessage") if outcome.failed else None,
            init_seconds=invocation.init_seconds,
        )
        with self._changed:
            self.running -= 1
            self.invocations.append(recorded)
            for job_id, state in recorded.ended_jobs.items():
                self.ended.setdefault(job_id, (state, recorded.ended))
            self._changed.notify_all()

    def aws_call(self, call: AwsCall) -> None:
        """Count a function's AWS call."""
        if not call.presigned:
            self._count_aws(call.function, call.service, call.operation, call.params)

    def http_call(self, call: HttpCall) -> None:
        """Count a function's HTTP request by provider and kind."""
        url = httpx.URL(call.url)
        base = f"{url.scheme}://{url.host}:{url.port}"
        provider = self.providers.get(base, url.host or "?")
        with self._lock:
            self.http_calls[(call.function, provider, _http_kind(call.method, url.path))] += 1

    def log_line(self, function: str, line: str) -> None:
        """Count a function's log bytes."""
        with self._lock:
            self.log_bytes[function] += len(line.encode("utf-8", "replace")) + 1

    # -------------------------------------------------------------------------- the event sources' calls

    def install(self) -> None:
        """Observe every local runtime and hook boto3 sessions (the event sources'); undone by :meth:`uninstall`."""
        recorder = self
        OBSERVERS.append(self)
        self._undo.append(lambda: OBSERVERS.remove(self))
        original_init = boto3.session.Session.__init__

        def init(session: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
            original_init(session, *args, **kwargs)
            session.events.register("before-parameter-build", recorder._on_event_source_call)

        boto3.session.Session.__init__ = init  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(boto3.session.Session, "__init__", original_init))
        if boto3.DEFAULT_SESSION is not None:
            boto3.DEFAULT_SESSION.events.register("before-parameter-build", self._on_event_source_call)

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        while self._undo:
            self._undo.pop()()

    def _on_event_source_call(self, model: Any, params: Any = None, **_: Any) -> None:
        name = threading.current_thread().name
        if name.startswith(("sqs-", "stream-")):
            self._count_aws(f"event-source:{name}", model.service_model.service_name, model.name, params)

    def _count_aws(self, origin: str, service: str, operation: str, params: Any) -> None:
        table = params.get("TableName") if isinstance(params, dict) else None
        if isinstance(table, str):
            operation += ":" + table.rsplit("-", 1)[-1]  # local tables are "<stack>-<LogicalId>"
        with self._lock:
            self.aws_calls[(origin, service, operation)] += 1

    # ---------------------------------------------------------------------------------------- invocations

    def wait_ended(
        self, jobs: list[tuple[str, ...]], timeout: float, *, stall: float | None = None
    ) -> tuple[list[str], int]:
        """Wait until every job has ended (seen by a callback or the publisher).

        Each job is given as its candidate ids (an upload's id depends on whether the S3 event carries a
        version id; moto's does not). Gives up after ``timeout`` seconds, or once no job has ended for
        ``stall`` seconds. Returns the id that ended for each job (``""`` if none did) and how many did not.
        """
        now = time.monotonic()
        deadline, progress, done = now + timeout, now, -1
        with self._changed:
            while True:
                resolved = [next((c for c in candidates if c in self.ended), "") for candidates in jobs]
                missing = resolved.count("")
                now = time.monotonic()
                if len(jobs) - missing > done:
                    done, progress = len(jobs) - missing, now
                stalled = stall is not None and now - progress >= stall
                if not missing or now >= deadline or stalled:
                    return resolved, missing
                self._changed.wait(min(deadline - now, 0.5))

    def wait_quiet(self, seconds: float, timeout: float = 30.0) -> None:
        """Wait until no invocation has run for ``seconds`` (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = self.running > 0
                last = self.invocations[-1].ended if self.invocations else 0.0
            if not busy and time.perf_counter() - last >= seconds:
                return
            time.sleep(0.05)

    def invocations_between(self, start: float, end: float, function: str | None = None) -> list[Invocation]:
        """Invocations that started in ``[start, end]`` (``perf_counter`` times), of ``function`` if given."""
        with self._lock:
            return [
                i
                for i in self.invocations
                if start <= i.started <= end and (function is None or i.function == function)
            ]


def _http_kind(method: str, path: str) -> str:
    if "/results/" in path:
        return "result_download"
    return "create" if method == "POST" else "read"


def _ended_jobs(event: Any, result: Any) -> dict[str, str]:
    """Jobs an invocation reports ended: the callback's answer, or terminal images in stream records."""
    ended: dict[str, str] = {}
    if isinstance(result, dict) and isinstance(result.get("body"), str):
        try:
            body = json.loads(result["body"])
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") in TERMINAL_STATES and isinstance(body.get("job_id"), str):
            ended[body["job_id"]] = body["status"]
    if isinstance(event, dict):
        for record in event.get("Records", []):
            image = record.get("dynamodb", {}).get("NewImage") if isinstance(record, dict) else None
            if not image:
                continue
            state = image.get("state", {}).get("S")
            job_id = image.get("job_id", {}).get("S")
            if state in TERMINAL_STATES and job_id:
                ended[job_id] = state
    return ended


@contextlib.contextmanager
def instrumented_stack(
    recorder: Recorder,
    *,
    log_file: Path,
    swap_fn: Callable[[bytes, bytes, dict[str, Any]], bytes],
    parameters: Mapping[str, str],
    config: Mapping[str, str],
) -> Iterator[Any]:
    """Start :class:`faceswap_local.app.LocalStack` with the instruments installed; stop it afterwards.

    Parameters
    ----------
    recorder
        Receives the measurements.
    log_file
        Where the functions' logs go (they are counted on the way).
    swap_fn
        How the PiAPI emulator makes results.
    parameters, config
        Template parameter overrides and extra function environment for the local stack.
    """
    from faceswap_local.app import LocalStack

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as sink, contextlib.redirect_stdout(sink):
        recorder.install()
        stack = LocalStack(parameters=parameters, config=config, swap_fn=swap_fn)
        try:
            stack.start()
            assert stack.runtime is not None and stack.piapi is not None and stack.engine is not None
            recorder.providers = {stack.piapi.url: "piapi", stack.engine.url: "selfhosted"}
            yield stack
        finally:
            stack.stop()
            recorder.uninstall()
