"""boto3 adapters for the domain's ports, one module per service: :mod:`.dynamodb` (the jobs table),
:mod:`.s3` (the buckets), :mod:`.sqs` (the queues), :mod:`.eventbridge` (the bus) and :mod:`.ratelimit` (the call
ceilings' DynamoDB algorithm).

These are the only modules of the shared package that talk to AWS. Clients are passed in (created once per
container by the handler's wiring), and AWS errors the domain acts on are turned into domain errors with
``raise … from e``.
"""

from __future__ import annotations

from botocore.exceptions import ClientError


def error_code(error: ClientError) -> str:
    """The AWS error code of ``error`` (``ConditionalCheckFailedException``, ``NoSuchKey``, ``404`` …)."""
    return str(error.response.get("Error", {}).get("Code", ""))
