"""The queues' message bodies: job requests on the submit queue and checks on the check queue.

Both are JSON written and read only by the pipeline: ``{"job_request": {…}}`` (:func:`request_to_message`) and
``{"job_id": str, "check": int}`` (:func:`check_message`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faceswap.model import FacePair, ImageRef, JobRequest


def request_to_message(request: JobRequest) -> str:
    """A job request as the submit queue's message body: ``{"job_request": {…}}``."""
    return json.dumps(
        {
            "job_request": {
                "job_id": request.job_id,
                "target_image": request.target_image.as_dict(),
                "swap_image": request.swap_image.as_dict(),
                "provider": request.provider,
                "task": request.task,
                "result_key": request.result_key,
                "source": request.source,
                "options": request.options,
                "retry_of": request.retry_of,
                "fallback_providers": list(request.fallback_providers),
                **({"face_map": [pair.as_dict() for pair in request.face_map]} if request.face_map else {}),
                **({"target_video": request.target_video.as_dict()} if request.target_video else {}),
            }
        }
    )


def request_from_message(data: Mapping[str, Any]) -> JobRequest:
    """Inverse of :func:`request_to_message` (given the ``job_request`` object)."""
    return JobRequest(
        job_id=data["job_id"],
        target_image=ImageRef.from_dict(data["target_image"]),
        swap_image=ImageRef.from_dict(data["swap_image"]),
        provider=data["provider"],
        task=data["task"],
        result_key=data["result_key"],
        source=data["source"],
        options=dict(data.get("options") or {}),
        retry_of=data.get("retry_of"),
        fallback_providers=tuple(data.get("fallback_providers") or ()),
        face_map=tuple(FacePair.from_dict(pair) for pair in data.get("face_map") or ()),
        target_video=ImageRef.from_dict(data["target_video"]) if data.get("target_video") else None,
    )


def check_message(job_id: str, check: int, task_id: str | None = None) -> str:
    """A check queue message body: the job, how many checks came before this one and, when known, the provider task
    the checks follow (a check for a task the job has left ends its chain)."""
    return json.dumps({"job_id": job_id, "check": check, **({"task_id": task_id} if task_id else {})})


def check_from_message(body: str) -> tuple[str, int, str | None]:
    """Inverse of :func:`check_message`: ``(job_id, check, task_id)``."""
    data = json.loads(body)
    task_id = data.get("task_id")
    return str(data["job_id"]), int(data.get("check", 0)), str(task_id) if task_id else None
