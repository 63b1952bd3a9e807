"""Deterministic job ids and per-job webhook secrets.

A job id is derived from what defines the work, so a repeated event maps to the same job and the
conditional create of its row turns the repeat into a no-op. Each job's callback secret is
HMAC-SHA256(signing key, job id): nothing extra is stored, and one job's secret says nothing of another's.
"""

from __future__ import annotations

import hashlib
import hmac

JOB_ID_LENGTH = 32
"""Hex characters in a job id (128 bits)."""


def job_id_for(*parts: str) -> str:
    """Return the job id for the parts that define a job's work.

    Parameters
    ----------
    parts
        For an S3 upload: ``("s3", bucket, key, version id or ETag)``. For an API or event request: the
        caller's idempotency key or a digest of the normalised request.

    Returns
    -------
    str
        32 lowercase hex characters; the same parts always give the same id.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:JOB_ID_LENGTH]


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the shape of a job id (checked before it is used in a key or a log line)."""
    return len(text) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def webhook_secret(signing_key: bytes, job_id: str) -> str:
    """Return the job's webhook secret: hex HMAC-SHA256(signing key, job id), 64 characters."""
    return hmac.new(signing_key, job_id.encode("ascii"), hashlib.sha256).hexdigest()


def verify_webhook_secret(signing_key: bytes, job_id: str, presented: str | None) -> bool:
    """Check a secret presented by a callback in constant time; a missing secret fails (fail closed)."""
    if not presented:
        return False
    return hmac.compare_digest(
        webhook_secret(signing_key, job_id).encode("ascii"), presented.encode("utf-8", "replace")
    )
