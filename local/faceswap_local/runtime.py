"""The local runtime: what Lambda and API Gateway do for the template's functions, no kinder than they are.

Every invocation runs in an execution environment of its own function: a child process that imports the function
from its ``CodeUri`` and the shared layer as built for this machine, with exactly that function's environment
(:mod:`faceswap_local.environments`). Environments are reused while warm; new ones start when all are busy, up to:

- SQS event sources (:class:`SqsEventSource`): the mapping's ``MaximumConcurrency`` pollers, each receiving a batch
  with the queue's visibility timeout and invoking the function; a failed invocation (error, timeout, crash) leaves
  every message to come back when its visibility timeout ends (the queue's or the one the handler set); with
  ``ReportBatchItemFailures`` only the messages ``batchItemFailures`` names stay. The queue's redrive policy moves a
  message to its DLQ after ``maxReceiveCount`` receives. With ``Runtime.s3_events.enabled`` every S3 event
  notification is delivered twice (S3 and SQS deliver at least once): :class:`S3EventDuplicator`.
- DynamoDB stream event sources (:class:`StreamEventSource`): one invocation at a time per shard, the template's
  ``FilterCriteria``, ``MaximumRetryAttempts``, ``BisectBatchOnFunctionError`` and ``OnFailure`` destination.
- ScheduleV2 event sources (:class:`Schedule`): the function invoked with the schedule's ``Input`` at its rate.
- HttpApi event sources (:class:`Gateway`): the routes on loopback as API Gateway HTTP API payload 2.0 events, with
  the HTTP API's limits: 30 s integration timeout (503 to the caller while the function goes on) and Lambda's 6 MB
  synchronous payload limit (413).

A function's ``Timeout`` is enforced: an environment still running at its deadline is killed with its invocation.
Every duration the stack applies can be multiplied by one ``time_scale`` (timeouts here; the queues' visibility
timeouts and message delays in :mod:`faceswap_local.stack`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from werkzeug.wrappers import Request, Response

from faceswap_cli.sigv4 import verify
from faceswap_local.build import built_layers, lambda_python
from faceswap_local.environments import FunctionImage, FunctionPool, Observer, Outcome, lambda_environment
from faceswap_local.loopback import LoopbackServer
from faceswap_local.stack import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, AwsStack, FunctionSpec, free_port

logger = logging.getLogger("faceswap_local.runtime")

INTEGRATION_TIMEOUT_SECONDS = 30
"""API Gateway HTTP API's maximum integration timeout (https://docs.aws.amazon.com/apigateway/latest/developerguide/
http-api-quotas.html); the caller gets 503 Service Unavailable while the function goes on."""
SYNC_PAYLOAD_MAX_BYTES = 6 * 1024 * 1024
"""Lambda's limit on a synchronous invocation's request and response payloads
(https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html): a larger request is refused 413 before any
invocation; a larger answer is an invocation error (500)."""
HTTP_API_PAYLOAD_MAX_BYTES = 10 * 1024 * 1024
"""API Gateway HTTP API's own payload limit (http-api-quotas.html, "Payload size")."""


LOCAL_ONLY = frozenset(
    {
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_REKOGNITION",
        "RESULT_URL_ALLOW_LOOPBACK",
        "POLL_DELAYS",
        "POWERTOOLS_TRACE_DISABLED",
        "POWERTOOLS_METRICS_DISABLED",
    }
)
"""Local configuration every function gets although the template gives it to none: the endpoint of the moto server
(and of the local Rekognition, which moto does not compute: its CompareFaces answers the same whatever the faces),
the loopback allowance for result downloads from the emulators, quicker checks, tracing off (no X-Ray daemon) and
metrics on (their EMF lines go to the log, as on Lambda)."""


