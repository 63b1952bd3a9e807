"""Checks every AWS request a function makes on the local stack against that function's IAM policy in
``template.yaml``, so a permission the code needs and the template lacks fails a test here instead of a deployment
(moto does not enforce IAM).

A request counts when a function's code makes it: each execution environment reports every botocore call its
function makes, with the error code it was answered with (``faceswap_local.environments.AwsCall``); the local
runtime's own polling stands for Lambda's event source mappings, whose permissions SAM adds. The function's policies
are its ``Policies`` in the template: inline statements as written, SAM policy templates expanded by
``samtranslator`` (``sam_policies.py``, which ``make integration`` runs in the SAM CLI's environment), every
intrinsic resolved with the physical names of the stack that made the request. A statement allows a request when one
of its ``Action`` patterns matches the request's IAM action and one of its ``Resource`` patterns matches the
resource's ARN.

A presigned URL counts as the request it presigns: whoever follows it acts with the signing function's permissions.
A ``HeadObject`` or ``GetObject`` that S3 answers "no such key" also needs ``s3:ListBucket`` on the bucket: without
it S3 answers 403 Forbidden instead of 404, so code that treats "absent" as a normal outcome would fail on AWS where
moto told it "absent" (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html and API_GetObject.html,
"Permissions"). A request this module cannot map to its IAM action fails the check. Not covered: statement
``Condition``s (ignored, so a condition could still refuse a request) and keys used implicitly through SSE-KMS.
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

import pytest

from faceswap_local import stack as local_aws
from faceswap_local.environments import AwsCall, Observer
from faceswap_local.runtime import OBSERVERS
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


ABSENT_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
"""Error codes with which S3 says a key does not exist (``HeadObject`` answers a bare 404, ``GetObject`` NoSuchKey)."""


def needs(
    service: str, operation: str, params: dict[str, Any], *, error_code: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The ``(IAM action, resource ARN)`` pairs a request needs; raises ``ValueError`` for one not mapped here.

    ``error_code`` is the code of the error the request was answered with, if any: an S3 read answered "no such
    key" needs ``s3:ListBucket`` on the bucket as well (see the module docstring).
    """
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
        extra: tuple[tuple[str, str], ...] = ()
        if operation == "PutObject" and params.get("Tagging"):
            extra = (("s3:PutObjectTagging", arn),)
        if operation in ("GetObject", "HeadObject") and error_code in ABSENT_KEY_CODES:
            extra = (("s3:ListBucket", f"arn:aws:s3:::{bucket}"),)
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
            # Named by name (a provider's key, "<stack>/providers/<name>"): IAM evaluates the secret's ARN, which
            # ends in "-" and six random characters.
            secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{secret}-Ab12Cd"
        return ((f"secretsmanager:{operation}", secret),)
    if service == "rekognition" and operation == "CompareFaces":
        # No resource type (https://docs.aws.amazon.com/service-authorization/latest/reference/
        # list_amazonrekognition.html): only a statement on "*" allows it.
        return (("rekognition:CompareFaces", "*"),)
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


class RequestLog(Observer):
    """Records the AWS requests functions make on every local stack started while installed."""

    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.stacks: list[AwsStack] = []
        self._requests: list[Request] = []
        self._unmapped: list[str] = []
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[RequestLog]:
        """Observe every local runtime and remember every stack created while the block runs."""
        log = self
        create_stack = local_aws.create_stack

        def creating(*args: Any, **kwargs: Any) -> AwsStack:
            created = create_stack(*args, **kwargs)
            with log._lock:
                log.stacks.append(created)
            return created

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(local_aws, "create_stack", creating)
            OBSERVERS.append(self)
            try:
                yield self
            finally:
                OBSERVERS.remove(self)

    def aws_call(self, call: AwsCall) -> None:
        """Record ``call`` (an :class:`faceswap_local.environments.Observer` method)."""
        self._record(call.function, call.service, call.operation, call.params, error_code=call.error_code)

    def _record(
        self, function: str, service: str, operation: str, params: dict[str, Any], *, error_code: str | None = None
    ) -> None:
        try:
            request = Request(
                function, f"{service}:{operation}", needs(service, operation, params, error_code=error_code)
            )
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
