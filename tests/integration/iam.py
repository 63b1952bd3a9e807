"""Checks every AWS request a function makes on the local stack against that function's IAM policy in
``template.yaml``, so a permission the code needs and the template lacks fails a test here instead of a
deployment (moto does not enforce IAM).

A request counts when a function's handler makes it (the local runtime's own polling stands for Lambda's event
source mappings, whose permissions SAM adds). The function's policies are its ``Policies`` in the template: inline
statements as written, SAM policy templates expanded by ``samtranslator`` (``sam_policies.py``, which ``make
integration`` runs in the SAM CLI's environment), every intrinsic resolved with the physical names of the stack
that made the request. A statement allows a request when one of its ``Action``
patterns matches the request's IAM action and one of its ``Resource`` patterns matches the resource's ARN.

A presigned URL counts as the request it presigns: whoever follows it acts with the signing function's
permissions. Not covered: statement ``Condition``s (ignored, so a condition could still refuse a request) and
keys used implicitly through SSE-KMS.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.client
import botocore.signers
import pytest

from faceswap_local import stack as local_aws
from faceswap_local.runtime import current_function
from faceswap_local.stack import ACCOUNT_ID, REGION, AwsStack
from faceswap_local.template import Resolver, load_template

SAM_POLICIES = Path(".local") / "sam-policies.json"

S3_BUCKET_ACTIONS = {
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
    "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging",
}
S3_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}
SQS_BATCHES = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


@dataclass(frozen=True)
class Request:
    """One AWS request a function made: the IAM actions it needs, each on a resource ARN."""

    function: str
    operation: str
    needs: tuple[tuple[str, str], ...]


def needs(service: str, operation: str, params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The ``(IAM action, resource ARN)`` pairs a request needs; raises ``ValueError`` for one not mapped here."""
    if service == "dynamodb":
        tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
        if not tables:
            raise ValueError(f"no table in dynamodb {operation}")
        arns = [f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}" for table in tables]
        if "IndexName" in params:
            arns = [f"{arn}/index/{params['IndexName']}" for arn in arns]
        return tuple((f"dynamodb:{operation}", arn) for arn in arns)
    if service == "s3":
        bucket = params["Bucket"]
        if operation in S3_BUCKET_ACTIONS:
            return ((S3_BUCKET_ACTIONS[operation], f"arn:aws:s3:::{bucket}"),)
        if operation not in S3_OBJECT_ACTIONS:
            raise ValueError(f"s3 {operation} is not mapped to its IAM action")
        action = S3_OBJECT_ACTIONS[operation]
        if params.get("VersionId"):
            action = S3_VERSIONED.get(action, action)
        arn = f"arn:aws:s3:::{bucket}/{params['Key']}"
        extra = (("s3:PutObjectTagging", arn),) if operation == "PutObject" and params.get("Tagging") else ()
        return ((action, arn), *extra)
    if service == "sqs":
        if "QueueUrl" not in params:
            raise ValueError(f"no queue URL in sqs {operation}")
        name = params["QueueUrl"].rstrip("/").rsplit("/", 1)[-1]
        return ((f"sqs:{SQS_BATCHES.get(operation, operation)}", f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"),)
    if service == "events" and operation == "PutEvents":
        buses = {entry.get("EventBusName", "default") for entry in params["Entries"]}
        prefix = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/"
        return tuple(("events:PutEvents", bus if bus.startswith("arn:") else prefix + bus) for bus in sorted(buses))
    if service == "secretsmanager":
        secret = params["SecretId"]
        if not secret.startswith("arn:"):
            raise ValueError("secrets are named by ARN in the functions' configuration")
        return ((f"secretsmanager:{operation}", secret),)
    raise ValueError(f"{service} {operation} is not mapped to its IAM action")


class Policies:
    """Each function's allowed ``(action patterns, resource patterns)``, per stack.

    Parameters
    ----------
    template_path
        ``template.yaml`` (for its ``Mappings``).
    statements_path
        ``sam_policies.py``'s output: each function's statements, intrinsics unresolved.
    """

    def __init__(self, template_path: Path, statements_path: Path) -> None:
        if not statements_path.is_file():
            raise FileNotFoundError(f"{statements_path} is missing: `make integration` writes it (sam_policies.py)")
        self._mappings = load_template(template_path).get("Mappings", {})
        self._statements: dict[str, list[dict[str, Any]]] = json.loads(statements_path.read_text(encoding="utf-8"))
        self._cache: dict[tuple[int, str], list[tuple[list[str], list[str]]]] = {}

    def allowed(self, stack: AwsStack, function: str) -> list[tuple[list[str], list[str]]]:
        """``[(action patterns, resource patterns)]`` of ``function``'s Allow statements in ``stack``."""
        key = (id(stack), function)
        if key not in self._cache:
            resolver = Resolver(stack.refs, stack.attributes, self._mappings)
            self._cache[key] = [
                (_strings(s.get("Action")), _strings([_resolved(resolver, r) for r in _list(s.get("Resource"))]))
                for s in self._statements.get(function, [])
                if s.get("Effect") == "Allow"
            ]
        return self._cache[key]


class RequestLog:
    """Records the AWS requests functions make on every local stack started while installed."""

    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.stacks: list[AwsStack] = []
        self._requests: list[Request] = []
        self._unmapped: list[str] = []
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[RequestLog]:
        """Hook stack creation and every botocore request and presigned URL while the block runs."""
        log = self
        create_stack, api_call, presign = (
            local_aws.create_stack,
            botocore.client.BaseClient._make_api_call,
            botocore.signers.generate_presigned_url,
        )

        def creating(*args: Any, **kwargs: Any) -> AwsStack:
            created = create_stack(*args, **kwargs)
            with log._lock:
                log.stacks.append(created)
            return created

        def calling(client: Any, operation: str, params: dict[str, Any]) -> Any:
            function = current_function()
            if function is not None:
                log._record(function, client.meta.service_model.service_name, operation, params)
            return api_call(client, operation, params)

        def presigning(client: Any, method: str, Params: Any = None, **kwargs: Any) -> str:
            function = current_function()
            if function is not None:
                operation = client.meta.method_to_api_mapping.get(method, method)
                log._record(function, client.meta.service_model.service_name, operation, dict(Params or {}))
            return str(presign(client, method, Params=Params, **kwargs))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(local_aws, "create_stack", creating)
            patch.setattr(botocore.client.BaseClient, "_make_api_call", calling)
            patch.setattr(botocore.signers, "generate_presigned_url", presigning)  # bound as clients are made
            yield self

    def _record(self, function: str, service: str, operation: str, params: dict[str, Any]) -> None:
        try:
            request = Request(function, f"{service}:{operation}", needs(service, operation, params))
        except (ValueError, KeyError) as e:
            with self._lock:
                self._unmapped.append(f"{function} {service}:{operation}: {e}")
            return
        with self._lock:
            self._requests.append(request)

    def refused(self) -> list[str]:
        """What the requests recorded since the last call needed and the template does not allow (then forgets them)."""
        with self._lock:
            requests, self._requests = self._requests, []
            problems, self._unmapped = self._unmapped, []
        seen: set[tuple[str, str, str]] = set()
        for request in requests:
            for action, arn in request.needs:
                if (request.function, action, arn) in seen:
                    continue
                seen.add((request.function, action, arn))
                if not any(self._allows(stack, request.function, action, arn) for stack in self.stacks):
                    problems.append(f"{request.function} {request.operation} needs {action} on {arn}")
        return problems

    def _allows(self, stack: AwsStack, function: str, action: str, arn: str) -> bool:
        return any(
            any(fnmatch.fnmatchcase(action, a) for a in actions) and any(fnmatch.fnmatchcase(arn, r) for r in resources)
            for actions, resources in self.policies.allowed(stack, function)
        )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _strings(value: Any) -> list[str]:
    return [v for v in _list(value) if isinstance(v, str)]


def _resolved(resolver: Resolver, value: Any) -> Any:
    try:
        return resolver.resolve(value)
    except KeyError:
        return None  # a resource the local stack does not create (a KMS key, an alarm topic…)
