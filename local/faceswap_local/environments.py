"""Lambda execution environments, locally: each one a child process running one function from its build output.

An :class:`ExecutionEnvironment` is a child process (``lambda_bootstrap.py``) that imports the function's handler
from its ``CodeUri`` and the shared layer built for this machine (:mod:`faceswap_local.build`), with exactly the
function's environment: the template's variables for that function, the local stack's overrides of them, and the
variables Lambda itself defines (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html, "Defined
runtime environment variables"). It runs one invocation at a time; an invocation still running at the function's
``Timeout`` is killed with its process, and the environment is gone, as on Lambda. An invocation after which
the process's peak resident memory is over the function's ``MemorySize`` fails (``Runtime.OutOfMemory``) and
the environment is ended, as Lambda ends one that runs out of memory (measured after the invocation, so a
function over its memory runs to its end here, where Lambda would stop it earlier).

A :class:`FunctionPool` holds a function's environments: an invocation takes an idle (warm) one, or starts a new
one while fewer than ``max_environments`` exist, or waits for one to be free.

What the environments report (AWS calls, HTTP requests, invocations, log lines) goes to :class:`Observer`\\ s, for the
IAM check and the benchmarks. Log lines go to this process's ``sys.stdout`` (CloudWatch Logs, locally) after
Lambda's application log-level filter: a JSON line whose ``level`` is below the function's ``ApplicationLogLevel``
is dropped, and a JSON line without a ``level`` counts as INFO
(https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger("faceswap_local.environments")

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
_HEADER = struct.Struct(">I")
LOG_LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "WARNING": 3, "ERROR": 4, "CRITICAL": 5, "FATAL": 5}


@dataclass(frozen=True)
class AwsCall:
    """An AWS API call (or presigned URL) a function made: ``params`` without bodies, ``error_code`` if refused."""

    function: str
    service: str
    operation: str
    params: dict[str, Any]
    error_code: str | None
    presigned: bool
    started: float
    ended: float


@dataclass(frozen=True)
class HttpCall:
    """An HTTP request a function sent with httpx: ``url`` without its query, ``status`` ``None`` if it failed."""

    function: str
    method: str
    url: str
    status: int | None
    started: float
    ended: float


@dataclass
class Outcome:
    """How an invocation ended: ``payload`` (the handler's answer) or ``error`` as Lambda reports it
    (``errorType``, ``errorMessage``); ``timed_out`` when it was killed at the function's timeout."""

    payload: Any = None
    error: dict[str, Any] | None = None
    timed_out: bool = False

    @property
    def failed(self) -> bool:
        """Whether the invocation failed (raised, timed out, or its environment died)."""
        return self.error is not None


@dataclass(frozen=True)
class Invocation:
    """One invocation as the runtime saw it: wall-clock ``started``/``ended`` (epoch s), ``init_seconds`` when
    it started a new environment (a cold start), the event, the outcome, and its environment's peak resident memory
    so far (``max_rss_mb``, as Lambda's ``Max Memory Used``)."""

    function: str
    event: dict[str, Any]
    outcome: Outcome
    started: float
    ended: float
    init_seconds: float | None = None
    max_rss_mb: float = 0.0


class Observer:
    """Receives what execution environments report; every method may be called from any thread. No-ops here."""

    def aws_call(self, call: AwsCall) -> None:
        """A function made an AWS API call or presigned a URL."""

    def http_call(self, call: HttpCall) -> None:
        """A function sent an HTTP request with httpx."""

    def invocation_started(self, function: str, event: dict[str, Any]) -> None:
        """An invocation of ``function`` starts in an environment (after its init, on a cold start)."""

    def invocation(self, invocation: Invocation) -> None:
        """An invocation ended."""

    def log_line(self, function: str, line: str) -> None:
        """A function wrote a line to its log (after the log-level filter)."""


@dataclass
class FunctionImage:
    """What an execution environment of one function is made from.

    Attributes
    ----------
    name
        The function's logical id (its name, locally).
    task_root
        Its ``CodeUri`` folder (``/var/task``).
    layer_roots
        The built layers' ``python`` folders (together, ``/opt/python``), in import order.
    handler
        ``module.attribute``.
    environment
        Exactly the environment its processes get.
    timeout_seconds
        The function's ``Timeout``, already scaled by the local stack's time scale.
    memory_mb
        ``MemorySize``.
    application_log_level
        ``LoggingConfig.ApplicationLogLevel`` (``None``: no filter).
    python
        The interpreter to run.
    function_arn
        The ARN the context object gives.
    observers
        Who receives what the environments report.
    log_stream
        Where log lines are written (``None``: this process's ``sys.stdout`` at the time).
    """

    name: str
    task_root: Path
    layer_roots: tuple[Path, ...]
    handler: str
    environment: dict[str, str]
    timeout_seconds: float
    memory_mb: int
    application_log_level: str | None
    python: str
    function_arn: str
    observers: list[Observer] = field(default_factory=list)
    log_stream: IO[str] | None = None

    def notify(self, call: Callable[[Observer], None]) -> None:
        """Call ``call`` with each observer; an observer that fails is logged and the others still called."""
        for observer in list(self.observers):
            try:
                call(observer)
            except Exception:
                logger.exception("observer failed")


class ExecutionEnvironment:
    """One child process running ``image``'s function; see the module docstring.

    The process starts (and imports the handler: the init phase) in the constructor's thread; an error there is
    kept and returned as the outcome of the first invocation, as Lambda reports ``Runtime.ImportModuleError``.
    """

    def __init__(self, image: FunctionImage) -> None:
        self.image = image
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        ours, theirs = socket.socketpair()
        self._socket = ours
        # Its own /tmp, as each Lambda execution environment has (and only it sees): what it leaves there stays for
        # its next invocation and goes with it (https://docs.aws.amazon.com/lambda/latest/dg/configuration-ephemeral-storage.html).
        self.tmp = tempfile.mkdtemp(prefix=f"lambda-tmp-{image.name}-")
        started = time.monotonic()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and bootstrap
            [
                image.python,
                "-I",
                "-S",
                str(BOOTSTRAP),
                str(theirs.fileno()),
                str(image.task_root),
                os.pathsep.join(str(root) for root in image.layer_roots),
            ],
            env={**image.environment, "TMPDIR": self.tmp},
            cwd=image.task_root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self._readers = [
            threading.Thread(target=self._read_channel, daemon=True, name=f"env-{image.name}"),
            threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True, name=f"log-{image.name}"),
            threading.Thread(target=self._pump, args=(self.process.stderr,), daemon=True, name=f"log-{image.name}"),
        ]
        for reader in self._readers:
            reader.start()
        self.max_rss_mb = 0.0
        first = self._replies.get()
        self.init_seconds = time.monotonic() - started
        self.init_error: dict[str, Any] | None = None
        if first is None or first.get("type") != "ready":
            self.init_error = (first or {}).get("error") or {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"the execution environment exited during init ({self.process.wait()})",
            }
            self.kill()

    @property
    def alive(self) -> bool:
        """Whether the process runs and can take another invocation."""
        return self.init_error is None and self.process.poll() is None

    def invoke(self, event: dict[str, Any]) -> Outcome:
        """Run one invocation; returns its outcome after at most the function's timeout (killing the process
        when it is reached)."""
        if self.init_error is not None:
            return Outcome(error=self.init_error)
        image = self.image
        request_id = str(uuid.uuid4())
        deadline = time.time() + image.timeout_seconds
        context = {
            "function_name": image.name,
            "function_version": "$LATEST",
            "invoked_function_arn": image.function_arn,
            "memory_limit_in_mb": image.memory_mb,
            "aws_request_id": request_id,
            "log_group_name": image.environment.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
            "log_stream_name": image.environment.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
            "deadline_epoch_ms": int(deadline * 1000),
        }
        data = json.dumps({"type": "invoke", "event": event, "context": context}).encode("utf-8")
        try:
            self._socket.sendall(_HEADER.pack(len(data)) + data)
            reply = self._replies.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            self.kill()
            seconds = f"{image.timeout_seconds:.2f}"
            message = f"Task timed out after {seconds} seconds"
            self._log(
                json.dumps({"level": "ERROR", "type": "platform.timeout", "message": message, "requestId": request_id})
            )
            return Outcome(
                error={"errorType": "Sandbox.Timedout", "errorMessage": message},
                timed_out=True,
            )
        except OSError as e:
            reply = None
            logger.warning("execution environment of %s gone: %s", image.name, e)
        if reply is None:
            self.kill()
            return Outcome(error={"errorType": "Runtime.ExitError", "errorMessage": "the execution environment exited"})
        self.max_rss_mb = float(reply.get("max_rss_mb") or 0)
        if self.max_rss_mb > image.memory_mb:
            # Lambda ends an environment that goes over its memory: the invocation fails and the environment is gone.
            self.kill()
            message = f"Runtime exited: memory {self.max_rss_mb:.0f} MB over the function's {image.memory_mb} MB"
            self._log(json.dumps({"level": "ERROR", "type": "platform.outOfMemory", "message": message}))
            return Outcome(error={"errorType": "Runtime.OutOfMemory", "errorMessage": message})
        if reply["type"] == "result":
            return Outcome(payload=reply.get("payload"))
        return Outcome(error=reply.get("error") or {"errorType": "Unknown", "errorMessage": ""})

    def kill(self) -> None:
        """End the process at once (SIGKILL), as Lambda ends an environment whose invocation timed out."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._socket.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- readers

    def _read_channel(self) -> None:
        stream = self._socket.makefile("rb")
        try:
            while True:
                header = stream.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                message = json.loads(stream.read(_HEADER.unpack(header)[0]))
                kind = message.get("type")
                if kind == "aws":
                    call = AwsCall(
                        function=self.image.name,
                        service=message["service"],
                        operation=message["operation"],
                        params=message["params"],
                        error_code=message.get("error_code"),
                        presigned=bool(message.get("presigned")),
                        started=message["started"],
                        ended=message["ended"],
                    )
                    self.image.notify(methodcaller("aws_call", call))
                elif kind == "http":
                    http = HttpCall(
                        function=self.image.name,
                        method=message["method"],
                        url=message["url"],
                        status=message.get("status"),
                        started=message["started"],
                        ended=message["ended"],
                    )
                    self.image.notify(methodcaller("http_call", http))
                else:
                    self._replies.put(message)
        except (OSError, ValueError):
            pass
        finally:
            self._replies.put(None)

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in iter(stream.readline, b""):
            self._log(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def _log(self, line: str) -> None:
        if not _passes_level_filter(line, self.image.application_log_level):
            return
        self.image.notify(lambda o: o.log_line(self.image.name, line))
        out = self.image.log_stream or sys.stdout
        try:
            out.write(line + "\n")
            out.flush()
        except (ValueError, OSError):
            pass  # stdout closed (the process is ending)


def _passes_level_filter(line: str, level: str | None) -> bool:
    """Lambda's application log-level filter for the JSON log format (see the module docstring)."""
    if level is None or not line.startswith("{"):
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return True
    if not isinstance(record, dict):
        return True
    line_level = str(record.get("level", "INFO")).upper()
    return LOG_LEVELS.get(line_level, LOG_LEVELS["INFO"]) >= LOG_LEVELS.get(level.upper(), 0)


