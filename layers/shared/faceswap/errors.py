"""The pipeline's exception hierarchy.

Every class carries the stable ``code`` a user sees in ``job.error.code`` and in "Job Failed" events, and
whether a job that failed with it may be re-run (``retryable``).

PipelineError               base: ``code``, ``message``, ``retryable``
├── InputError              the request or its images are unusable; never retried, never failed over
│   ├── InvalidRequest      ``invalid_request``: a manifest or request that does not parse or validate
│   ├── InputNotFound       ``input_not_found``: a named input object or URL does not exist
│   ├── SwapFaceMissing     ``swap_face_missing``: no ``faces/<face-id>.<ext>`` for an ``incoming/`` upload
│   ├── InvalidImage        ``invalid_image``: bytes that do not decode as a supported image
│   ├── ImageTooLarge       ``image_too_large``: over the byte cap, or a decompression bomb
│   ├── InvalidVideo        ``invalid_video``: no video stream, corrupt or truncated, zero frames
│   ├── VideoTooLong        ``video_too_long``: longer than the provider takes (and the request did not ask to trim)
│   ├── VideoTooLarge       ``video_too_large``: over the byte cap, or too big to fit the provider's limits
│   ├── NoFaceDetected      ``no_face_detected``: the provider (or the face matcher) found no face to swap
│   ├── ReferenceFaceNotFound ``reference_face_not_found``: no face of the target is the person in a reference
│   └── ReferenceFaceAmbiguous ``reference_face_ambiguous``: two faces of the target are too close to call
├── ProviderError           the provider refused or failed the work
│   ├── ProviderRejected    ``provider_rejected``: a 4xx the provider will keep giving (terminal)
│   ├── ProviderOutOfCredit ``provider_out_of_credit``: the account has no credit (terminal, alert ops)
│   ├── ProviderUnavailable ``provider_unavailable``: 429/5xx/network; safe to try again later
│   │   └── RateLimited     ``rate_limited``: our own ceiling for the provider is reached; wait, never fail over
│   │       └── CreateInFlight ``create_in_flight``: another delivery of the job is making its create; come back
│   ├── ProviderTaskFailed  ``provider_task_failed``: the provider ran the task and reported failure
│   │   └── PoseMismatch    ``pose_mismatch``: the faces are turned too differently for the provider (self-hosted)
│   └── SubmitOutcomeUnknown ``submit_outcome_unknown``: a create may or may not have reached the provider
├── ResultError             the provider's result could not be kept
│   ├── ResultUrlRefused    ``result_url_refused``: not https, host not allowed, or a private address
│   ├── ResultExpired       ``result_expired``: the result URL is gone (403/404/410)
│   ├── ResultTooLarge      ``result_too_large``: the result is over the size cap
│   ├── InvalidResult       ``invalid_result``: the result is not an image (content type, magic bytes)
│   └── ResultMissing       ``result_missing``: the provider says done but gives no result URL
├── JobTimedOut             ``timed_out``: the job passed its deadline
├── ConfigError             ``configuration_error``: the deployment's configuration is wrong, or a provider's key
│                           secret cannot be read (faceswap.config); retryable once fixed
├── ProcessingFailed        ``processing_failed``: the pipeline's own step failed on every delivery of its message
│                           (the message is in a dead-letter queue); retry the job once the cause is fixed
├── WebhookRejected         ``webhook_unauthorized``: a callback whose secret is missing or wrong
├── CallbackRefused         a verified callback whose body breaks the provider's format (never stored on a job)
│   ├── UnsupportedCallbackType ``unsupported_media_type``: not the provider's content type (415)
│   └── InvalidCallback     ``invalid_callback``: not the JSON object the provider sends (400)
└── ApiError                what the jobs API answers about a job (never stored on a job)
    ├── JobNotFound         ``job_not_found``: no job with that id (404)
    ├── JobNotRetryable     ``job_not_retryable``: the job has not failed, or its error is not retryable (409)
    └── PayloadTooLarge     ``payload_too_large``: inline images over what one request can carry (413)

CopyOutOfTime               not a PipelineError (never seen by a user): a result copy stopped at its caller's
                            deadline, nothing kept; the callback hands the job to a check
StoreUnavailable            not a PipelineError (never a job's error): an AWS store (the jobs table, a bucket, a
                            queue, the bus) failed in a way the adapter does not map (throttled, denied, down); the
                            message is delivered again, and a job whose message fails every delivery ends
                            ``processing_failed``
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline reports to a user.

    Parameters
    ----------
    message
        A sentence a person can act on. Never contains secrets or image bytes.
    retryable
        Overrides the class default: whether re-running the job may succeed.
    """

    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def as_dict(self) -> dict[str, object]:
        """The error as stored on the job row and published in events: ``{code, message, retryable}``."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class InputError(PipelineError):
    """The request or its images are unusable; the same input will fail again."""


class InvalidRequest(InputError):
    code = "invalid_request"


class InputNotFound(InputError):
    code = "input_not_found"


class SwapFaceMissing(InputError):
    code = "swap_face_missing"


class InvalidImage(InputError):
    code = "invalid_image"


class ImageTooLarge(InputError):
    code = "image_too_large"


class InvalidVideo(InputError):
    code = "invalid_video"


class VideoTooLong(InputError):
    code = "video_too_long"


class VideoTooLarge(InputError):
    code = "video_too_large"


class NoFaceDetected(InputError):
    code = "no_face_detected"


class ReferenceFaceNotFound(InputError):
    """No face of the target image is similar enough to a face map's reference (see :mod:`faceswap.faces`)."""

    code = "reference_face_not_found"


