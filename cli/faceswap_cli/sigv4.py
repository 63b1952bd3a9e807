"""AWS Signature Version 4 for the jobs API (service ``execute-api``), signing and checking, with botocore.

The jobs API is IAM-authorised: every request is signed with the caller's AWS credentials. Signing and the
local gateway's check both use botocore's own SigV4 implementation rather than a copy of the algorithm.
"""

from __future__ import annotations

import hmac
from collections.abc import Generator, Mapping
from datetime import UTC, datetime

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

SERVICE = "execute-api"
MAX_CLOCK_SKEW_SECONDS = 300


class SigV4(httpx.Auth):
    """``httpx`` auth that signs each request with SigV4.

    Parameters
    ----------
    credentials
        botocore credentials (``boto3.Session().get_credentials()``); refreshed credentials are re-read per request.
    region
        The API's region.
    """

    requires_request_body = True

    def __init__(self, credentials: Credentials | ReadOnlyCredentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        frozen = (
            self._credentials.get_frozen_credentials()
            if isinstance(self._credentials, Credentials)
            else (self._credentials)
        )
        aws_request = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={
                "host": request.headers["host"],
                **({"content-type": request.headers["content-type"]} if "content-type" in request.headers else {}),
            },
        )
        SigV4Auth(frozen, SERVICE, self._region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws_request.headers:
                request.headers[name] = aws_request.headers[name]
        yield request


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime | None = None,
) -> str | None:
    """Check a request's SigV4 signature as API Gateway's IAM authoriser would, for one known key pair.

    Parameters
    ----------
    method, url, headers, body
        The request as received (``headers`` with lower-case names).
    access_key, secret_key, region
        The only credentials accepted, and the API's region.
    now
        The current time (UTC), for the clock-skew check.

    Returns
    -------
    str or None
        ``None`` if the signature is valid, else why not (for logs; the caller answers 403 either way).
    """
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return "missing SigV4 Authorization header"
    try:
        parts = dict(part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256 ") :].split(","))
        key_id, date, scope_region, service, terminal = parts["Credential"].split("/")
        signed_headers = parts["SignedHeaders"].split(";")
        signature = parts["Signature"]
        amz_date = headers["x-amz-date"]
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return "malformed Authorization header"
    if key_id != access_key or scope_region != region or service != SERVICE or terminal != "aws4_request":
        return "unknown credential or scope"
    if abs(((now or datetime.now(UTC)) - signed_at).total_seconds()) > MAX_CLOCK_SKEW_SECONDS:
        return "signature too old or from the future"
    if date != amz_date[:8] or any(h not in headers for h in signed_headers) or "host" not in signed_headers:
        return "signed headers missing"
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers[h] for h in signed_headers})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(ReadOnlyCredentials(access_key, secret_key, None), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return None if hmac.compare_digest(expected, signature) else "signature does not match"
