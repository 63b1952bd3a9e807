"""boto3 adapters for the domain's ports, one module per service: :mod:`.dynamodb` (the jobs table),
:mod:`.s3` (the buckets), :mod:`.sqs` (the queues), :mod:`.eventbridge` (the bus), :mod:`.rekognition` (face matching)
and :mod:`.ratelimit` (the call ceilings' DynamoDB algorithm).

These are the only modules of the shared package that talk to AWS. Clients are passed in (created once per
container by the handler's wiring), and AWS errors the domain acts on are turned into domain errors with
``raise … from e``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError

from faceswap.errors import StoreUnavailable

F = TypeVar("F", bound=Callable[..., Any])


def error_code(error: ClientError) -> str:
    """The AWS error code of ``error`` (``ConditionalCheckFailedException``, ``NoSuchKey``, ``404`` …)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def translated(operation: str) -> Callable[[F], F]:
    """Decorate an adapter method so that an AWS failure it does not handle itself leaves it as
    :class:`faceswap.errors.StoreUnavailable` (``raise … from e``), the error its port promises, never a botocore
    exception. ``operation`` names it in the message (``s3:PutObject``)."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except ClientError as e:
                raise StoreUnavailable(operation, error_code(e) or "ClientError") from e
            except BotoCoreError as e:
                raise StoreUnavailable(operation, type(e).__name__) from e

        return cast(F, wrapper)

    return decorate
