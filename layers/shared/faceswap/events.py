"""The events the pipeline publishes, projected from the jobs table's stream.

"Job Succeeded" / "Job Failed" are published by the publisher function from the stream record of the one
conditional write that ended a job (:mod:`faceswap.lifecycle`), so a job publishes its end exactly once however
many callbacks and checks raced to finish it. The detail's shape is ``events/schemas/job_*.schema.json``.
"""

from __future__ import annotations

from typing import Any

from faceswap.lifecycle import JobState
from faceswap.model import Job

EVENT_SOURCE = "faceswap.pipeline"
"""``source`` of the events the pipeline publishes."""


def terminal_event(old: Job | None, new: Job) -> tuple[str, dict[str, Any]] | None:
    """The event to publish for a job row change, if the change ended the job.

    Parameters
    ----------
    old, new
        The row before (``None`` for an insert) and after the change (from the jobs table's stream).

    Returns
    -------
    tuple or None
        ``("Job Succeeded" | "Job Failed", detail)`` when ``new`` is terminal and ``old`` was not, else ``None``.
        The detail: ``job_id``, ``state``, ``provider``, ``task``, ``provider_task_id``, ``media_type``,
        ``target_image`` (or ``target_video`` and ``media``), ``swap_image``, ``created_at``, ``finished_at``, with
        a face map ``face_map`` and ``chosen_faces`` (see :meth:`faceswap.faces.ChosenFace.as_dict`), and ``result``
        (bucket, key, size, sha256, content_type) or ``error`` (code, message, retryable).
    """
    if not new.terminal or (old is not None and old.terminal):
        return None
    detail: dict[str, Any] = {
        "job_id": new.job_id,
        "state": str(new.state),
        "provider": new.provider,
        "task": new.task,
        "provider_task_id": new.provider_task_id,
        "media_type": new.media_type,
        **_target(new),
        "swap_image": new.swap_image.as_dict(),
        "created_at": new.created_at,
        "finished_at": new.finished_at,
    }
    if new.media:
        detail["media"] = new.media
    if new.face_map:
        detail["face_map"] = [pair.as_dict() for pair in new.face_map]
        detail["chosen_faces"] = new.chosen_faces
    if new.state is JobState.SUCCEEDED:
        detail["result"] = new.result
        return "Job Succeeded", detail
    detail["error"] = new.error
    return "Job Failed", detail


def _target(job: Job) -> dict[str, Any]:
    """``{"target_image": …}`` or, for a video job, ``{"target_video": …}``."""
    if job.target_video is not None:
        return {"target_video": job.target_video.as_dict()}
    return {"target_image": job.target_image.as_dict()}
