"""Submission: record a job, prepare its inputs and create its provider task, once; fail over to the next provider.

Each create is claimed on the job row first (``claim-create``, see :mod:`faceswap.lifecycle`), so a repeated
message never creates a second task; a create whose outcome is unknown is never sent again.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faceswap import media
from faceswap.checks import CheckPolicy
from faceswap.config import ConfigError
from faceswap.errors import (
    CreateInFlight,
    InputError,
    InvalidRequest,
    PipelineError,
    ProviderRejected,
    ProviderTaskFailed,
    ProviderUnavailable,
    RateLimited,
    StoreUnavailable,
    SubmitOutcomeUnknown,
)
from faceswap.faces import DETECT_CROP, ISOLATE_COMPOSITE, ChosenFace, FaceChooser
from faceswap.gate import CallGate
from faceswap.images import PreparedImage, for_matcher
from faceswap.inputs import InputPreparer
from faceswap.lifecycle import Lifecycle, Phase, log_keys
from faceswap.media import WORKDIR_PREFIX, PreparedVideo
from faceswap.model import ImageRef, Job, JobRequest
from faceswap.parts import Composer
from faceswap.ports import FaceInput, Provider, RequestQueue, TaskInput
from faceswap.providers.registry import face_choice, face_map_refusal, video_face_choice, video_limits, video_refusal
from faceswap.webhooks import WebhookSigner

logger = logging.getLogger(__name__)

CREATE_CLAIM_MARGIN_SECONDS = 5.0
"""A request that found the job's create claimed comes back this long after the claim lapses."""


