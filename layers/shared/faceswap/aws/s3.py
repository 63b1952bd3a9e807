"""The inputs and results buckets on S3: :class:`S3ObjectStore` (reads, streamed create-only results, presigning)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from faceswap.aws import error_code, translated
from faceswap.errors import ImageTooLarge, InputNotFound
from faceswap.model import StoredResult

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024
"""Multipart part size for results: the most memory a result copy holds at once."""

PARTS_IN_FLIGHT = 6
"""Parts of a file (a video result, a prepared video) uploaded at once: memory holds this many parts and one more."""

LOST_RACE = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchUpload"})
"""Error codes of a result write that another collect of the job beat: the write condition refused it (412; 409
for a concurrent conditional write), or its multipart upload was aborted by the winner once the winner's was complete
("the multipart upload might have been aborted or completed": NoSuchUpload,
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html). The key then holds the job's result. The loser
aborts its upload once more: a part in flight when the winner aborted it may still have landed
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html)."""


class S3ObjectStore:
    """:class:`faceswap.ports.ObjectStore` on S3. Results are written create-only (``If-None-Match: *``)."""

    def __init__(self, client: S3Client, *, part_bytes: int = PART_BYTES) -> None:
        self._client = client
        self._part_bytes = part_bytes

    @translated("s3:GetObject")
    def read(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        """Read a whole (small) object; see :meth:`faceswap.ports.ObjectStore.read`."""
        body = self._open(bucket, key, version_id=version_id, max_bytes=max_bytes)
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {max_bytes:,} bytes.")
        return data

    def _open(self, bucket: str, key: str, *, version_id: str | None, max_bytes: int) -> Any:
        """The body of a ``GetObject`` of ``key`` (at ``version_id``), refused ``InputNotFound`` when it does not exist
        and ``ImageTooLarge`` when its ``Content-Length`` is over ``max_bytes`` (closed then)."""
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            response = self._client.get_object(**args)
        except ClientError as e:
            if error_code(e) in ("NoSuchKey", "NoSuchVersion", "404", "NoSuchBucket", "InvalidArgument"):
                raise InputNotFound(f"s3://{bucket}/{key} does not exist.") from e
            raise
        if response.get("ContentLength", 0) > max_bytes:
            response["Body"].close()
            raise ImageTooLarge(
                f"s3://{bucket}/{key} is {response['ContentLength']:,} bytes, over the limit of {max_bytes:,}."
            )
        return response["Body"]

    @translated("s3:GetObject")
    def download(self, bucket: str, key: str, path: str, *, version_id: str | None = None, max_bytes: int) -> int:
        """Stream an object into the file ``path``, 1 MiB at a time; see :meth:`faceswap.ports.ObjectStore.download`."""
        body = self._open(bucket, key, version_id=version_id, max_bytes=max_bytes)
        size = 0
        try:
            with open(path, "wb") as out:
                for chunk in body.iter_chunks(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageTooLarge(f"s3://{bucket}/{key} is over the limit of {max_bytes:,} bytes.")
                    out.write(chunk)
        finally:
            body.close()
        return size

    @translated("s3:HeadObject")
    def head(self, bucket: str, key: str) -> dict[str, str] | None:
        """``key``'s user metadata by ``HeadObject`` (404 → ``None``; other errors raise ``ClientError``)."""
        try:
            response = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if error_code(e) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return dict(response.get("Metadata") or {})

    @translated("s3:PutObject")
    def store_result(
        self, bucket: str, key: str, chunks: Iterator[bytes], *, content_type: str, job_id: str
    ) -> StoredResult:
        """Stream a result into S3 with at most one part in memory; see the port for the contract.

        A body that fits one part is written with one ``PutObject``; a larger one with a multipart upload
        that is aborted on any failure (so no partial object is ever visible and none is left open). Once this
        upload is complete, any other left open on the key is aborted: one an earlier attempt left because it was
        killed mid-copy (no code of its ran to abort it), or a racing collect's, which loses anyway (the write
        condition refuses its completion) and, finding its upload gone, describes the result stored here. Never
        before: a live collect's upload is not a killed one's. The write is conditional: ``If-None-Match: *``
        when the key is free, ``If-Match: <ETag>`` when it holds an older job's result (a new version replaces it).
        If the key already holds this job's result (an earlier collect stored it), that object is described and
        nothing is written.
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
                self._abort_open_uploads(bucket, key)
        except ClientError as e:
            if upload_id is not None:
                self._abort(bucket, key, upload_id)
            if error_code(e) in LOST_RACE:
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
            if error_code(e) in ("NoSuchKey", "404", "NotFound"):
                return {"IfNoneMatch": "*"}
            raise
        if head.get("Metadata", {}).get("job-id") == job_id:
            return self.describe_result(bucket, key)
        return {"IfMatch": head["ETag"]}

    def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: bytes | bytearray
    ) -> dict[str, Any]:
        """Upload one part; the part as ``CompleteMultipartUpload`` lists it: its ETag and number, and the checksum the
        SDK sent with it (botocore adds one by default), which S3 expects back when the part was sent with one
        (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompletedPart.html)."""
        response = self._client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=_body(body)
        )
        checksums = {k: v for k, v in response.items() if k.startswith("Checksum") and k != "ChecksumType"}
        return {"ETag": response["ETag"], "PartNumber": number, **checksums}

    @translated("s3:GetObject")
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

    @translated("s3:PutObject")
    @translated("s3:PutObject")
    def put_new(self, bucket: str, key: str, data: bytes, *, content_type: str) -> bool:
        """Store ``data`` at ``key`` only if no object is there (``If-None-Match: *``); ``False`` if one is (S3
        answers 412 Precondition Failed: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
        A concurrent conditional write (409 ConditionalRequestConflict) is raised as ``StoreUnavailable``."""
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        except ClientError as e:
            if error_code(e) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    @translated("s3:PutObject")
    def put_file(self, bucket: str, key: str, path: str, *, content_type: str) -> None:
        """Store a prepared input file (a target video); see :meth:`_upload_file`."""
        self._upload_file(bucket, key, path, content_type=content_type, metadata={}, condition={}, abort_open=False)

    @translated("s3:PutObject")
    def store_result_file(
        self, bucket: str, key: str, path: str, *, content_type: str, job_id: str, sha256: str | None = None
    ) -> StoredResult:
        """Keep the file at ``path`` (a checked video result) at ``key`` for ``job_id``: as :meth:`store_result`, the
        write create-only (or replacing another job's result by its ETag) and a result already stored by this job
        described instead of written again, but with :data:`PARTS_IN_FLIGHT` parts uploaded at once. ``sha256``: the
        file's, when the caller hashed it as it wrote it (else it is hashed here, as it is read)."""
        condition = self._write_condition(bucket, key, job_id)
        if isinstance(condition, StoredResult):
            return condition
        try:
            response, digest = self._upload_file(
                bucket,
                key,
                path,
                content_type=content_type,
                metadata={"job-id": job_id},
                condition=condition,
                hashed=sha256 is not None,
            )
        except ClientError as e:
            if error_code(e) in LOST_RACE:
                existing = self._write_condition(bucket, key, job_id)
                if isinstance(existing, StoredResult):
                    return existing
            raise
        return StoredResult(
            bucket=bucket,
            key=key,
            size=os.path.getsize(path),
            sha256=sha256 or digest,
            content_type=content_type,
            version_id=response.get("VersionId"),
        )

    def _upload_file(
        self,
        bucket: str,
        key: str,
        path: str,
        *,
        content_type: str,
        metadata: dict[str, str],
        condition: dict[str, Any],
        abort_open: bool = True,
        hashed: bool = False,
    ) -> tuple[Mapping[str, Any], str]:
        """Upload a file: one ``PutObject`` up to one part, else a multipart upload whose parts are read in order (and
        hashed) here and sent :data:`PARTS_IN_FLIGHT` at a time by a thread pool (botocore clients are thread-safe:
        https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html#multithreading-or-multiprocessing-with-clients).
        ``condition`` goes on the ``PutObject`` or ``CompleteMultipartUpload``; any failure aborts the upload, so no
        partial object is ever visible and none is left open (``abort_open``: once complete, also the other uploads
        open on the key, as :meth:`store_result` does). Returns the last response and the file's sha256 (``""`` when
        ``hashed``: the caller has it)."""
        digest = hashlib.sha256()
        size = os.path.getsize(path)
        with open(path, "rb") as source:
            if size <= self._part_bytes:
                data = source.read()
                if not hashed:
                    digest.update(data)
                put = self._client.put_object(
                    Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata, **condition
                )
                return cast(Mapping[str, Any], put), digest.hexdigest()
            upload_id = self._client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata
            )["UploadId"]
            try:
                parts: list[dict[str, Any]] = []
                in_flight: set[Future[dict[str, Any]]] = set()
                with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT) as pool:
                    number = 0
                    while chunk := source.read(self._part_bytes):
                        number += 1
                        in_flight.add(pool.submit(self._upload_part, bucket, key, upload_id, number, chunk))
                        if not hashed:
                            digest.update(chunk)  # while the part is sent (hashlib lets go of the GIL)
                        if len(in_flight) >= PARTS_IN_FLIGHT:  # the next part is read as soon as any one is sent
                            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                            parts.extend(future.result() for future in done)
                    parts.extend(future.result() for future in in_flight)
                parts.sort(key=lambda part: part["PartNumber"])  # CompleteMultipartUpload takes them in order
                completed = self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": cast(Any, parts)}, **condition
                )
            except BaseException:
                self._abort(bucket, key, upload_id)
                raise
            if abort_open:
                self._abort_open_uploads(bucket, key)
        return cast(Mapping[str, Any], completed), "" if hashed else digest.hexdigest()

    @translated("s3:PutObject")
    def put_input(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        """Store an input image (inline in a request, prepared for a provider, or a composite's base)."""
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
        """Abort every multipart upload open on exactly ``key``: called once this collect's own is complete, so what
        is left is a killed attempt's or a losing racer's. Best effort: the result is stored by then, so a failure
        here (logged) must not fail the collect; the bucket's lifecycle rule removes what is left after a day."""
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == key:
                        logger.warning(
                            "aborting a multipart upload left open by a killed attempt or a racing collect",
                            extra={"key": key},
                        )
                        self._abort(bucket, key, upload["UploadId"])
        except (ClientError, BotoCoreError) as e:
            error = error_code(e) if isinstance(e, ClientError) else type(e).__name__
            logger.warning("could not abort the uploads left open on a result key", extra={"key": key, "error": error})

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        # If the abort itself fails, the bucket's lifecycle rule removes the incomplete upload after a day.
        with contextlib.suppress(ClientError):
            self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def _body(data: bytes | bytearray) -> bytes:
    """A request body without copying: botocore sends a ``bytearray`` as it is (its stubs only say bytes)."""
    return cast(bytes, data)