def function_variables(spec: FunctionSpec, overrides: Mapping[str, str]) -> dict[str, str]:
    """One function's own variables: the template's for it (Globals and its own, resolved to the local resources),
    each replaced by its override if there is one, plus the :data:`LOCAL_ONLY` overrides. An override of a variable
    the template does not give this function is not added: no function sees another's variables."""
    variables = {name: overrides.get(name, value) for name, value in spec.environment.items()}
    variables.update({name: value for name, value in overrides.items() if name in LOCAL_ONLY})
    return variables


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


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source sends for ``messages`` (as ``ReceiveMessage`` returned them)."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def sqs_messages_done(outcome: Outcome, message_ids: list[str], *, report_failures: bool) -> list[str]:
    """Which messages of a batch the SQS event source deletes after ``outcome``.

    As Lambda does (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): a failed
    invocation (an error, a timeout, a crash) deletes none, and every message comes back when its visibility timeout
    ends (the queue's, or the one the handler set); a successful one deletes all of them, except, with
    ``ReportBatchItemFailures``, those its ``batchItemFailures`` names. An answer that names an id not in the batch, or
    an empty one, counts as a failure of the whole batch.
    """
    if outcome.failed:
        return []
    if not report_failures:
        return list(message_ids)
    payload = outcome.payload if isinstance(outcome.payload, dict) else {}
    failures = payload.get("batchItemFailures") or []
    try:
        failed = {str(f["itemIdentifier"]) for f in failures}
    except (TypeError, KeyError):
        return []
    if not failed <= set(message_ids) or "" in failed:
        return []
    return [m for m in message_ids if m not in failed]