@dataclass(kw_only=True)
class Submitter:
    """Creates provider tasks for jobs.

    Attributes
    ----------
    lifecycle
        The jobs table's transitions.
    providers
        Provider adapters by name.
    gate
        Turns under the providers' call ceilings.
    inputs
        Reads and prepares the images.
    webhooks
        Each job's webhook URL and secret.
    checks
        Schedules the first check of a submitted job.
    faces
        Chooses the faces of a face map (``None``: this deployment has no face matcher; such a job fails
        ``configuration_error``, retryable).
    composer
        Makes each part's crop for providers that take a face map by isolate and composite.
    max_attempts
        Creates at one provider that may fail ``provider_unavailable`` before the job fails (or moves on).
    requeue
        The submit queue: a move to the next provider made outside the submit function (a callback, a check) is
        queued for it, whose permissions and ceiling the create needs; ``None``: the create is made at once.
    """

    lifecycle: Lifecycle
    providers: Mapping[str, Provider]
    gate: CallGate
    inputs: InputPreparer
    webhooks: WebhookSigner
    checks: CheckPolicy
    max_attempts: int = 3
    requeue: RequestQueue | None = None
    faces: FaceChooser | None = None
    composer: Composer | None = None

    def receive(self, request: JobRequest) -> tuple[Job, bool]:
        """Record a job from the API or an event as RECEIVED, before it is queued for submission.

        Returns ``(job, created)``: the job as stored, and whether this call created it (``False`` for a repeat).
        """
        return self.lifecycle.record(request)

    def submit(self, request: JobRequest) -> Job:
        """Create the job's row (if it has none) and its provider task, once.

        Parameters
        ----------
        request
            The job to run; its ``job_id`` is deterministic, so a repeated event finds the existing row.

        Returns
        -------
        Job
            The job as stored: SUBMITTED, FAILED (bad input, provider refusal) or, for a repeat, as found.

        Raises
        ------
        ProviderUnavailable
            The provider could not take the task and this was not the last of ``max_attempts`` creates
            (counted on the job row): no task was created; deliver the request again later.
        RateLimited
            The pipeline's ceiling of calls to the provider is reached: nothing was sent and the job stays
            as it was; deliver the request again after ``retry_after`` seconds (this is not an attempt).
            ``CreateInFlight`` (a kind of it): another delivery holds the job's create claim; the same.
        """
        job = self.lifecycle.get(request.job_id)
        if job is not None:
            if job.phase is Phase.CREATING and job.provider_task_id:
                # An earlier submit stopped before recording its task, which a verified callback named meanwhile.
                return self._recorded(job, job.provider_task_id)
            if (left := self.lifecycle.create_claim_left(job)) > 0:
                # Another delivery of this request (an S3 event delivered twice, at once, or this very message
                # delivered again) claimed the create and may be making it now: come back once the claim has lapsed,
                # when its outcome is recorded or, the claimer having died, unknown (below). This message is not
                # dropped, so nothing depends on the claimer's own message coming back.
                raise CreateInFlight(
                    "Another delivery of this job is making its create; this one comes back when that is settled.",
                    retry_after=left + CREATE_CLAIM_MARGIN_SECONDS,
                )
            if job.phase is Phase.CREATING:
                # An earlier submit claimed the create and stopped without recording its outcome.
                unknown = "An earlier submit stopped before recording whether the provider took the task."
                return self._outcome_unknown(job, SubmitOutcomeUnknown(unknown))
            if job.phase is not Phase.AWAITING_CREATE:
                logger.info("duplicate request for an existing job", extra={**log_keys(job), "state": job.state})
                return job
            # The row is the truth: after a move to the next provider, a late delivery of the first request must
            # create the task at the job's provider now, not at the one the request named.
            request = job.request(invalid=request.invalid)
        with contextlib.ExitStack() as scratch:  # a target video's files in /tmp, removed once the create is answered
            return self._create(request, job, scratch)

    def _create(self, request: JobRequest, job: Job | None, scratch: contextlib.ExitStack) -> Job:
        """Prepare the inputs of ``request`` (its row ``job``, if any), claim its create and make its provider task
        (see :meth:`submit`); ``scratch`` holds what the create needs until it is answered."""
        provider = self.providers.get(request.provider)
        video: PreparedVideo | None = None
        target: PreparedImage | None
        try:
            if request.invalid is not None:
                raise request.invalid
            if provider is None:
                raise InvalidRequest(
                    f"Unknown provider {request.provider!r}; configured: {', '.join(sorted(self.providers))}."
                )
            part = job.part if job is not None else 0
            first_frame: PreparedImage | None = None
            if request.target_video is not None:
                target, video = None, self._prepare_video(request, provider, scratch)
                # a face map chooses in the first frame, as the provider receives it; the chosen faces are followed
                first_frame = media.first_frame(video.path) if request.face_map else None
            else:
                target = (
                    # a face map's later part is cut from the target as its first part was sent (faceswap.parts)
                    self.composer.base(request.job_id, provider.name)
                    if part > 0 and self.composer is not None
                    else self.inputs.prepare(request.target_image, provider, "target image")
                )
            chosen: list[ChosenFace] = []
            faces: tuple[FaceInput, ...] = ()
            if request.face_map:  # each pair names its swap image: the top-level one is the first pair's
                chosen_in = target or first_frame
                assert chosen_in is not None, "a face map has a target image or a video's first frame"
                chosen, faces = self._choose_faces(
                    request, provider, chosen_in, earlier=job.chosen_faces if job else [], part=part
                )
                swap = faces[0].swap_image
            else:  # same-image-swap: the swap faces are the target's own, so the one prepared image serves both
                swap = (
                    target
                    if target is not None and request.swap_image == request.target_image
                    else self.inputs.prepare(request.swap_image, provider, "swap image")
                )
        except (InputError, ProviderRejected, ConfigError) as e:
            return self.lifecycle.reject(request, e, job=job)
        urls_name = ""
        if chosen and chosen[0].method == ISOLATE_COMPOSITE:
            # One pair per task: the crop around this part's face goes as a one-face swap of its swap image.
            if self.composer is None:
                return self.lifecycle.reject(request, ConfigError("This deployment cannot composite."), job=job)
            assert target is not None, "a face map takes a target image"
            target = self.composer.part_input(
                request.job_id, provider.name, target, chosen[part], provider.image_limits, part=part
            )
            faces, urls_name = (), f"part-{part}-"

        choices = [face.as_dict() for face in chosen]
        sent = (
            {"sent": video.info.as_dict(), "source": video.source.as_dict(), "trimmed_to": video.trimmed_to}
            if video is not None
            else None
        )
        if job is not None:
            # A row exists (an earlier delivery, or the jobs API made it): the turn under the provider's ceiling comes
            # first, so a delivery the ceiling sends back writes nothing (a claim and its release are two writes of the
            # job's row). The turn is held until the create is answered; what runs before the call (the claim, the
            # inputs' URLs, the signing key) is a few requests, well within the limiter's allowance for a call.
            scratch.enter_context(self.gate.turn(provider.name))
        claimed = (
            self.lifecycle.claim_create(job, chosen_faces=choices, media=sent)
            if job is not None
            else self.lifecycle.record_and_claim(request, chosen_faces=choices, media=sent)
        )
        if claimed is None:  # another delivery claimed it first: its row says how it stands
            current = self.lifecycle.get(request.job_id)
            assert current is not None, "a row that refused a conditional write exists"
            return current
        task_input = TaskInput(
            job_id=claimed.job_id,
            task=claimed.task,
            target_image=target,
            swap_image=swap,
            options=claimed.options,
            image_urls=self.inputs.image_urls(claimed.job_id, target, swap, name=urls_name) if target else None,
            faces=faces,
            face_urls=self.inputs.face_urls(claimed.job_id, faces) if faces else None,
            match_crops=self._crop_matcher(faces) if chosen and chosen[0].method == DETECT_CROP else None,
            target_video=video,
            video_urls=self.inputs.video_urls(claimed.job_id, video, swap) if video is not None else None,
        )
        try:  # the signing key is read here: a failure sends nothing, so the claim goes back
            webhook = self.webhooks.webhook(provider.name, claimed.job_id) if provider.uses_webhook else None
        except Exception:
            self.lifecycle.release_create(claimed, attempted=False)
            raise
        try:
            with self.gate.turn(provider.name) if job is None else contextlib.nullcontext():
                task_id = provider.create_task(task_input, webhook)
        except (RateLimited, StoreUnavailable):
            # Nothing was sent: our ceiling, or our own store (the limiter, the prepared inputs) failed before the
            # provider's request. The claim is handed back, so the next delivery creates the task.
            self.lifecycle.release_create(claimed, attempted=False)
            raise
        except SubmitOutcomeUnknown as e:
            return self._outcome_unknown(claimed, e)
        except (ProviderUnavailable, ProviderTaskFailed) as e:
            if e.retryable and claimed.fallback_providers:
                return self.fail_over(claimed, e, in_submit=True)
            if isinstance(e, ProviderUnavailable) and claimed.submit_attempts < self.max_attempts:
                self.lifecycle.release_create(claimed, attempted=True)
                raise
            return self.lifecycle.fail(claimed, e) or self.lifecycle.reread(claimed)
        except PipelineError as e:
            return self.lifecycle.fail(claimed, e) or self.lifecycle.reread(claimed)

        return self._recorded(claimed, task_id)

    def _choose_faces(
        self,
        request: JobRequest,
        provider: Provider,
        target: PreparedImage,
        *,
        earlier: list[dict[str, Any]],
        part: int,
    ) -> tuple[list[ChosenFace], tuple[FaceInput, ...]]:
        """The faces ``request``'s face map chooses in ``target`` as ``provider`` will receive it, and the inputs its
        create takes for them: every chosen face's, or for isolate and composite only face map pair ``part``'s (one
        pair per task, so only its swap image is read). Runs before the create is claimed: a job whose faces cannot
        be chosen is never paid for. ``earlier``: the faces chosen at this provider by an earlier delivery or part,
        kept as they are (a move to another provider clears them).

        Raises
        ------
        ProviderRejected
            ``provider`` takes no face map (its registry entry's ``face_choice``).
        InputError
            A reference or swap image is unusable, or the faces cannot be chosen (:meth:`FaceChooser.choose`).
        ConfigError
            This deployment has no face matcher.
        """
        video = request.target_video is not None
        if refusal := face_map_refusal(provider.name, video=video, among=self.providers, none="none configured"):
            raise ProviderRejected(refusal)
        method = (video_face_choice if video else face_choice)(provider.name)
        assert method is not None, "face_map_refusal said it takes one"
        if self.faces is None:
            raise ConfigError("This deployment has no face matcher, so a face map cannot be used.")
        # Swap images first (a bad one fails the job before the face matcher is paid), one read per distinct image, and
        # for isolate and composite only this part's pair's.
        pairs = [part] if method == ISOLATE_COMPOSITE else range(len(request.face_map))
        read: dict[ImageRef, PreparedImage] = {}
        swaps: dict[int, PreparedImage] = {}
        for i in pairs:
            ref = request.face_map[i].swap_image
            if ref not in read:
                read[ref] = self.inputs.prepare(ref, provider, f"swap image of face_map[{i}]")
            swaps[i] = read[ref]
        # References are read only to choose (or, for detect-crop, to match the provider's crops again).
        need_references = not earlier or method == DETECT_CROP
        references = [
            self.inputs.prepare_reference(pair.reference, f"reference of face_map[{i}]") if need_references else None
            for i, pair in enumerate(request.face_map)
        ]
        chosen = (
            [ChosenFace.from_dict(face) for face in earlier]
            if earlier
            else self.faces.choose(for_matcher(target), [r for r in references if r is not None], method=method)
        )
        faces = tuple(
            FaceInput(face.box, references[face.pair], swaps[face.pair]) for face in chosen if face.pair in swaps
        )
        return chosen, faces

    def _prepare_video(self, request: JobRequest, provider: Provider, scratch: contextlib.ExitStack) -> PreparedVideo:
        """Read the job's target video into a scratch folder and fit it to ``provider``'s video limits, before any
        provider is paid.

        Raises
        ------
        ProviderRejected
            ``provider`` has no video task (the message names what it offers and who has one), or its video task
            does not take the request's options (registry ``video_options``).
        InputError
            The video is unusable (:meth:`faceswap.inputs.InputPreparer.prepare_video`).
        """
        assert request.target_video is not None
        refusal = video_refusal(
            provider.name, task=request.task, options=request.options, among=self.providers, none="none configured"
        )
        if refusal:
            raise ProviderRejected(refusal)
        limits = video_limits(provider.name)
        assert limits is not None, "video_refusal said it has a video task"
        workdir = scratch.enter_context(tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX + "video-"))
        return self.inputs.prepare_video(
            request.target_video,
            limits,
            workdir,
            provider=provider.name,
            trim=str(request.options.get("trim", "false")) == "true",
        )

    def _crop_matcher(self, faces: tuple[FaceInput, ...]) -> Callable[[Sequence[bytes]], list[int]]:
        """Scores a provider's face crops against the faces' references (``detect-crop``)."""
        chooser, references = self.faces, [face.reference for face in faces if face.reference is not None]
        assert chooser is not None and len(references) == len(faces), "detect-crop keeps the references"
        return lambda crops: chooser.choose_crops(crops, references)

    def next_part(self, job: Job) -> Job:
        """Move an isolate-and-composite job to its next face map pair and have that pair's task created (through
        the submit queue, as :meth:`fail_over` does)."""
        moved = self.lifecycle.next_part(job)
        if moved is None:
            return self.lifecycle.reread(job)
        if self.requeue is None:
            return self.submit(moved.request())
        self.requeue.send(moved.request())
        return moved

    def _recorded(self, job: Job, task_id: str) -> Job:
        """Record the task the provider made and schedule the first check (unless the job moved on meanwhile: a
        callback ended it while the create was answered)."""
        recorded = self.lifecycle.record_task(job, task_id)
        if recorded is None:
            return self.lifecycle.reread(job)
        self.checks.next(recorded, check=0)
        return recorded

    def fail_over(self, job: Job, error: PipelineError, *, in_submit: bool = False) -> Job:
        """Record the failed attempt, move the job to its next provider and have its task created there.

        Only retryable provider errors fail over (unavailable, maintenance, a failed generation); an input
        error (no face, bad image) or a refusal ends the job, since another provider would refuse it too.
        ``in_submit``: called while submitting (the submit function), which creates the next task itself;
        otherwise (a callback, a check) the request goes back to the submit function through the submit queue.
        """
        moved = self.lifecycle.move_to_next_provider(job, error)
        if moved is None:
            return self.lifecycle.reread(job)
        request = moved.request()
        if in_submit or self.requeue is None:
            return self.submit(request)
        self.requeue.send(request)
        return moved

    def _outcome_unknown(self, job: Job, error: PipelineError) -> Job:
        """The create may have reached the provider: never re-send it; wait for its callback or the deadline."""
        moved = self.lifecycle.outcome_unknown(job, error)
        if moved is None:
            return self.lifecycle.reread(job)
        self.checks.next(moved, check=0)
        return moved
