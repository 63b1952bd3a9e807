"""boto3 adapters for the domain's ports: DynamoDB jobs table, S3 buckets, SQS check queue, EventBridge bus.

This is the only module of the shared package that talks to AWS. Clients are passed in (created once per
container by the handler), and AWS errors are turned into domain errors with ``raise … from e``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from faceswap.errors import ImageTooLarge, InputNotFound, InvalidRequest
from faceswap.model import ImageRef, Job, JobRequest, JobState, StoredResult
from faceswap.ports import Turn
from faceswap.requests import request_to_message

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024
"""Multipart part size for results: the most memory a result copy holds at once."""

EVENT_SOURCE = "faceswap.pipeline"
"""``source`` of the events the pipeline publishes."""

STATE_INDEX = "StateIndex"
"""The jobs table's index by ``state`` (partition) and ``created_at`` (sort)."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_JOB_FIELDS = {f.name for f in fields(Job)}


def job_to_item(job: Job) -> dict[str, Any]:
    """A job as a DynamoDB item (attribute-value form); unset optional attributes are left out."""
    data: dict[str, Any] = {}
    for name in _JOB_FIELDS:
        value = getattr(job, name)
        if isinstance(value, ImageRef):
            value = value.as_dict()
        elif isinstance(value, JobState):
            value = str(value)
        if value is None or value == {} or value == []:
            continue
        data[name] = value
    return {k: _serializer.serialize(v) for k, v in data.items()}


def job_from_item(item: Mapping[str, Any]) -> Job:
    """Inverse of :func:`job_to_item` (also reads stream images, which have the same form)."""
    data = {k: _deserializer.deserialize(v) for k, v in item.items() if k in _JOB_FIELDS}
    data = {k: _plain(v) for k, v in data.items()}
    data["state"] = JobState(data["state"])
    for name in ("target_image", "swap_image"):
        data[name] = ImageRef.from_dict(data.get(name) or {})
    return Job(**data)