class SqsEventSource:
    """An SQS event source mapping: ``concurrency`` pollers, each receiving a batch and invoking the function.

    ``concurrency`` is the mapping's ``ScalingConfig.MaximumConcurrency`` (the most invocations it runs at once:
    https://docs.aws.amazon.com/lambda/latest/dg/API_ScalingConfig.html); what happens to a batch after the
    invocation is :func:`sqs_messages_done`. Messages are received with the queue's own visibility timeout, as Lambda
    receives them. With ``Runtime.s3_events.enabled`` every S3 event notification is delivered twice.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        function: FunctionPool,
        *,
        batch_size: int,
        concurrency: int,
        report_failures: bool,
        stop: threading.Event,
        duplicator: S3EventDuplicator | None = None,
    ) -> None:
        self._sqs, self._url, self._arn, self._function = sqs, queue_url, queue_arn, function
        self._batch, self._report_failures, self._stop = min(batch_size, 10), report_failures, stop
        self._duplicator = duplicator
        self.threads = [
            threading.Thread(target=self._run, daemon=True, name=f"sqs-{function.name}-{i}") for i in range(concurrency)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll_once()
            except Exception:
                if not self._stop.is_set():
                    logger.exception("sqs event source error")
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
        outcome = self._function.invoke(sqs_event(messages, self._arn))
        if outcome.failed:
            logger.info(
                "%s failed: %s", self._function.name, outcome.error.get("errorMessage") if outcome.error else ""
            )
        done = set(
            sqs_messages_done(outcome, [m["MessageId"] for m in messages], report_failures=self._report_failures)
        )
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if m["MessageId"] in done
        ]
        if entries:
            self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)


def matches_filter(record: Any, pattern: Any) -> bool:
    """Whether ``record`` matches an event filter ``pattern`` (the subset of Lambda's filter syntax the template
    uses: nested objects, lists of allowed values, ``{"exists": bool}``, ``{"prefix": str}``, ``{"anything-but":
    […]}``): https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html."""
    if isinstance(pattern, dict):
        if not isinstance(record, dict):
            return False
        for key, sub in pattern.items():
            if isinstance(sub, list) and any(isinstance(s, dict) and "exists" in s for s in sub):
                present = key in record
                if not any(isinstance(s, dict) and s.get("exists") == present for s in sub):
                    return False
                continue
            if key not in record or not matches_filter(record[key], sub):
                return False
        return True
    if isinstance(pattern, list):
        values = record if isinstance(record, list) else [record]
        return any(_matches_value(v, p) for v in values for p in pattern)
    return bool(record == pattern)


def _matches_value(value: Any, allowed: Any) -> bool:
    if isinstance(allowed, dict):
        if "prefix" in allowed:
            return isinstance(value, str) and value.startswith(allowed["prefix"])
        if "anything-but" in allowed:
            excluded = allowed["anything-but"]
            return value not in (excluded if isinstance(excluded, list) else [excluded])
        return False
    return bool(value == allowed)


class StreamEventSource(threading.Thread):
    """A DynamoDB stream event source mapping: one invocation at a time per shard (``ParallelizationFactor`` 1).

    As Lambda does (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html,
    https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html): records that match none of the
    ``FilterCriteria`` are dropped without an invocation; a failed batch is retried up to ``MaximumRetryAttempts``
    times (-1: until the record expires) from its first failed record (``ReportBatchItemFailures``), split in two on
    a function error first when ``BisectBatchOnFunctionError`` (splits do not count as retries); then it is sent to
    the ``OnFailure`` queue and the shard moves on.
    """

    def __init__(
        self,
        streams: Any,
        sqs: Any,
        stream_arn: str,
        function: FunctionPool,
        *,
        batch_size: int,
        max_retries: int,
        bisect: bool,
        filters: list[Any],
        on_failure_queue_url: str | None,
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True, name=f"stream-{function.name}")
        self._streams, self._sqs, self._arn, self._function = streams, sqs, stream_arn, function
        self._batch, self._retries, self._bisect, self._filters = batch_size, max_retries, bisect, filters
        self._dlq, self._stop = on_failure_queue_url, stop
        self.filtered_out = 0
        self._empty_passes = 0
        self._passed = threading.Condition()

    def caught_up(self, *, timeout: float) -> bool:
        """Wait until every record written to the stream before this call has been handled (delivered, filtered out
        or discarded): two passes over the shards that found nothing new. ``False`` after ``timeout`` seconds.

        Tests wait on this, not on a fixed time, before asserting that something did *not* happen downstream (no
        second event).
        """
        with self._passed:
            target = self._empty_passes + 2  # the pass under way may have started before the call
            return self._passed.wait_for(lambda: self._empty_passes >= target, timeout=timeout)

    def run(self) -> None:
        iterators: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
                found = False
                for shard in shards:
                    shard_id = shard["ShardId"]
                    if shard_id not in iterators:
                        iterators[shard_id] = self._streams.get_shard_iterator(
                            StreamArn=self._arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                        )["ShardIterator"]
                    response = self._streams.get_records(ShardIterator=iterators[shard_id], Limit=self._batch)
                    iterators[shard_id] = response["NextShardIterator"]
                    if response["Records"]:
                        self._deliver(shard_id, response["Records"])
                        found = True
                if not found:
                    with self._passed:
                        self._empty_passes += 1
                        self._passed.notify_all()
                time.sleep(0.2)
            except Exception:
                if not self._stop.is_set():
                    logger.exception("stream event source error")
                    time.sleep(0.5)

    def _deliver(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            record.setdefault("eventSourceARN", self._arn)
            value = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
            if isinstance(value, datetime):
                record["dynamodb"]["ApproximateCreationDateTime"] = value.timestamp()
        kept = [r for r in records if not self._filters or any(matches_filter(r, f) for f in self._filters)]
        self.filtered_out += len(records) - len(kept)
        if kept:
            self._invoke_until_done(shard_id, kept)

    def _invoke_until_done(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        pending, retries = records, 0
        while pending and not self._stop.is_set():
            outcome = self._function.invoke({"Records": pending})
            if outcome.failed and self._bisect and len(pending) > 1:
                half = len(pending) // 2
                self._invoke_until_done(shard_id, pending[:half])
                self._invoke_until_done(shard_id, pending[half:])
                return
            failed = self._failed(outcome, pending)
            if not failed:
                return
            pending = pending[min(i for i, r in enumerate(pending) if r["dynamodb"]["SequenceNumber"] in failed) :]
            if self._retries >= 0 and retries >= self._retries:
                self._discard(shard_id, pending)
                return
            retries += 1
            time.sleep(0.2)

    @staticmethod
    def _failed(outcome: Outcome, pending: list[dict[str, Any]]) -> set[str]:
        every = {r["dynamodb"]["SequenceNumber"] for r in pending}
        if outcome.failed:
            return every
        payload = outcome.payload if isinstance(outcome.payload, dict) else {}
        failed = {str(f.get("itemIdentifier")) for f in payload.get("batchItemFailures") or [] if isinstance(f, dict)}
        return failed if failed <= every else every

    def _discard(self, shard_id: str, pending: list[dict[str, Any]]) -> None:
        """Send the batch's description to the ``OnFailure`` queue (the shape Lambda sends for a stream)."""
        if not self._dlq:
            return
        self._sqs.send_message(
            QueueUrl=self._dlq,
            MessageBody=json.dumps(
                {
                    "requestContext": {
                        "condition": "RetryAttemptsExhausted",
                        "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self._function.name}",
                        "approximateInvokeCount": self._retries + 1,
                    },
                    "DDBStreamBatchInfo": {
                        "shardId": shard_id,
                        "startSequenceNumber": pending[0]["dynamodb"]["SequenceNumber"],
                        "endSequenceNumber": pending[-1]["dynamodb"]["SequenceNumber"],
                        "batchSize": len(pending),
                        "streamArn": self._arn,
                    },
                    "timestamp": datetime.now(UTC).isoformat(),
                }
            ),
        )


RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
RATE_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int:
    """Seconds between runs of an EventBridge Scheduler ``rate(N unit)`` expression; ``ValueError`` for another
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#rate-based)."""
    match = RATE.fullmatch(expression.strip())
    if match is None:
        raise ValueError(f"the local runtime runs rate() schedules only, not {expression!r}")
    return int(match.group(1)) * RATE_SECONDS[match.group(2).rstrip("s")]


class Schedule(threading.Thread):
    """A ``ScheduleV2`` event source (EventBridge Scheduler): invokes the function with the schedule's ``Input``
    every ``period`` seconds (the rate times the time scale), the first time one period after the start.
    :meth:`fire` runs it now, as a test does when it cannot wait for the period."""

    def __init__(
        self, name: str, function: FunctionPool, *, period: float, payload: Any, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True, name=f"schedule-{name}")
        self.function, self.period, self.payload, self._stop = function, period, payload, stop
        self.runs = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.fire()
            except Exception:
                if not self._stop.is_set():
                    logger.exception("schedule %s failed", self.name)

    def fire(self) -> Outcome:
        """Invoke the function once with the schedule's input (one run at a time)."""
        with self._lock:
            self.runs += 1
            return self.function.invoke(json.loads(json.dumps(self.payload)))


@dataclass(frozen=True)
class Route:
    """One HttpApi route: ``method``, ``path`` (``/jobs/{job_id}``), its function, and whether IAM authorises it."""

    method: str
    path: str
    function: FunctionPool
    iam: bool


class Gateway(LoopbackServer):
    """Serves the template's HttpApi routes on loopback as API Gateway HTTP API payload 2.0 events.

    Routes authorised with ``AWS_IAM`` need a valid SigV4 signature made with the local stack's credentials
    (checked with botocore's signer, :func:`faceswap_cli.sigv4.verify`); otherwise the gateway answers
    ``403 {"message": "Forbidden"}`` without invoking the function, as API Gateway does.

    Limits, as the HTTP API and Lambda apply them: a body over 10 MB is refused 413; an event over Lambda's 6 MB
    synchronous payload limit is refused 413 without an invocation; an invocation that has not answered after
    ``integration_timeout`` seconds gets 503 while it goes on in its environment; a function error, a timeout or
    an answer over 6 MB gets 500.
    """

    def __init__(
        self,
        routes: list[Route],
        *,
        credentials: tuple[str, str],
        port: int | None = None,
        integration_timeout: float = INTEGRATION_TIMEOUT_SECONDS,
    ) -> None:
        self._routes = [(route, _route_regex(route.path)) for route in routes]
        self._credentials = credentials
        self._integration_timeout = integration_timeout
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
        route_key = f"{route.method} {route.path}"
        if (request.content_length or 0) > HTTP_API_PAYLOAD_MAX_BYTES:
            return _message(413, "Request Entity Too Large")
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
        if len(json.dumps(event).encode("utf-8")) > SYNC_PAYLOAD_MAX_BYTES:
            return _message(413, "Request Entity Too Large")
        answered: dict[str, Outcome] = {}
        done = threading.Event()

        def invoke() -> None:
            try:
                answered["outcome"] = route.function.invoke(event)
            except Exception as e:  # the runtime is stopping
                answered["outcome"] = Outcome(error={"errorType": type(e).__name__, "errorMessage": str(e)})
            finally:
                done.set()

        threading.Thread(target=invoke, daemon=True, name=f"gateway-{route.function.name}").start()
        if not done.wait(self._integration_timeout):
            logger.info("%s did not answer within the integration timeout: 503", route_key)
            return _message(503, "Service Unavailable")
        outcome = answered["outcome"]
        if outcome.failed or not isinstance(outcome.payload, dict):
            logger.info("%s failed: %s", route.function.name, (outcome.error or {}).get("errorMessage"))
            return _message(500, "Internal Server Error")
        result = outcome.payload
        if len(json.dumps(result).encode("utf-8")) > SYNC_PAYLOAD_MAX_BYTES:
            return _message(500, "Internal Server Error")
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode("utf-8")
        return Response(data, status=int(result.get("statusCode", 200)), headers=result.get("headers") or {})


