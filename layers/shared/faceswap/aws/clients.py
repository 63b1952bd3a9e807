"""AWS clients for the functions, made with botocore: :func:`client`.

``client("sqs")`` is what ``boto3.client("sqs")`` does (boto3's ``client`` creates the client from its default
botocore session), without importing boto3, which a function pays for at every cold start (about 50 ms: its session
module loads the resource and documentation machinery and s3transfer) and whose extras (resources, S3 transfer
methods, the DynamoDB table interface) the adapters do not use. Making clients from a botocore session is botocore's
own documented use (https://docs.aws.amazon.com/botocore/latest/tutorial/). Every client comes from one session per
process, as with boto3's default session, so the endpoint data, partitions and credentials are loaded once and
shared. Region, credentials, endpoint overrides (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``) and retry
settings come from the environment as they do for boto3: both read them through botocore's session.

Clients are made at init, outside the handler, as Lambda recommends ("Initialize SDK clients ... outside of the
function handler", https://docs.aws.amazon.com/lambda/latest/dg/best-practices.html). One difference from boto3: the
User-Agent names botocore rather than boto3 (``Botocore/<version>``), the same SDK underneath.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal, overload

import botocore.session

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_rekognition import RekognitionClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

_session: botocore.session.Session | None = None
_lock = threading.Lock()  # a botocore session is not thread safe; clients are (the Rekognition one is made lazily)


@overload
def client(service_name: Literal["dynamodb"]) -> DynamoDBClient: ...
@overload
def client(service_name: Literal["events"]) -> EventBridgeClient: ...
@overload
def client(service_name: Literal["rekognition"]) -> RekognitionClient: ...
@overload
def client(service_name: Literal["s3"]) -> S3Client: ...
@overload
def client(service_name: Literal["secretsmanager"]) -> SecretsManagerClient: ...
@overload
def client(service_name: Literal["sqs"]) -> SQSClient: ...
def client(service_name: str) -> Any:
    """A low-level client for ``service_name`` (``"sqs"``, ``"s3"`` …) from the process's botocore session.

    Parameters
    ----------
    service_name
        The service's botocore name.

    Returns
    -------
    botocore.client.BaseClient
        The service's client, configured from the environment (region, credentials, endpoint overrides).

    Raises
    ------
    botocore.exceptions.UnknownServiceError
        ``service_name`` is not a service botocore knows.
    botocore.exceptions.NoRegionError
        No region is configured (``AWS_REGION`` or ``AWS_DEFAULT_REGION``; Lambda sets both).
    """
    global _session
    with _lock:
        if _session is None:
            _session = botocore.session.get_session()
        return _session.create_client(service_name)