class FunctionPool:
    """A function's execution environments: warm ones reused, new ones started while fewer than ``max_environments``
    exist and all are busy, otherwise the invocation waits for one.

    Attributes
    ----------
    invocations
        Invocations run so far.
    environments_started
        Execution environments started so far (cold starts).
    """

    def __init__(self, image: FunctionImage, *, max_environments: int) -> None:
        self.image = image
        self.max_environments = max_environments
        self.invocations = 0
        self.environments_started = 0
        self._idle: list[ExecutionEnvironment] = []
        self._count = 0
        self._busy = 0
        self._peak = 0
        self._closed = False
        self._changed = threading.Condition()

    @property
    def name(self) -> str:
        """The function's logical id."""
        return self.image.name

    @property
    def busy(self) -> int:
        """Invocations running now."""
        return self._busy

    @property
    def peak_concurrency(self) -> int:
        """The most invocations that ran at once."""
        return self._peak

    def invoke(self, event: dict[str, Any]) -> Outcome:
        """Run ``event`` in an execution environment of this function; see the class docstring."""
        environment, init_seconds = self._acquire()
        self.image.notify(lambda o: o.invocation_started(self.name, event))
        started = time.time()
        try:
            outcome = environment.invoke(event)
        finally:
            self._release(environment)
        invocation = Invocation(
            self.name, event, outcome, started, time.time(), init_seconds, max_rss_mb=environment.max_rss_mb
        )
        self.image.notify(lambda o: o.invocation(invocation))
        return outcome

    def provision(self, count: int) -> None:
        """Start environments (at once) until ``count`` are idle and warm (as far as ``max_environments`` allows),
        as Lambda's provisioned concurrency does: what a test needs so that invocations it starts together run
        together, none held by a cold start."""
        with self._changed:
            missing = max(0, min(count - len(self._idle), self.max_environments - self._count))
            self._count += missing
        started: list[ExecutionEnvironment] = []
        lock = threading.Lock()

        def start() -> None:
            environment = ExecutionEnvironment(self.image)
            with lock:
                started.append(environment)

        threads = [threading.Thread(target=start) for _ in range(missing)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._changed:
            self._count -= missing - len(started)
            self.environments_started += len(started)
            self._idle.extend(started)
            self._changed.notify_all()

    def _acquire(self) -> tuple[ExecutionEnvironment, float | None]:
        with self._changed:
            while True:
                if self._closed:
                    raise RuntimeError(f"{self.name}: the runtime is stopping")
                if self._idle:
                    environment = self._idle.pop()
                    self._mark_busy()
                    return environment, None
                if self._count < self.max_environments:
                    self._count += 1
                    self._mark_busy()
                    break
                self._changed.wait()
        try:
            environment = ExecutionEnvironment(self.image)
        except BaseException:
            with self._changed:
                self._count -= 1
                self._busy -= 1
                self._changed.notify_all()
            raise
        with self._changed:
            self.environments_started += 1
        return environment, environment.init_seconds

    def _mark_busy(self) -> None:
        self.invocations += 1
        self._busy += 1
        self._peak = max(self._peak, self._busy)

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._changed:
            self._busy -= 1
            if environment.alive and not self._closed:
                self._idle.append(environment)
            else:
                self._count -= 1
                if environment.alive:
                    environment.kill()
            self._changed.notify_all()

    def close(self) -> None:
        """Stop every idle environment; busy ones stop when their invocation ends."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._changed.notify_all()
        for environment in idle:
            environment.kill()


def lambda_environment(
    *,
    name: str,
    variables: Mapping[str, str],
    region: str,
    task_root: Path,
    credentials: tuple[str, str],
    memory_mb: int,
    handler: str,
    log_format: str | None,
    application_log_level: str | None,
) -> dict[str, str]:
    """The environment of one function's processes: its ``variables`` plus the ones Lambda defines.

    Lambda's reserved variables (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html):
    ``_HANDLER``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, ``AWS_EXECUTION_ENV``, ``AWS_LAMBDA_FUNCTION_NAME``,
    ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_LAMBDA_FUNCTION_VERSION``, ``AWS_LAMBDA_INITIALIZATION_TYPE``,
    ``AWS_LAMBDA_LOG_GROUP_NAME``, ``AWS_LAMBDA_LOG_STREAM_NAME``, the role's credentials, ``LAMBDA_TASK_ROOT``,
    ``LAMBDA_RUNTIME_DIR``, ``TZ``; with the JSON log format ``AWS_LAMBDA_LOG_FORMAT`` and ``AWS_LAMBDA_LOG_LEVEL``.
    Shared credential and config files are pointed at nothing: a Lambda function has none.
    """
    env = {
        **variables,
        "_HANDLER": handler,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_SESSION_TOKEN": "local",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    if log_format:
        env["AWS_LAMBDA_LOG_FORMAT"] = log_format
        if application_log_level and log_format.upper() == "JSON":
            env["AWS_LAMBDA_LOG_LEVEL"] = application_log_level
    return env