def _message(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status=status, content_type="application/json")


def _route_regex(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", path)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(pattern)


class Runtime:
    """Runs the template's functions against the local stack: event sources and the gateway, each invocation in
    an execution environment of its function (:mod:`faceswap_local.environments`).

    Parameters
    ----------
    stack
        The created AWS resources and function specs.
    overrides
        Local configuration: replaces the template's value of a variable a function has (provider base URLs, the
        callback base URL…) and adds the :data:`LOCAL_ONLY` ones (see :func:`function_variables`).
    gateway_port
        The gateway's port (a free one when ``None``).
    time_scale
        Multiplies every duration of the stack the runtime applies: functions' timeouts and the HTTP API's
        integration timeout (the moto server and :func:`faceswap_local.stack.create_stack` scale the queues').
    default_concurrency
        Environments per function where the template sets no limit (HTTP routes; SQS without
        ``MaximumConcurrency``).
    log_stream
        Where the functions' log lines are written (``None``: ``sys.stdout`` at the time of each line).

    Attributes
    ----------
    s3_events
        Delivers every S3 event notification twice once enabled (:class:`S3EventDuplicator`); off at first.
    functions
        Each function's :class:`FunctionPool`, by logical id.
    schedules
        Each ``ScheduleV2`` event source, as ``<function>.<event name>``.
    observers
        Who receives what execution environments report (starts as a copy of :data:`OBSERVERS`).
    """

    def __init__(
        self,
        stack: AwsStack,
        overrides: Mapping[str, str],
        *,
        gateway_port: int | None = None,
        time_scale: float = 1.0,
        default_concurrency: int = 10,
        log_stream: IO[str] | None = None,
    ) -> None:
        self.stack = stack
        self.stop_event = threading.Event()
        self.gateway_port = gateway_port or free_port()
        self.time_scale = time_scale
        self._overrides = dict(overrides)
        self._default_concurrency = default_concurrency
        self._log_stream = log_stream
        self.s3_events = S3EventDuplicator()
        self.functions: dict[str, FunctionPool] = {}
        self.observers: list[Observer] = list(OBSERVERS)
        self.stream_sources: list[StreamEventSource] = []
        self.schedules: dict[str, Schedule] = {}
        self._threads: list[threading.Thread] = []
        self.gateway: Gateway | None = None

    @property
    def api_url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def image(self, spec: FunctionSpec) -> FunctionImage:
        """What ``spec``'s execution environments are made from (its layers, environment, scaled timeout…)."""
        handler = spec.handler
        return FunctionImage(
            name=spec.logical_id,
            task_root=spec.code_dir.resolve(),
            layer_roots=built_layers(spec.layers),
            handler=handler,
            environment=lambda_environment(
                name=spec.logical_id,
                variables=function_variables(spec, self._overrides),
                region=REGION,
                task_root=spec.code_dir.resolve(),
                credentials=(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
                memory_mb=spec.memory_mb,
                handler=handler,
                log_format=spec.log_format,
                application_log_level=spec.application_log_level,
            ),
            timeout_seconds=spec.timeout * self.time_scale,
            memory_mb=spec.memory_mb,
            application_log_level=spec.application_log_level if (spec.log_format or "").upper() == "JSON" else None,
            python=lambda_python(),
            function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{spec.logical_id}",
            observers=self.observers,
            log_stream=self._log_stream,
        )

    def _sqs_concurrency(self, event: Mapping[str, Any]) -> int:
        """An SQS event source's ``ScalingConfig.MaximumConcurrency`` (``default_concurrency`` without one)."""
        return int(event.get("ScalingConfig", {}).get("MaximumConcurrency", self._default_concurrency))

    def start(self) -> None:
        """Build the layers for this machine if needed, then start the event sources and the gateway (execution
        environments start on the first invocation that needs one, as cold starts do)."""
        # One client for every queue's pollers (a thread per concurrent invocation each), with a connection for each.
        pollers = sum(
            self._sqs_concurrency(e)
            for spec in self.stack.functions.values()
            for e in spec.events.values()
            if e["Type"] == "SQS"
        )
        sqs = self.stack.client("sqs", connections=max(10, pollers + 4))
        routes: list[Route] = []
        for logical_id, spec in self.stack.functions.items():
            limits = [self._sqs_concurrency(e) for e in spec.events.values() if e["Type"] == "SQS"]
            pool = FunctionPool(self.image(spec), max_environments=sum(limits) or self._default_concurrency)
            self.functions[logical_id] = pool
            for name, event in spec.events.items():
                if event["Type"] == "SQS":
                    arn = event["Queue"]
                    url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
                    source = SqsEventSource(
                        sqs,
                        url,
                        arn,
                        pool,
                        batch_size=int(event.get("BatchSize", 10)),
                        concurrency=self._sqs_concurrency(event),
                        report_failures="ReportBatchItemFailures" in event.get("FunctionResponseTypes", []),
                        stop=self.stop_event,
                        duplicator=self.s3_events,
                    )
                    self._threads.extend(source.threads)
                elif event["Type"] == "DynamoDB":
                    dlq_arn = event.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                    dlq_url = sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[1])["QueueUrl"] if dlq_arn else None
                    filters = [json.loads(f["Pattern"]) for f in event.get("FilterCriteria", {}).get("Filters", [])]
                    stream_source = StreamEventSource(
                        self.stack.client("dynamodbstreams"),
                        sqs,
                        event["Stream"],
                        pool,
                        batch_size=int(event.get("BatchSize", 100)),
                        max_retries=int(event.get("MaximumRetryAttempts", -1)),
                        bisect=bool(event.get("BisectBatchOnFunctionError", False)),
                        filters=filters,
                        on_failure_queue_url=dlq_url,
                        stop=self.stop_event,
                    )
                    self.stream_sources.append(stream_source)
                    self._threads.append(stream_source)
                elif event["Type"] == "ScheduleV2":
                    schedule = Schedule(
                        f"{logical_id}.{name}",
                        pool,
                        period=rate_seconds(event["ScheduleExpression"]) * self.time_scale,
                        payload=json.loads(event.get("Input", "{}")),
                        stop=self.stop_event,
                    )
                    self.schedules[f"{logical_id}.{name}"] = schedule
                    self._threads.append(schedule)
                elif event["Type"] == "HttpApi":
                    default = self.stack.default_authorizers.get(str(event.get("ApiId")), "NONE")
                    authorizer = event.get("Auth", {}).get("Authorizer", default)
                    routes.append(Route(event["Method"].upper(), event["Path"], pool, iam=authorizer == "AWS_IAM"))
        self.gateway = Gateway(
            routes,
            credentials=(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
            port=self.gateway_port,
            integration_timeout=INTEGRATION_TIMEOUT_SECONDS * self.time_scale,
        )
        self.gateway.start()
        for thread in self._threads:
            thread.start()

    def streams_caught_up(self, *, timeout: float = 30) -> None:
        """Wait until every stream event source has handled every record written before this call.

        Raises
        ------
        AssertionError
            A source had not caught up after ``timeout`` seconds.
        """
        for source in self.stream_sources:
            assert source.caught_up(timeout=timeout), f"{source.name} did not catch up in {timeout} s"

    def stop(self) -> None:
        """Stop the event sources (each finishes its current long poll), the gateway and every environment."""
        self.stop_event.set()
        if self.gateway is not None:
            self.gateway.stop()
        for pool in self.functions.values():
            pool.close()
        for thread in self._threads:
            thread.join(timeout=5)


OBSERVERS: list[Observer] = []
"""Observers every :class:`Runtime` made from now on reports to (the integration tests' IAM check adds itself)."""
