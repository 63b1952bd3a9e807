"""The jobs table on DynamoDB: the job row codec, :class:`DynamoJobStore` and the ``StateIndex`` listing."""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from faceswap.aws import error_code, translated
from faceswap.errors import InvalidRequest
from faceswap.lifecycle import PHASE_STATES, JobState, Phase, legacy_phase
from faceswap.model import FacePair, ImageRef, Job

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATE_INDEX = "StateIndex"
"""The jobs table's index by ``state`` (partition) and ``created_at`` (sort)."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_JOB_FIELDS = {f.name for f in fields(Job)}


def job_to_item(job: Job) -> dict[str, Any]:
    """A job as a DynamoDB item (attribute-value form); unset optional attributes are left out."""
    data: dict[str, Any] = {}
    for name in _JOB_FIELDS:
        value = _stored(getattr(job, name))
        if value is None or value == {} or value == []:
            continue
        data[name] = value
    return {k: _serializer.serialize(v) for k, v in data.items()}


def _stored(value: Any) -> Any:
    """An attribute value as DynamoDB stores it: image references as maps, states and phases as strings."""
    if isinstance(value, ImageRef | FacePair):
        return value.as_dict()
    if isinstance(value, enum.Enum):
        return str(value)
    if isinstance(value, float):  # DynamoDB numbers are decimals (similarities on chosen faces)
        return Decimal(str(value))
    if isinstance(value, list):
        return [_stored(v) for v in value]
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items()}
    return value


def job_from_item(item: Mapping[str, Any]) -> Job:
    """Inverse of :func:`job_to_item` (also reads stream images, which have the same form)."""
    data = {k: _deserializer.deserialize(v) for k, v in item.items() if k in _JOB_FIELDS}
    data = {k: _plain(v) for k, v in data.items()}
    data["state"] = JobState(data["state"])
    data["phase"] = (
        Phase(data["phase"])
        if "phase" in data
        else legacy_phase(
            data["state"],
            create_started=bool(data.get("submit_started_at")),
            task_id=bool(data.get("provider_task_id")),
            error=bool(data.get("error")),
        )
    )
    for name in ("target_image", "swap_image"):
        data[name] = ImageRef.from_dict(data.get(name) or {})
    data["face_map"] = [FacePair.from_dict(pair) for pair in data.get("face_map") or ()]
    if data.get("target_video"):
        data["target_video"] = ImageRef.from_dict(data["target_video"])
    return Job(**data)


def _plain(value: Any) -> Any:
    """Decimals from DynamoDB back to int, or float where they have a fraction (similarities)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class DynamoJobStore:
    """:class:`faceswap.ports.JobStore` on a DynamoDB table with partition key ``job_id``."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @translated("dynamodb:PutItem")
    def create(self, job: Job) -> bool:
        """Put the row if absent (``attribute_not_exists(job_id)``); ``False`` if a row exists."""
        try:
            self._client.put_item(
                TableName=self._table, Item=job_to_item(job), ConditionExpression="attribute_not_exists(job_id)"
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    @translated("dynamodb:GetItem")
    def get(self, job_id: str) -> Job | None:
        """Strongly consistent read of one row."""
        item = self._client.get_item(TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get(
            "Item"
        )
        return job_from_item(item) if item else None

    @translated("dynamodb:UpdateItem")
    def apply(
        self,
        job_id: str,
        *,
        from_phases: Iterable[Phase],
        changes: Mapping[str, Any],
        expected: Mapping[str, str] | None = None,
    ) -> Job | None:
        """One conditional ``UpdateItem`` (``#phase IN (…)`` and each expected value); see
        :meth:`faceswap.ports.JobStore.apply`. ``ReturnValues=ALL_NEW`` gives the row as written."""
        names: dict[str, str] = {"#phase": "phase"}
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
                values[f":v{i}"] = _serializer.serialize(_stored(value))
                sets.append(f"#a{i} = :v{i}")
        expression = " ".join(
            part
            for part in (
                ("SET " + ", ".join(sets)) if sets else "",
                ("REMOVE " + ", ".join(removes)) if removes else "",
            )
            if part
        )
        phases = sorted(from_phases)
        for i, phase in enumerate(phases):
            values[f":p{i}"] = {"S": str(phase)}
        states = sorted({state for phase in phases for state in PHASE_STATES[phase]})
        for i, state in enumerate(states):
            values[f":s{i}"] = {"S": str(state)}
        names["#state"] = "state"
        # A row written before rows had a phase moves by its state, as it did then (jobs in flight at the upgrade).
        condition = (
            f"(#phase IN ({', '.join(f':p{i}' for i in range(len(phases)))}) OR (attribute_not_exists(#phase) "
            f"AND #state IN ({', '.join(f':s{i}' for i in range(len(states)))})))"
        )
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
            if error_code(e) == "ConditionalCheckFailedException":
                return None
            raise
        return job_from_item(response["Attributes"])

    @translated("dynamodb:Query")
    def list_jobs(
        self, *, state: JobState | None, limit: int, cursor: str | None, provider: str | None = None
    ) -> tuple[list[Job], str | None]:
        """A page of jobs: ``StateIndex`` newest first for a state, else a table scan; cursors are opaque.

        ``provider`` is a filter expression: DynamoDB applies it after reading ``limit`` items, so a page may hold
        fewer (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.FilterExpression.html)."""
        args: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if cursor:
            args["ExclusiveStartKey"] = _decode_cursor(cursor)
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if provider is not None:
            args["FilterExpression"] = "#provider = :provider"
            names["#provider"] = "provider"
            values[":provider"] = {"S": provider}
        if names:
            args["ExpressionAttributeNames"] = names
            args["ExpressionAttributeValues"] = values
        if state is None:
            response = self._client.scan(**args)
        else:
            args["ExpressionAttributeNames"] = {**names, "#state": "state"}
            args["ExpressionAttributeValues"] = {**values, ":state": {"S": str(state)}}
            response = self._client.query(
                **args, IndexName=STATE_INDEX, KeyConditionExpression="#state = :state", ScanIndexForward=False
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
