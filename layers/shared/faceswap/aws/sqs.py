"""The queues on SQS: checks (:class:`SqsCheckScheduler`), job requests (:class:`SqsRequestQueue`) and the
redelivery pacing of failed messages (:class:`SqsMessageDelay`, :func:`redelivery_delay`).

Video jobs have a queue of their own, the media queue, read by the media function (the one with PyAV, the memory,
time and ``/tmp`` a video needs): when a deployment has one (``media_queue_url``), a video job's requests and checks
are sent there, and every other job's to the submit and check queues.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from faceswap.aws import error_code, translated
from faceswap.errors import CreateInFlight, ProviderUnavailable, RateLimited
from faceswap.messages import check_message, request_to_message
from faceswap.model import Job, JobRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from faceswap.jobs import Pipeline

logger = logging.getLogger(__name__)


class SqsCheckScheduler:
    """:class:`faceswap.ports.CheckScheduler` on the check queue (a video job's checks on the media queue, when
    ``media_queue_url`` is given). Message body: ``{"job_id", "check", "task_id"}``."""

    def __init__(self, client: SQSClient, queue_url: str, *, media_queue_url: str = "") -> None:
        self._client = client
        self._queue_url = queue_url
        self._media_queue_url = media_queue_url

    @translated("sqs:SendMessage")
    def schedule(
        self, job_id: str, *, delay_seconds: int, check: int, task_id: str | None = None, video: bool = False
    ) -> None:
        """Send a delayed check message (0..900 s)."""
        self._client.send_message(
            QueueUrl=self._media_queue_url if video and self._media_queue_url else self._queue_url,
            DelaySeconds=max(0, min(900, delay_seconds)),
            MessageBody=check_message(job_id, check, task_id),
        )


class SqsRequestQueue:
    """:class:`faceswap.ports.RequestQueue` on the submit queue (a video job's requests on the media queue, when
    ``media_queue_url`` is given; body: :func:`faceswap.messages.request_to_message`)."""

    def __init__(self, client: SQSClient, queue_url: str, *, media_queue_url: str = "") -> None:
        self._client = client
        self._queue_url = queue_url
        self._media_queue_url = media_queue_url

    @translated("sqs:SendMessage")
    def send(self, request: JobRequest) -> None:
        """Queue the request."""
        video = request.target_video is not None and self._media_queue_url
        self._client.send_message(
            QueueUrl=self._media_queue_url if video else self._queue_url, MessageBody=request_to_message(request)
        )


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
                "could not delay a message; it returns after the visibility timeout", extra={"error": error_code(e)}
            )


class JobDeliveries:
    """One delivery of a queue message's job request or check, run through ``pipeline``; when it fails, the message
    is paced (made visible again after a delay chosen by the failure, through ``message_delay``) and, on its last
    delivery (``max_receive_count``), its job is ended FAILED before the error is raised again (so SQS delivers the
    message again, or moves it to the dead-letter queue). Shared by the submit, poller and media functions.

    Pacing: a request that found its job's create claimed by another delivery (``CreateInFlight``) comes back after
    :func:`retry_backoff` (10, 30, 90… s), at the latest when the claim lapses (its ``retry_after``): the claimer
    usually records its outcome within seconds, and the claim lasts the claiming function's whole timeout; a request
    over a provider's ceiling (``RateLimited``) waits its ``retry_after``, at least ``rate_limited_wait`` seconds; a
    provider that could not take the task (``ProviderUnavailable``) its ``retry_after`` or :func:`redelivery_delay`;
    any other failed request comes back after the queue's visibility
    timeout (its cause may be slow to clear); a failed check after :func:`redelivery_delay`, so a check that keeps
    failing reaches its last delivery within minutes, not after many visibility timeouts.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        message_delay: SqsMessageDelay,
        *,
        max_receive_count: int,
        rate_limited_wait: float = 1.0,
    ) -> None:
        self._pipeline = pipeline
        self._delay = message_delay
        self._max_receive_count = max_receive_count
        self._rate_limited_wait = rate_limited_wait

    def submit(self, request: JobRequest, *, receipt_handle: str, deliveries: int) -> Job | None:
        """``pipeline.submit(request)``, or ``None`` when the request went to the media function instead (a video job
        where this function runs none: ``pipeline.hand_over``); on failure the message is paced and the error raised
        again."""
        try:
            if self._pipeline.hand_over(request):
                return None
            return self._pipeline.submit(request)
        except Exception as e:
            if isinstance(e, CreateInFlight):
                self._delay.delay(receipt_handle, min(e.retry_after or 0, retry_backoff(deliveries)))
            elif isinstance(e, RateLimited):
                self._delay.delay(receipt_handle, max(e.retry_after or 0, self._rate_limited_wait))
            elif isinstance(e, ProviderUnavailable):
                self._delay.delay(receipt_handle, e.retry_after or self._backoff(deliveries))
            self._pipeline.failed_delivery(request.job_id, e, deliveries=deliveries)
            raise

    def check(
        self, job_id: str, check: int, task_id: str | None, *, receipt_handle: str, deliveries: int
    ) -> Job | None:
        """``pipeline.check(...)``; on failure the message is paced and the error raised again."""
        try:
            return self._pipeline.check(job_id, check=check, task_id=task_id)
        except Exception as e:
            self._delay.delay(receipt_handle, self._backoff(deliveries))
            self._pipeline.failed_delivery(job_id, e, deliveries=deliveries)
            raise

    def _backoff(self, deliveries: int) -> float:
        return redelivery_delay(deliveries, max_receive_count=self._max_receive_count)
