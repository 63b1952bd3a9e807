"""Observability at the pipeline's edge: job keys on every log line, EMF metrics, timed provider calls.

The domain (:mod:`faceswap.jobs` and the modules it puts together) knows nothing of Powertools. Its own log lines
carry the job's keys as ``extra`` (:func:`faceswap.lifecycle.log_keys`) and go to stdlib loggers under ``faceswap``
(one per module), which the handlers route through their Powertools Logger (``copy_config_to_registered_loggers``).
What the domain does not say itself is observed at its ports: :class:`ObservedProvider` wraps each provider adapter
and reports every ``create_task`` / ``get_task`` call to a :class:`ProviderObserver`; :class:`Telemetry` is that
observer in the Lambda handlers, and records what each handler learns about a job.

Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``; each has the ``service`` dimension, and one EMF record
carries all the dimension sets listed, so dimensions never leak from one record to the next):

=================  ============  =======================================  =============================================
metric             unit          dimension sets (besides ``service``)     recorded when
=================  ============  =======================================  =============================================
JobsSubmitted      Count         (), (provider)                           a provider's create returned a task id
JobsSucceeded      Count         (), (provider)                           a job ended SUCCEEDED (publisher, once a job)
JobsFailed         Count         (), (provider), (error_code)             a job ended FAILED or TIMED_OUT (publisher)
ResultBytes        Bytes         (), (provider)                           the size of a kept result
TimeToResult       Seconds       (), (provider)                           created_at → finished_at of a SUCCEEDED job
ProviderCalls      Count         (provider), (provider, operation)        every create_task / get_task
ProviderErrors     Count         (provider), (provider, operation)        0 or 1 with every call (Average = error rate)
ProviderErrors     Count         (provider, error_code)                   a call that raised (its error code)
ProviderLatency    Milliseconds  (provider), (provider, operation)        every call, failed ones included
WebhookRejections  Count         ()                                       a callback without the job's secret (handler)
CallbackBodyRefusals Count       ()                                       a callback with the secret but not in its
                                                                          provider's format (415/400; handler)
=================  ============  =======================================  =============================================

``operation`` is ``create_task`` or ``get_task``. Values are counts, sizes and durations only: no secret, no
image byte and no URL is ever a metric value or dimension.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from faceswap.errors import PipelineError
from faceswap.images import ImageLimits
from faceswap.lifecycle import JobState
from faceswap.model import Job, TaskSnapshot, parse_time
from faceswap.ports import Provider, TaskInput, Webhook

TRACED_MODULES = ("botocore", "httpx")
"""What X-Ray traces: every AWS call (boto3/botocore) and every provider and result-download call (httpx).

