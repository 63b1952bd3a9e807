"""The local stack with instruments: invocation timings, AWS and provider calls, and log bytes, per function.

- **Invocations.** Each function's handler is wrapped after the runtime imported it
  (``stack.runtime.invokers[logical_id].handler``), so every invocation is timed (``perf_counter``) and its
  outcome noted: the callback's answer names the job and its state, the publisher's stream records name the
  jobs that ended. Waiting for a job to end needs no polling of the table.
- **AWS requests.** Every boto3 session created from now on (the handlers' default session and the one
  Powertools Parameters makes for Secrets Manager) gets a ``before-parameter-build`` handler on its event
  system (emitted once per API call, with its parameters); a call is counted by service and operation
  (DynamoDB operations as ``Operation:LogicalTableId``) against the function whose invocation is running on
  that thread (:func:`faceswap_local.runtime.current_function`).
- **Provider HTTP calls.** ``httpx.Client.send`` is wrapped the same way (create, read, result download).
- **Log bytes.** The functions log to stdout (as on Lambda); stdout is a stream that counts the bytes per
  function and writes them to a log file.
"""

from __future__ import annotations

import contextlib
import io
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

from faceswap_local.runtime import current_function

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

    @property
    def seconds(self) -> float:
        """Wall-clock duration of the handler call."""
        return self.ended - self.started


class Recorder:
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

    # ------------------------------------------------------------------------------------------ attribution

    def origin(self) -> str | None:
        """The function whose invocation runs on this thread, ``event-source:<thread>``, or ``None``."""
        function = current_function()
        if function:
            return function
        name = threading.current_thread().name
        if name.startswith(("sqs-", "stream-")):
            return f"event-source:{name}"
        return None

    def reset_counts(self) -> None:
        """Forget the AWS calls, HTTP calls and log bytes counted so far (invocations are kept)."""
        with self._lock:
            self.aws_calls.clear()
            self.http_calls.clear()
            self.log_bytes.clear()

    # ---------------------------------------------------------------------------------------------- hooks

    def install(self) -> None:
        """Hook boto3 sessions and ``httpx.Client.send``; undone by :meth:`uninstall`."""
        recorder = self
        original_init = boto3.session.Session.__init__

        def init(session: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
            original_init(session, *args, **kwargs)
            session.events.register("before-parameter-build", recorder._on_aws_call)

        boto3.session.Session.__init__ = init  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(boto3.session.Session, "__init__", original_init))
        if boto3.DEFAULT_SESSION is not None:
            boto3.DEFAULT_SESSION.events.register("before-parameter-build", self._on_aws_call)

        original_send = httpx.Client.send

        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            origin = recorder.origin()
            if origin is not None:
                with recorder._lock:
                    recorder.http_calls[(origin, recorder._provider(request.url), _http_kind(request))] += 1
            return original_send(client, request, **kwargs)

        httpx.Client.send = send  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(httpx.Client, "send", original_send))

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        while self._undo:
            self._undo.pop()()

    def _on_aws_call(self, model: Any, params: Any = None, **_: Any) -> None:
        origin = self.origin()
        if origin is None:
            return
        operation = model.name
        table = params.get("TableName") if isinstance(params, dict) else None
        if isinstance(table, str):
            operation += ":" + table.rsplit("-", 1)[-1]  # local tables are "<stack>-<LogicalId>"
        with self._lock:
            self.aws_calls[(origin, model.service_model.service_name, operation)] += 1

    def _provider(self, url: httpx.URL) -> str:
        base = f"{url.scheme}://{url.host}:{url.port}"
        return self.providers.get(base, url.host or "?")

    def count_log(self, text: str) -> None:
        """Count ``text`` written to stdout against the running function."""
        origin = self.origin() or "other"
        with self._lock:
            self.log_bytes[origin] += len(text.encode("utf-8", "replace"))

    # ---------------------------------------------------------------------------------------- invocations

    def wrap(
        self, function: str, handler: Callable[[dict[str, Any], Any], Any]
    ) -> Callable[[dict[str, Any], Any], Any]:
        """``handler`` timed, its invocations recorded as ``function``'s."""

        def timed(event: dict[str, Any], context: Any) -> Any:
            with self._lock:
                self.running += 1
            wall, started = time.time(), time.perf_counter()
            result: Any = None
            error: str | None = None
            try:
                result = handler(event, context)
                return result
            except BaseException as e:
                error = f"{type(e).__name__}: {e}"
                raise
            finally:
                ended = time.perf_counter()
                invocation = Invocation(
                    function=function,
                    started=started,
                    ended=ended,
                    wall_started=wall,
                    records=len(event.get("Records", [])) if isinstance(event, dict) else 0,
                    ended_jobs=_ended_jobs(event, result),
                    error=error,
                )
                with self._changed:
                    self.running -= 1
                    self.invocations.append(invocation)
                    for job_id, state in invocation.ended_jobs.items():
                        self.ended.setdefault(job_id, (state, ended))
                    self._changed.notify_all()

        return timed

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


def _http_kind(request: httpx.Request) -> str:
    if "/results/" in request.url.path:
        return "result_download"
    return "create" if request.method == "POST" else "read"


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


class CountingStdout(io.TextIOBase):
    """A text stream that counts what each function writes and passes it on to ``sink``."""

    def __init__(self, recorder: Recorder, sink: io.TextIOBase | Any) -> None:
        super().__init__()
        self._recorder = recorder
        self._sink = sink

    def writable(self) -> bool:
        """Always writable."""
        return True

    def write(self, text: str) -> int:
        """Count and pass on ``text``."""
        self._recorder.count_log(text)
        self._sink.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush the sink."""
        self._sink.flush()


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
    with log_file.open("w") as sink, contextlib.redirect_stdout(CountingStdout(recorder, sink)):
        recorder.install()
        stack = LocalStack(parameters=parameters, config=config, swap_fn=swap_fn)
        try:
            stack.start()
            assert stack.runtime is not None and stack.piapi is not None and stack.engine is not None
            recorder.providers = {stack.piapi.url: "piapi", stack.engine.url: "selfhosted"}
            for logical_id, invoker in stack.runtime.invokers.items():
                invoker.handler = recorder.wrap(logical_id, invoker.handler)
            yield stack
        finally:
            stack.stop()
            recorder.uninstall()