def _plain(value: Any) -> Any:
    """Decimals from DynamoDB back to int (the job row stores whole numbers only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value).__name__ == "Decimal":
        return int(value)
    return value


class DynamoJobStore:
    """:class:`faceswap.ports.JobStore` on a DynamoDB table with partition key ``job_id``."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def create(self, job: Job) -> bool:
        """Put the row if absent (``attribute_not_exists(job_id)``); ``False`` if a row exists."""
        try:
            self._client.put_item(
                TableName=self._table, Item=job_to_item(job), ConditionExpression="attribute_not_exists(job_id)"
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, job_id: str) -> Job | None:
        """Strongly consistent read of one row."""
        item = self._client.get_item(TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get(
            "Item"
        )
        return job_from_item(item) if item else None

    def transition(
        self, job_id: str, *, from_states: Iterable[JobState], to_state: JobState, changes: Mapping[str, Any]
    ) -> Job | None:
        """Conditional state change; see :meth:`faceswap.ports.JobStore.transition`."""
        return self._update(job_id, states=from_states, changes={**changes, "state": str(to_state)})

    def update(
        self,
        job_id: str,
        *,
        in_states: Iterable[JobState],
        changes: Mapping[str, Any],
        require_absent: str | None = None,
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        """Conditional update without a state change; see :meth:`faceswap.ports.JobStore.update`."""
        return self._update(job_id, states=in_states, changes=changes, require_absent=require_absent, expected=expected)

    def _update(
        self,
        job_id: str,
        *,
        states: Iterable[JobState],
        changes: Mapping[str, Any],
        require_absent: str | None = None,
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        names: dict[str, str] = {"#state": "state"}
        values: dict[str, Any] = {}
        sets: list[str] = []
        removes: list[str] = []
        for i, (name, value) in enumerate(changes.items()):
            if name not in _JOB_FIELDS:
                raise ValueError(f"not a job attribute: {name}")
            names[f"#a{i}"] = name
            if value is None:
                removes.append(f"#a{i}")
            else:
                values[f":v{i}"] = _serializer.serialize(value)
                sets.append(f"#a{i} = :v{i}")
        expression = " ".join(
            part
            for part in (
                ("SET " + ", ".join(sets)) if sets else "",
                ("REMOVE " + ", ".join(removes)) if removes else "",
            )
            if part
        )
        state_values = []
        for i, state in enumerate(states):
            values[f":s{i}"] = {"S": str(state)}
            state_values.append(f":s{i}")
        condition = f"#state IN ({', '.join(state_values)})"
        if require_absent:
            names["#absent"] = require_absent
            condition += " AND attribute_not_exists(#absent)"
        for i, (name, value) in enumerate((expected or {}).items()):
            names[f"#e{i}"], values[f":e{i}"] = name, {"S": value}
            condition += f" AND #e{i} = :e{i}"
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                return None
            raise
        return job_from_item(response["Attributes"])

    def list_jobs(self, *, state: JobState | None, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
        """A page of jobs: ``StateIndex`` newest first for a state, else a table scan; cursors are opaque."""
        args: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if cursor:
            args["ExclusiveStartKey"] = _decode_cursor(cursor)
        if state is None:
            response = self._client.scan(**args)
        else:
            response = self._client.query(
                **args,
                IndexName=STATE_INDEX,
                KeyConditionExpression="#state = :state",
                ScanIndexForward=False,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":state": {"S": str(state)}},
            )
        last = response.get("LastEvaluatedKey")
        return [job_from_item(item) for item in response.get("Items", [])], _encode_cursor(last) if last else None


def _encode_cursor(key: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (
            not isinstance(key, dict)
            or "job_id" not in key
            or not all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values())
        ):
            raise ValueError("not a job key")
    except (ValueError, binascii.Error) as e:
        raise InvalidRequest("Parameter 'next_token' is not a token this API issued.") from e
    return key


class S3ObjectStore:
    """:class:`faceswap.ports.ObjectStore` on S3. Results are written create-only (``If-None-Match: *``)."""

    def __init__(self, client: S3Client, *, part_bytes: int = PART_BYTES) -> None:
        self._client = client
        self._part_bytes = part_bytes

    def read(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        """Read a whole (small) object; see :meth:`faceswap.ports.ObjectStore.read`."""
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            response = self._client.get_object(**args)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket", "InvalidArgument"):
                raise InputNotFound(f"s3://{bucket}/{key} does not exist.") from e
            raise
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > max_bytes:
                raise ImageTooLarge(
                    f"s3://{bucket}/{key} is {response['ContentLength']:,} bytes, over the limit of {max_bytes:,}."
                )
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {max_bytes:,} bytes.")
        return data

    def exists(self, bucket: str, key: str) -> bool:
        """Whether ``key`` exists: ``HeadObject`` (404 → ``False``; other errors raise ``ClientError``)."""
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def store_result(
        self, bucket: str, key: str, chunks: Iterator[bytes], *, content_type: str, job_id: str
    ) -> StoredResult:
        """Stream a result into S3 with at most one part in memory; see the port for the contract.

        A body that fits one part is written with one ``PutObject``; a larger one with a multipart upload
        that is aborted on any failure (so no partial object is ever visible and none is left open). An upload
        that an earlier attempt left open because it was killed mid-copy (no code of its ran to abort it) is
        aborted before the new one starts: results are written only by collects of the key's job, which are
        safe to repeat, and the write condition keeps a racing collect from being harmed beyond a retry. The
        write is conditional: ``If-None-Match: *`` when the key is free, ``If-Match: <ETag>`` when it holds an
        older job's result (a new version replaces it). If the key already holds this job's result (an
        earlier collect stored it), that object is described and nothing is written.
        """
        condition = self._write_condition(bucket, key, job_id)
        if isinstance(condition, StoredResult):
            return condition
        metadata = {"job-id": job_id}
        digest = hashlib.sha256()
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[Any] = []
        response: Mapping[str, Any]
        size = 0
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= self._part_bytes:
                    # The whole buffer is the part (8 MiB up to one chunk more; only the last part may be under
                    # 5 MiB): no copy of it is made, so memory holds one part and one chunk.
                    if upload_id is None:
                        self._abort_open_uploads(bucket, key)
                        upload_id = self._client.create_multipart_upload(
                            Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata
                        )["UploadId"]
                    parts.append(self._upload_part(bucket, key, upload_id, len(parts) + 1, buffer))
                    buffer = bytearray()
            if upload_id is None:
                response = self._client.put_object(
                    Bucket=bucket, Key=key, Body=_body(buffer), ContentType=content_type, Metadata=metadata, **condition
                )
            else:
                if buffer:
                    parts.append(self._upload_part(bucket, key, upload_id, len(parts) + 1, buffer))
                response = self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
                )
                upload_id = None
        except ClientError as e:
            if upload_id is not None:
                self._abort(bucket, key, upload_id)
            if _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                # Another collect of this job got there first: describe what it stored.
                existing = self._write_condition(bucket, key, job_id)
                if isinstance(existing, StoredResult):
                    return existing
            raise
        except BaseException:
            if upload_id is not None:
                self._abort(bucket, key, upload_id)
            raise
        return StoredResult(
            bucket=bucket,
            key=key,
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
            version_id=response.get("VersionId"),
        )

    def _write_condition(self, bucket: str, key: str, job_id: str) -> StoredResult | dict[str, Any]:
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404", "NotFound"):
                return {"IfNoneMatch": "*"}
            raise
        if head.get("Metadata", {}).get("job-id") == job_id:
            return self.describe_result(bucket, key)
        return {"IfMatch": head["ETag"]}

    def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: bytes | bytearray
    ) -> dict[str, Any]:
        etag = self._client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=_body(body)
        )["ETag"]
        return {"ETag": etag, "PartNumber": number}

    def describe_result(self, bucket: str, key: str) -> StoredResult:
        """Describe the result at ``key``, hashing it again (streamed) for its sha256."""
        response = self._client.get_object(Bucket=bucket, Key=key)
        digest = hashlib.sha256()
        size = 0
        for chunk in response["Body"].iter_chunks(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return StoredResult(
            bucket=bucket,
            key=key,
            size=size,
            sha256=digest.hexdigest(),
            content_type=response.get("ContentType", "application/octet-stream"),
            version_id=response.get("VersionId"),
        )

    def put_input(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        """Store an inline input image."""
        self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def presign_put(self, bucket: str, key: str, *, content_type: str, expires_seconds: int) -> str:
        """A presigned PUT URL; the upload must send the same ``Content-Type``."""
        return self._client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": content_type}, ExpiresIn=expires_seconds
        )

    def presign_get(self, bucket: str, key: str, *, version_id: str | None, expires_seconds: int) -> str:
        """A presigned GET URL (pinned to ``version_id`` when given)."""
        params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        return self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)

    def _abort_open_uploads(self, bucket: str, key: str) -> None:
        """Abort every multipart upload open on exactly ``key`` (left by a killed attempt)."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    logger.warning("aborting a multipart upload left open by an earlier attempt", extra={"key": key})
                    self._abort(bucket, key, upload["UploadId"])

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        # If the abort itself fails, the bucket's lifecycle rule removes the incomplete upload after a day.
        with contextlib.suppress(ClientError):
            self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


class SqsCheckScheduler:
    """:class:`faceswap.ports.CheckScheduler` on the check queue. Message body: ``{"job_id", "check"}``."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def schedule(self, job_id: str, *, delay_seconds: int, check: int) -> None:
        """Send a delayed check message (0..900 s)."""
        self._client.send_message(
            QueueUrl=self._queue_url,
            DelaySeconds=max(0, min(900, delay_seconds)),
            MessageBody=json.dumps({"job_id": job_id, "check": check}),
        )


class SqsRequestQueue:
    """:class:`faceswap.ports.RequestQueue` on the submit queue (body: :func:`faceswap.requests.request_to_message`)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, request: JobRequest) -> None:
        """Queue the request."""
        self._client.send_message(QueueUrl=self._queue_url, MessageBody=request_to_message(request))


def retry_backoff(deliveries: int, *, first: float = 10.0, factor: float = 3.0, most: float = 300.0) -> float:
    """Seconds before a message that failed on its ``deliveries``-th delivery is delivered again: ``first``,
    then ``factor`` times longer each time, at most ``most`` (10, 30, 90, 270, 300… s by default)."""
    return float(min(most, first * factor ** max(0, deliveries - 1)))


def redelivery_delay(deliveries: int, *, max_receive_count: int) -> float:
    """Seconds before a message that failed its ``deliveries``-th delivery comes back: :func:`retry_backoff`, or
    0 after the last allowed delivery (``max_receive_count``; its job was just ended FAILED), so that the message
    moves to the dead-letter queue at its next receive rather than after a backoff."""
    if max_receive_count and deliveries >= max_receive_count:
        return 0.0
    return retry_backoff(deliveries)


class SqsMessageDelay:
    """Makes a message received from ``queue_url`` visible again after a chosen delay (instead of the queue's
    visibility timeout)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def delay(self, receipt_handle: str, seconds: float) -> None:
        """Best effort: if the change fails (logged as a warning), the message comes back after the queue's
        visibility timeout. Needs ``sqs:ChangeMessageVisibility`` on the queue."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=max(0, min(43_200, math.ceil(seconds))),
            )
        except ClientError as e:
            logger.warning(
                "could not delay a message; it returns after the visibility timeout", extra={"error": _code(e)}
            )


class DynamoRateLimiter:
    """:class:`faceswap.ports.RateLimiter` on a DynamoDB table (key ``window``, TTL ``expires_at``).

    - Per second: each provider has ``per_second`` call slots, the attributes ``s0``, ``s1``, … of the item
      ``<provider>#slots``, each holding the time (epoch seconds) it is next free. A call takes a free slot with
      a conditional write that marks it busy for :attr:`LEASE_SECONDS`; when the call is answered (or fails),
      :meth:`release` marks the slot free :attr:`WINDOW_SECONDS` after that moment. A request reaches the
      provider before its answer comes back, so two calls through one slot reach the provider more than a
      second apart however long the network held either of them, and no one-second window, as the provider
      counts, ever holds more than ``per_second`` calls. A function that dies holding a slot loses it only until
      the lease runs out.
    - Per hour: a counter per clock hour, incremented under the condition ``calls < per_hour``.

    Conditional writes make concurrent functions share the ceilings; a refused write changes nothing.
    """

    #: How long a taken slot stays busy if it is never released: longer than any provider call may take.
    LEASE_SECONDS = 60.0
    #: How long after a call is answered its slot stays busy: one second, plus 50 ms for clock differences
    #: between hosts.
    WINDOW_SECONDS = 1.05
    #: Conditional writes tried on slots seen free before the answer is "wait".
    TRIES = 3

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        clock: Callable[[], float] = time.time,
        choice: Callable[[Sequence[str]], str] = random.choice,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._choice = choice
        self._seen: dict[str, dict[str, float]] = {}  # provider -> slot -> free at, as last read

    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        """See :meth:`faceswap.ports.RateLimiter.acquire`. Waits it answers are at most :attr:`WINDOW_SECONDS`."""
        turn = Turn(provider=provider)
        if per_second > 0:
            turn = self._take_slot(provider, per_second)
            if turn.wait > 0:
                return turn
        if per_hour > 0:
            now = self._clock()
            hour = int(now // 3600)
            if not self._count(f"{provider}#hour#{hour}", per_hour, expires_at=(hour + 2) * 3600):
                self._set_slot(turn, free_at=now)  # no call was made
                return Turn(wait=round((hour + 1) * 3600 - now + 0.01, 3), provider=provider)
        return turn

    def release(self, turn: Turn) -> None:
        """See :meth:`faceswap.ports.RateLimiter.release`. If the write fails, the slot frees when its lease ends."""
        self._set_slot(turn, free_at=self._clock() + self.WINDOW_SECONDS)

    def _take_slot(self, provider: str, per_second: int) -> Turn:
        slots = [f"s{i}" for i in range(per_second)]
        key = _slots_key(provider)
        seen = self._seen.setdefault(provider, {})
        fresh, tries = False, 0
        while True:
            now = self._clock()
            free = [slot for slot in slots if seen.get(slot, 0.0) <= now]
            if not free and not fresh:  # what this container saw last may be stale: read the slots
                item = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
                self._saw(seen, slots, item)
                fresh = True
                continue
            if not free:
                # Busy slots free a window after their calls are answered; one still in flight, later than that.
                soonest = min(min(seen.get(slot, 0.0) for slot in slots), now + self.WINDOW_SECONDS)
                return Turn(wait=max(0.001, round(soonest - now, 3)), provider=provider)
            if tries == self.TRIES:
                return Turn(wait=0.05, provider=provider)  # other functions keep taking the free slots first
            tries += 1
            slot, lease = self._choice(free), now + self.LEASE_SECONDS
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET #slot = :lease, expires_at = :expires",
                    ConditionExpression="attribute_not_exists(#slot) OR #slot <= :now",
                    ExpressionAttributeNames={"#slot": slot},
                    ExpressionAttributeValues={
                        ":now": {"N": repr(now)},
                        ":lease": {"N": repr(lease)},
                        ":expires": {"N": str(int(lease) + 3600)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as e:
                if _code(e) != "ConditionalCheckFailedException":
                    raise
                self._saw(seen, slots, cast(Mapping[str, Any], e.response.get("Item") or {}))
                seen.setdefault(slot, now + self.WINDOW_SECONDS)  # taken meanwhile, whatever the answer held
                fresh = True
                continue
            seen[slot] = lease
            return Turn(provider=provider, slot=slot, lease=lease)

    @staticmethod
    def _saw(seen: dict[str, float], slots: Sequence[str], item: Mapping[str, Any]) -> None:
        seen.clear()
        seen.update({slot: float(item[slot]["N"]) for slot in slots if "N" in item.get(slot, {})})

    def _set_slot(self, turn: Turn, *, free_at: float) -> None:
        if not turn.slot:
            return
        self._seen.setdefault(turn.provider, {})[turn.slot] = free_at
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.update_item(
                TableName=self._table,
                Key=_slots_key(turn.provider),
                UpdateExpression="SET #slot = :free",
                ConditionExpression="#slot = :lease",
                ExpressionAttributeNames={"#slot": turn.slot},
                ExpressionAttributeValues={":free": {"N": repr(free_at)}, ":lease": {"N": repr(turn.lease)}},
            )

    def _count(self, window: str, limit: int, *, expires_at: int) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"window": {"S": window}},
                UpdateExpression="ADD calls :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(calls) OR calls < :limit",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":expires": {"N": str(expires_at)},
                },
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True


class EventBridgePublisher:
    """:class:`faceswap.ports.EventPublisher` on an EventBridge bus, source :data:`EVENT_SOURCE`."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Put one event; raises ``RuntimeError`` if EventBridge reports it as failed (so it is retried)."""
        response = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise RuntimeError(f"EventBridge refused the event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")


def _slots_key(provider: str) -> dict[str, Any]:
    """The rate-limit table's item holding ``provider``'s call slots."""
    return {"window": {"S": f"{provider}#slots"}}


def _body(data: bytes | bytearray) -> bytes:
    """A request body without copying: botocore sends a ``bytearray`` as it is (its stubs only say bytes)."""
    return cast(bytes, data)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