Pass to ``Tracer(patch_modules=…)`` before the pipeline's ``httpx.Client`` objects are made: aws-xray-sdk
patches httpx by replacing ``httpx.Client``. Traced URLs are recorded without their query string."""

JOB_KEYS = ("job_id", "provider", "provider_task_id")
"""The keys every log line about a job carries."""


class ProviderObserver(Protocol):
    """Told about every call :class:`ObservedProvider` makes to a provider."""

    def provider_call(
        self, provider: str, operation: str, *, milliseconds: float, task_id: str | None, error_code: str | None
    ) -> None:
        """One ``create_task`` or ``get_task`` call.

        Parameters
        ----------
        provider, operation
            The provider's name and ``create_task`` or ``get_task``.
        milliseconds
            How long the call took (failed calls included).
        task_id
            The task the call created or read; ``None`` when a create failed.
        error_code
            The raised error's ``code`` (``internal_error`` for an unexpected exception), or ``None``.
        """
        ...


class ObservedProvider:
    """A :class:`faceswap.ports.Provider` that reports each call to an observer; otherwise it is the adapter.

    Parameters
    ----------
    provider
        The adapter to wrap.
    observer
        Told the duration, task id and outcome of every ``create_task`` and ``get_task``.
    clock
        Monotonic seconds (injected by tests).
    """

    def __init__(
        self, provider: Provider, observer: ProviderObserver, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.provider = provider
        self.name: str = provider.name
        self.image_limits: ImageLimits = provider.image_limits
        self.uses_webhook: bool = provider.uses_webhook
        self.json_callbacks: bool = provider.json_callbacks
        self.result_hosts: tuple[str, ...] = provider.result_hosts
        self._observer = observer
        self._clock = clock

    def create_task(self, task: TaskInput, webhook: Webhook | None) -> str:
        """The adapter's ``create_task``, timed and reported; errors are re-raised unchanged."""
        started = self._clock()
        try:
            task_id = self.provider.create_task(task, webhook)
        except Exception as e:
            self._report("create_task", started, task_id=None, error=e)
            raise
        self._report("create_task", started, task_id=task_id, error=None)
        return task_id

    def get_task(self, task_id: str) -> TaskSnapshot:
        """The adapter's ``get_task``, timed and reported; errors are re-raised unchanged."""
        started = self._clock()
        try:
            snapshot = self.provider.get_task(task_id)
        except Exception as e:
            self._report("get_task", started, task_id=task_id, error=e)
            raise
        self._report("get_task", started, task_id=task_id, error=None)
        return snapshot

    def presented_secret(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The adapter's own (no provider call is made)."""
        return self.provider.presented_secret(headers, query)

    def task_id_from_callback(self, body: bytes) -> str | None:
        """The adapter's own (no provider call is made)."""
        return self.provider.task_id_from_callback(body)

    def quota_delay(self) -> float | None:
        """The adapter's own (no provider call is made)."""
        return self.provider.quota_delay()

    def __getattr__(self, name: str) -> Any:
        """Anything else the adapter offers, unchanged (only task creation and reads are calls to observe)."""
        return getattr(self.provider, name)

    def _report(self, operation: str, started: float, *, task_id: str | None, error: Exception | None) -> None:
        code = None if error is None else (error.code if isinstance(error, PipelineError) else "internal_error")
        self._observer.provider_call(
            self.name,
            operation,
            milliseconds=(self._clock() - started) * 1000,
            task_id=task_id,
            error_code=code,
        )


class Telemetry:
    """What a Lambda handler records about jobs: log keys, X-Ray annotations and EMF metrics (Powertools).

    Job keys are set with the Logger's *thread-safe* keys: on Lambda a function runs one invocation at a
    time and they behave as ``append_keys``; the local runtime runs every function in threads of one process
    that share the ``faceswap`` logger, and there a job's keys must not reach another thread's lines.
    ``inject_lambda_context(clear_state=True)`` clears them at the start of each invocation.

    Parameters
    ----------
    logger
        The handler's Logger.
    tracer
        The handler's Tracer: ``job_id`` and ``provider`` become annotations (searchable in X-Ray).
    namespace, service
        Metric namespace and ``service`` dimension; default ``POWERTOOLS_METRICS_NAMESPACE`` and
        ``POWERTOOLS_SERVICE_NAME``, as for the handler's ``Metrics``.
    """

    def __init__(
        self,
        logger: Logger,
        *,
        tracer: Tracer | None = None,
        namespace: str | None = None,
        service: str | None = None,
    ) -> None:
        self._logger = logger
        self._tracer = tracer
        self._namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
        self._service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or "service_undefined"

    # ---------------------------------------------------------------------------------------------- logging

    def job(self, job_id: str | None, *, provider: str | None = None, provider_task_id: str | None = None) -> None:
        """Make the following log lines of this invocation about this job (the previous job's keys go).

        ``job(None)`` clears them, for lines about no job (an ignored upload).
        """
        self._logger.thread_safe_remove_keys(JOB_KEYS)
        self.add_job_keys(job_id=job_id, provider=provider, provider_task_id=provider_task_id)

    def add_job_keys(self, **keys: str | None) -> None:
        """Add job keys as soon as they are known (``None`` values are skipped)."""
        known = {name: value for name, value in keys.items() if value is not None}
        if not known:
            return
        self._logger.thread_safe_append_keys(**known)
        if self._tracer is not None:
            for name in ("job_id", "provider"):
                if name in known:
                    self._tracer.put_annotation(key=name, value=known[name])

    def job_seen(self, job: Job) -> None:
        """Set the keys of a job as read from the jobs table."""
        self.job(job.job_id, provider=job.provider, provider_task_id=job.provider_task_id)

    # ---------------------------------------------------------------------------------------------- metrics

    def provider_call(
        self, provider: str, operation: str, *, milliseconds: float, task_id: str | None, error_code: str | None
    ) -> None:
        """Record one provider call (see :class:`ProviderObserver`); a created task is a job submitted."""
        self.add_job_keys(provider=provider, provider_task_id=task_id)
        self._emit(
            {
                "ProviderLatency": (MetricUnit.Milliseconds, milliseconds),
                "ProviderCalls": (MetricUnit.Count, 1),
                "ProviderErrors": (MetricUnit.Count, 0 if error_code is None else 1),
            },
            {"provider": provider},
            {"provider": provider, "operation": operation},
        )
        if error_code is not None:
            self._emit({"ProviderErrors": (MetricUnit.Count, 1)}, {"provider": provider, "error_code": error_code})
        elif operation == "create_task":
            self._emit({"JobsSubmitted": (MetricUnit.Count, 1)}, {}, {"provider": provider})

    def job_ended(self, job: Job) -> None:
        """Record a job's end: succeeded (with result size and time to result) or failed (by error code).

        Call once per job, where its end is observed once: the jobs table's stream (publisher).
        """
        if not job.terminal:
            return
        by_provider = {"provider": job.provider}
        if job.state is JobState.SUCCEEDED:
            values: dict[str, tuple[MetricUnit, float]] = {"JobsSucceeded": (MetricUnit.Count, 1)}
            size = (job.result or {}).get("size")
            if isinstance(size, int):
                values["ResultBytes"] = (MetricUnit.Bytes, size)
            if job.finished_at:
                seconds = (parse_time(job.finished_at) - parse_time(job.created_at)).total_seconds()
                values["TimeToResult"] = (MetricUnit.Seconds, max(0.0, seconds))
            self._emit(values, {}, by_provider)
            return
        code = str((job.error or {}).get("code") or ("timed_out" if job.state is JobState.TIMED_OUT else "unknown"))
        self._emit({"JobsFailed": (MetricUnit.Count, 1)}, {}, by_provider, {"error_code": code})

    def _emit(self, values: Mapping[str, tuple[MetricUnit, float]], *dimension_sets: Mapping[str, str]) -> None:
        """Print one EMF record: ``values`` (``{name: (unit, value)}``) under each dimension set plus ``service``."""
        record = EphemeralMetrics(namespace=self._namespace, service=self._service)
        for name, (unit, value) in values.items():
            record.add_metric(name=name, unit=unit, value=value)
        first, *others = dimension_sets
        for dimension, label in first.items():
            record.add_dimension(name=dimension, value=label)
        for dimensions in others:
            record.add_dimensions(service=self._service, **dimensions)
        record.flush_metrics()
