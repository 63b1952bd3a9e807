"""Webhooks: each job's callback URL and secret, and taking a provider's callback (verify first, fail closed).

A callback is verified on the raw request before anything else is read (design.md "Webhook security"): the per-job
secret (:func:`faceswap.ids.webhook_secret`) the provider presents in a header or query parameter, compared in
constant time. Only then is the body looked at, and only to learn a task id the job row lacks: the task's status
always comes from the provider's own API (:class:`faceswap.collection.Collector`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from faceswap.checks import CheckPolicy
from faceswap.collection import Collector
from faceswap.errors import CopyOutOfTime, InvalidCallback, RateLimited, UnsupportedCallbackType, WebhookRejected
from faceswap.ids import verify_webhook_secret, webhook_secret
from faceswap.lifecycle import Lifecycle, Phase, log_keys
from faceswap.model import Job
from faceswap.ports import Provider, Webhook

logger = logging.getLogger(__name__)


class WebhookSigner:
    """Each job's webhook, from the deployment's callback base URL and signing key.

    Parameters
    ----------
    callback_base_url
        Base URL of the HTTP API; callbacks go to ``{base}/callbacks/{provider}/{job_id}``.
    signing_key
        The webhook signing key (bytes), or a function returning it (read from Secrets Manager when used).
    """

    def __init__(self, callback_base_url: str, signing_key: bytes | Callable[[], bytes]) -> None:
        self.callback_base_url = callback_base_url.rstrip("/")
        self._signing_key = signing_key

    def webhook(self, provider: str, job_id: str) -> Webhook:
        """The URL and secret a provider's create is given for ``job_id``."""
        return Webhook(
            url=f"{self.callback_base_url}/callbacks/{provider}/{job_id}", secret=webhook_secret(self._key(), job_id)
        )

    def verify(self, job_id: str, presented: str | None) -> bool:
        """Whether ``presented`` is ``job_id``'s secret (constant time; a missing secret fails)."""
        return verify_webhook_secret(self._key(), job_id, presented)

    def _key(self) -> bytes:
        key = self._signing_key
        return key() if callable(key) else key


@dataclass(kw_only=True)
class Callbacks:
    """Takes providers' callbacks.

    Attributes
    ----------
    lifecycle
        The jobs table's transitions.
    providers
        Provider adapters by name (where each presents its secret; whether its callbacks are JSON).
    webhooks
        Verifies the presented secret.
    collector
        Collects the job from the provider's own status.
    checks
        Takes over a collect the callback cannot finish in its time.
    """

    lifecycle: Lifecycle
    providers: Mapping[str, Provider]
    webhooks: WebhookSigner
    collector: Collector
    checks: CheckPolicy

    def callback(
        self,
        provider_name: str,
        job_id: str,
        *,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
        deadline: float | None = None,
    ) -> Job:
        """Take a provider's callback: verify it, then collect from the provider's own status.

        Parameters
        ----------
        provider_name, job_id
            From the callback route ``/callbacks/{provider}/{job_id}``.
        headers, query
            The request's headers (lower-case names) and query parameters; the provider says which one carries
            the per-job secret (PiAPI: the ``x-webhook-secret`` header; CRUN: the ``token`` query parameter).
        body
            The raw body; used only to learn a task id the job row lacks, never as the task's status.
        deadline
            ``time.monotonic()`` by which the result copy must end so the callback is answered in time (the HTTP
            API waits 30 s); a copy that would not end by then is stopped and handed to a check at once.

        Returns
        -------
        Job
            The job after collecting (a repeat for a finished job changes nothing).

        Raises
        ------
        WebhookRejected
            The secret is missing or wrong, or the job is unknown or belongs to another provider. Checked first,
            on the raw request: an unauthenticated caller learns nothing else.
        UnsupportedCallbackType, InvalidCallback
            For a provider with ``json_callbacks``: the content type is not ``application/json`` (or
            ``application/*+json``), or the body is not a JSON object. Nothing is changed.
        ProviderUnavailable
            The provider could not be asked for the task's status; the caller answers 5xx so it retries.
        """
        provider = self.providers.get(provider_name)
        presented = provider.presented_secret(headers, query) if provider is not None else None
        if not self.webhooks.verify(job_id, presented):
            raise WebhookRejected("The callback's secret is missing or wrong.")
        if provider is not None and provider.json_callbacks:
            check_json_callback(provider_name, headers, body)
        job = self.lifecycle.get(job_id)
        if job is None or job.provider != provider_name or provider is None:
            raise WebhookRejected("The callback names no job of this provider.")
        if job.terminal:
            return job
        if job.provider_task_id is None:
            task_id = provider.task_id_from_callback(body)
            if task_id is None or job.phase not in (Phase.OUTCOME_UNKNOWN, Phase.CREATING):
                return job
            if any(attempt.get("provider_task_id") == task_id for attempt in job.attempts):
                return job  # a late callback of an earlier task of this job (a face map's earlier part): not this one
            if job.phase is Phase.OUTCOME_UNKNOWN:
                job = self.lifecycle.learn_task_id(job, task_id) or self.lifecycle.reread(job)
            else:  # the create is still being answered: keep the task id now, in case its submit stops first
                job = self.lifecycle.note_task_id(job, task_id) or self.lifecycle.reread(job)
        try:
            return self.collector.collect(job, max_wait=0, deadline=deadline, by="webhook")
        except RateLimited as e:
            # The provider's ceiling has no call free now: answer the callback at once and let a check collect
            # once a call is free, rather than hold the provider's request (and this function) for a slot.
            logger.info("callback deferred to a check: call ceiling reached", extra=log_keys(job))
            self.checks.soon(job, after=e.retry_after or 1)
            return job
        except CopyOutOfTime:
            # The copy would not end in the callback's time: a check (with the poller's own time) collects it now.
            logger.info("callback deferred to a check: the result copy did not fit its time", extra=log_keys(job))
            self.checks.soon(job)
            return job


def check_json_callback(provider_name: str, headers: Mapping[str, str], body: bytes) -> None:
    """Refuse a callback that is not a JSON object sent as ``application/json`` (or ``application/*+json``).

    Raises
    ------
    UnsupportedCallbackType
        Another content type.
    InvalidCallback
        The body is not a JSON object.
    """
    media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if not (
        media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        raise UnsupportedCallbackType(f"Callbacks from {provider_name} must be application/json.")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidCallback("The callback body is not a JSON object.")
