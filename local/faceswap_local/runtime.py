"""The local runtime: what Lambda and API Gateway do, for the template's functions, in one process.

- SQS event sources: a thread per queue long-polls it and calls the function's handler with a Lambda-shaped
  SQS event (``Records`` with ``messageId``, ``receiptHandle``, ``body``, ``attributes``…); messages the
  handler reports as failed (``batchItemFailures``) or all of them, if it raises, are made visible again
  after ``retry_delay`` seconds (on AWS: the queue's visibility timeout), and the queue's redrive policy
  moves them to its DLQ after ``maxReceiveCount`` receives. With ``Runtime.s3_events.enabled`` every S3 event
  notification is delivered twice (S3 and SQS deliver at least once): :class:`S3EventDuplicator`.
- DynamoDB stream event sources: a thread reads the table's stream and calls the handler with
  ``Records`` as Lambda delivers them; a failed batch is retried, then sent to the ``OnFailure`` queue.
- HttpApi event sources: :class:`Gateway` serves the routes on loopback as API Gateway HTTP API payload 2.0
  events.

Handlers are the real modules from ``functions/``, imported with the environment the template gives them
(resolved to the local resources) plus the local configuration (endpoint URL, loopback allowance).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from faceswap_cli.sigv4 import verify
from faceswap_local.loopback import LoopbackServer
from faceswap_local.stack import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, AwsStack, FunctionSpec, free_port

logger = logging.getLogger("faceswap_local.runtime")

# Powertools warns on every invocation that records no metric (an S3 test event, a stream record that ends no
# job); on Lambda that goes to CloudWatch, here it would drown the demo's output.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object the handlers and Powertools read."""

    function_name: str
    timeout_seconds: int
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(spec: FunctionSpec) -> Handler:
    """Import ``functions/<name>/app.py`` under a unique module name and return its handler."""
    module_name, attribute = spec.handler.rsplit(".", 1)
    path = spec.code_dir / f"{module_name}.py"
    unique = f"faceswap_function_{spec.logical_id}"
    module_spec = importlib.util.spec_from_file_location(unique, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[unique] = module
    module_spec.loader.exec_module(module)
    return getattr(module, attribute)


OWN_ENVIRONMENT = frozenset({"MAX_RECEIVE_COUNT"})
"""Variables whose value differs between functions. The functions share one process here, so these may be read
only while a function's module is imported (its ``Config.from_env()``); see :meth:`Runtime.start`."""


def function_environment(stack: AwsStack, overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment every local function sees: the template's (merged over functions) plus ``overrides``.

    Variables in :data:`OWN_ENVIRONMENT` are left out (each function gets its own value while it is imported).

    Raises ``ValueError`` if two functions give another variable different values (they share a process here).
    """
    env: dict[str, str] = {}
    for spec in stack.functions.values():
        for name, value in spec.environment.items():
            if name in overrides or name in OWN_ENVIRONMENT:
                continue
            if name in env and env[name] != value:
                raise ValueError(f"functions disagree on {name}; the local runtime shares one environment")
            env[name] = value
    return {**env, **overrides}


_invoking = threading.local()


def current_function() -> str | None:
    """The logical id of the function whose invocation runs on this thread, or ``None`` (e.g. an event source's
    own polling)."""
    return getattr(_invoking, "function", None)


class Invoker:
    """Calls a function's handler as Lambda would, one invocation at a time per function (like concurrency 1)."""

    def __init__(self, spec: FunctionSpec, handler: Handler) -> None:
        self.spec = spec
        self.handler = handler
        self.invocations = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> Any:
        with self._lock:
            self.invocations += 1
            _invoking.function = self.spec.logical_id
            try:
                return self.handler(event, LambdaContext(self.spec.logical_id, self.spec.timeout))
            finally:
                _invoking.function = None


class S3EventDuplicator:
    """Delivers every S3 event notification a queue receives a second time, as S3 and SQS may (at least once).

    The first time a poller receives a message whose body is an S3 event (``Records`` from ``aws:s3``), a copy
    of it is sent to the same queue, so the function gets the same event again in a later, separate delivery.
    The copy, or the original received again after a failure, is not copied again: each event body is
    duplicated once.

    Parameters
    ----------
    enabled
        Whether to duplicate; may be switched while the runtime runs (``Runtime.s3_events.enabled``).

    Attributes
    ----------
    duplicated
        S3 event messages copied so far.
    """

    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self.duplicated = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def copy_needed(self, body: str) -> bool:
        """Whether ``body`` is an S3 event not copied before (and remember it as copied)."""
        if not self.enabled or not _is_s3_event(body):
            return False
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        with self._lock:
            if digest in self._seen:
                return False
            self._seen.add(digest)
            self.duplicated += 1
            return True


def _is_s3_event(body: str) -> bool:
    try:
        records = json.loads(body).get("Records")
    except (ValueError, AttributeError):
        return False
    return isinstance(records, list) and any(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)


class SqsPoller(threading.Thread):
    """Long-polls one queue and invokes the function with SQS events (see the module docstring)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        invoker: Invoker,
        *,
        batch_size: int,
        stop: threading.Event,
        retry_delay: int,
        duplicator: S3EventDuplicator | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"sqs-{invoker.spec.logical_id}")
        self._sqs, self._url, self._arn, self._invoke = sqs, queue_url, queue_arn, invoker
        self._batch, self._stop, self._retry_delay = min(batch_size, 10), stop, retry_delay
        self._duplicator = duplicator

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll_once()
            except Exception:
                logger.exception("sqs poller error")
                time.sleep(0.5)

    def _poll_once(self) -> None:
        messages = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return
        if self._duplicator is not None:
            for message in messages:
                if self._duplicator.copy_needed(message["Body"]):
                    self._sqs.send_message(QueueUrl=self._url, MessageBody=message["Body"])
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self._arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }
        try:
            response = self._invoke(event) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:
            logger.exception("handler %s raised", self._invoke.spec.logical_id)
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                self._sqs.change_message_visibility(
                    QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self._retry_delay
                )
            else:
                self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])


class StreamPoller(threading.Thread):
    """Reads a DynamoDB stream and invokes the function with its records (see the module docstring)."""

    def __init__(
        self,
        streams: Any,
        sqs: Any,
        stream_arn: str,
        invoker: Invoker,
        *,
        batch_size: int,
        max_retries: int,
        on_failure_queue_url: str | None,
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True, name=f"stream-{invoker.spec.logical_id}")
        self._streams, self._sqs, self._arn, self._invoke = streams, sqs, stream_arn, invoker
        self._batch, self._retries, self._dlq, self._stop = batch_size, max_retries, on_failure_queue_url, stop

    def run(self) -> None:
        iterators: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
                for shard in shards:
                    shard_id = shard["ShardId"]
                    if shard_id not in iterators:
                        iterators[shard_id] = self._streams.get_shard_iterator(
                            StreamArn=self._arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                        )["ShardIterator"]
                    response = self._streams.get_records(ShardIterator=iterators[shard_id], Limit=self._batch)
                    iterators[shard_id] = response["NextShardIterator"]
                    if response["Records"]:
                        self._deliver(response["Records"])
                        continue
                time.sleep(0.2)
            except Exception:
                logger.exception("stream poller error")
                time.sleep(0.5)

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            record.setdefault("eventSourceARN", self._arn)
            for key in ("ApproximateCreationDateTime",):
                value = record.get("dynamodb", {}).get(key)
                if isinstance(value, datetime):
                    record["dynamodb"][key] = value.timestamp()
        pending = records
        for _attempt in range(self._retries + 1):
            try:
                response = self._invoke({"Records": pending}) or {}
                failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            except Exception:
                logger.exception("handler %s raised", self._invoke.spec.logical_id)
                failed = {r["dynamodb"]["SequenceNumber"] for r in pending}
            if not failed:
                return
            first = min(i for i, r in enumerate(pending) if r["dynamodb"]["SequenceNumber"] in failed)
            pending = pending[first:]
            time.sleep(0.2)
        if self._dlq:
            self._sqs.send_message(
                QueueUrl=self._dlq,
                MessageBody=json.dumps(
                    {
                        "requestContext": {"condition": "RetryAttemptsExhausted"},
                        "records": len(pending),
                        "firstSequenceNumber": pending[0]["dynamodb"]["SequenceNumber"],
                    }
                ),
            )


@dataclass(frozen=True)
class Route:
    """One HttpApi route: ``method``, ``path`` (``/jobs/{job_id}``), its function, and whether IAM authorises it."""

    method: str
    path: str
    invoker: Invoker
    iam: bool


class Gateway(LoopbackServer):
    """Serves the template's HttpApi routes on loopback as API Gateway HTTP API payload 2.0 events.

    Routes authorised with ``AWS_IAM`` need a valid SigV4 signature made with the local stack's credentials
    (checked with botocore's signer, :func:`faceswap_cli.sigv4.verify`); otherwise the gateway answers
    ``403 {"message": "Forbidden"}`` without invoking the function, as API Gateway does.
    """

    def __init__(self, routes: list[Route], *, credentials: tuple[str, str], port: int | None = None) -> None:
        self._routes = [(route, _route_regex(route.path)) for route in routes]
        self._credentials = credentials
        super().__init__(self._app, name="gateway", port=port)  # its url stands in for the HTTP API's invoke URL

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        for route, regex in self._routes:
            match = regex.fullmatch(request.path)
            if match and request.method == route.method:
                if route.iam:
                    # The URL exactly as sent: werkzeug's request.url re-encodes the path its own way.
                    raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
                    problem = verify(
                        request.method,
                        f"{request.scheme}://{request.host}{raw_path}",
                        {k.lower(): v for k, v in request.headers.items()},
                        request.get_data(),
                        access_key=self._credentials[0],
                        secret_key=self._credentials[1],
                        region=REGION,
                    )
                    if problem is not None:
                        logger.info("refused %s %s: %s", request.method, request.path, problem)
                        return Response(
                            json.dumps({"message": "Forbidden"}), status=403, content_type="application/json"
                        )(environ, start_response)
                response = self._invoke(route, request, match.groupdict())
                return response(environ, start_response)
        return Response(json.dumps({"message": "Not Found"}), status=404, content_type="application/json")(
            environ, start_response
        )

    def _invoke(self, route: Route, request: Request, path_parameters: dict[str, str]) -> Response:
        invoker, route_key = route.invoker, f"{route.method} {route.path}"
        body = request.get_data()
        try:
            text: str | None = body.decode("utf-8")
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
        now = datetime.now(UTC)
        event = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": request.path,
            "rawQueryString": request.query_string.decode("latin-1"),
            "headers": {**{k.lower(): v for k, v in request.headers.items()}, "x-forwarded-proto": "http"},
            "queryStringParameters": dict(request.args) or None,
            "pathParameters": path_parameters or None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": "local",
                "domainName": request.host,
                "domainPrefix": request.host.split(".")[0],
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": request.remote_addr or "127.0.0.1",
                    "userAgent": request.headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route_key,
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                **(
                    {
                        "authorizer": {
                            "iam": {
                                "accessKey": self._credentials[0],
                                "accountId": ACCOUNT_ID,
                                "callerId": "local",
                                "principalOrgId": None,
                                "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/local",
                                "userId": "local",
                            }
                        }
                    }
                    if route.iam
                    else {}
                ),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "body": text if body else None,
            "isBase64Encoded": encoded,
        }
        try:
            result = invoker(event)
        except Exception:
            logger.exception("handler %s raised", invoker.spec.logical_id)
            return Response(
                json.dumps({"message": "Internal Server Error"}), status=500, content_type="application/json"
            )
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode("utf-8")
        return Response(data, status=int(result.get("statusCode", 200)), headers=result.get("headers") or {})


def _route_regex(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", path)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(pattern)


class Runtime:
    """Runs the template's functions against the local stack: SQS and stream pollers, and the gateway.

    Parameters
    ----------
    stack
        The created AWS resources and function specs.
    overrides
        Local configuration added to every function's environment (endpoint URL, provider URLs…).
    retry_delay
        Seconds before a failed SQS message is delivered again.

    Attributes
    ----------
    s3_events
        Delivers every S3 event notification twice once enabled (:class:`S3EventDuplicator`); off at first.
    """

    def __init__(
        self,
        stack: AwsStack,
        overrides: Mapping[str, str],
        *,
        gateway_port: int | None = None,
        retry_delay: int = 2,
    ) -> None:
        self.stack = stack
        self.stop_event = threading.Event()
        self.gateway_port = gateway_port or free_port()
        self._overrides = dict(overrides)
        self._retry_delay = retry_delay
        self.s3_events = S3EventDuplicator()
        self.invokers: dict[str, Invoker] = {}
        self._threads: list[threading.Thread] = []
        self.gateway: Gateway | None = None

    @property
    def api_url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self) -> None:
        """Set the functions' environment, import their handlers, and start polling and serving."""
        os.environ.update(function_environment(self.stack, self._overrides))
        for logical_id, spec in self.stack.functions.items():
            own = {k: v for k, v in spec.environment.items() if k in OWN_ENVIRONMENT and k not in self._overrides}
            os.environ.update(own)  # read by the module's configuration as it is imported
            try:
                self.invokers[logical_id] = Invoker(spec, load_handler(spec))
            finally:
                for name in own:
                    os.environ.pop(name, None)
        sqs = self.stack.client("sqs")
        routes: list[Route] = []
        for logical_id, spec in self.stack.functions.items():
            invoker = self.invokers[logical_id]
            for event in spec.events.values():
                if event["Type"] == "SQS":
                    arn = event["Queue"]
                    url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
                    self._threads.append(
                        SqsPoller(
                            sqs,
                            url,
                            arn,
                            invoker,
                            batch_size=int(event.get("BatchSize", 10)),
                            stop=self.stop_event,
                            retry_delay=self._retry_delay,
                            duplicator=self.s3_events,
                        )
                    )
                elif event["Type"] == "DynamoDB":
                    dlq_arn = event.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                    dlq_url = sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[1])["QueueUrl"] if dlq_arn else None
                    self._threads.append(
                        StreamPoller(
                            self.stack.client("dynamodbstreams"),
                            sqs,
                            event["Stream"],
                            invoker,
                            batch_size=int(event.get("BatchSize", 100)),
                            max_retries=min(int(event.get("MaximumRetryAttempts", 3)), 5),
                            on_failure_queue_url=dlq_url,
                            stop=self.stop_event,
                        )
                    )
                elif event["Type"] == "HttpApi":
                    default = self.stack.default_authorizers.get(str(event.get("ApiId")), "NONE")
                    authorizer = event.get("Auth", {}).get("Authorizer", default)
                    routes.append(Route(event["Method"].upper(), event["Path"], invoker, iam=authorizer == "AWS_IAM"))
        self.gateway = Gateway(routes, credentials=(ACCESS_KEY_ID, SECRET_ACCESS_KEY), port=self.gateway_port)
        self.gateway.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the pollers (each finishes its current long poll) and the gateway."""
        self.stop_event.set()
        if self.gateway is not None:
            self.gateway.stop()
        for thread in self._threads:
            thread.join(timeout=5)