class ReferenceFaceAmbiguous(InputError):
    """Two faces of the target image match a reference within the margin, or two references chose one face."""

    code = "reference_face_ambiguous"


class ProviderError(PipelineError):
    """The provider refused or failed the work."""


class ProviderRejected(ProviderError):
    code = "provider_rejected"


class ProviderOutOfCredit(ProviderError):
    code = "provider_out_of_credit"


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, retryable: bool | None = None) -> None:
        super().__init__(message, retryable=retryable)
        #: seconds the provider asked us to wait (``Retry-After``), if it said
        self.retry_after = retry_after


class RateLimited(ProviderUnavailable):
    """The pipeline's own ceiling of calls to this provider is reached; ``retry_after`` says for how long."""

    code = "rate_limited"


class CreateInFlight(RateLimited):
    """Another delivery of the same request (an S3 event delivered twice, at once) claimed the job's create and may
    still be making it: nothing was sent; deliver this one again after ``retry_after`` seconds, when that claim has
    lapsed (the claimer has recorded the outcome by then, or died and left it unknown). Never ends the job."""

    code = "create_in_flight"


class ProviderTaskFailed(ProviderError):
    code = "provider_task_failed"
    retryable = True


class PoseMismatch(ProviderTaskFailed):
    """The self-hosted engine's classical swap cannot turn a face: the two faces' head turns are too far apart (or one
    is a profile). Retryable: another provider may swap them, so a job with fallback providers fails over."""

    code = "pose_mismatch"


class SubmitOutcomeUnknown(ProviderError):
    code = "submit_outcome_unknown"
    retryable = True


class ResultError(PipelineError):
    """The provider's result could not be kept."""


class ResultUrlRefused(ResultError):
    code = "result_url_refused"


class ResultExpired(ResultError):
    code = "result_expired"
    retryable = True


class ResultTooLarge(ResultError):
    code = "result_too_large"


class InvalidResult(ResultError):
    code = "invalid_result"


class ResultMissing(ResultError):
    code = "result_missing"
    retryable = True


class JobTimedOut(PipelineError):
    code = "timed_out"
    retryable = True


class ProcessingFailed(PipelineError):
    """The pipeline's own processing of the job failed on every delivery of its queue message; the message is
    in a dead-letter queue for inspection and the job is ended so that it is visible (retry it)."""

    code = "processing_failed"
    retryable = True


class WebhookRejected(PipelineError):
    code = "webhook_unauthorized"


class CallbackRefused(PipelineError):
    """A callback with the job's secret whose body is not in its provider's format; nothing is changed."""


class UnsupportedCallbackType(CallbackRefused):
    code = "unsupported_media_type"


class InvalidCallback(CallbackRefused):
    code = "invalid_callback"


class ApiError(PipelineError):
    """What the jobs API answers about a job; carries its HTTP ``status``."""

    status = 400


class JobNotFound(ApiError):
    code = "job_not_found"
    status = 404


class JobNotRetryable(ApiError):
    code = "job_not_retryable"
    status = 409


class PayloadTooLarge(ApiError):
    """Inline images over what one request can carry: Lambda's 6 MB synchronous payload limit, base64 included."""

    code = "payload_too_large"
    status = 413


class CopyOutOfTime(Exception):
    """A result download reached the caller's deadline before it ended; nothing was kept. The job is unchanged:
    collect it again where there is time (the callback hands it to a check)."""


class StoreUnavailable(Exception):
    """An AWS store the pipeline keeps its state in failed in a way its adapter does not map to a domain outcome
    (throttling, access denied, a service error). Not a job's fault and never stored on a job: the queue message
    being handled fails and is delivered again; on its last delivery the job ends ``processing_failed``.

    Parameters
    ----------
    operation
        What failed, e.g. ``dynamodb:UpdateItem``.
    code
        The AWS error code (``ProvisionedThroughputExceededException``), or the exception's type for a client-side
        failure (``EndpointConnectionError``).
    """

    def __init__(self, operation: str, code: str) -> None:
        super().__init__(f"{operation} failed: {code}")
        self.operation = operation
        self.code = code
