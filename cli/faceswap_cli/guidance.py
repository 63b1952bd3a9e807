"""What to do about each error code a job can end with: the README's "Error codes" table, column "what to do".

One source for the console (shown beside a failed job) and the README (a unit test keeps the table's column equal
to :data:`WHAT_TO_DO`, and every code a job can end with listed).
"""

from __future__ import annotations

WHAT_TO_DO: dict[str, str] = {
    "invalid_request": "Fix the field the message names and submit again.",
    "input_not_found": "Upload the input (or fix its key or URL) and submit again.",
    "swap_face_missing": "Upload the face as faces/<face-id>.jpg, then upload the target again.",
    "invalid_image": "Use a JPEG, PNG or WebP photo at least 16 px a side.",
    "image_too_large": "Resize the photo under 20 MiB and 50 megapixels.",
    "invalid_video": "Use an MP4, MOV or WebM video with a video stream that plays.",
    "video_too_long": "Cut the video, or submit with options.trim to cut it to the provider's limit.",
    "video_too_large": "Shrink or cut the video under the size the message names.",
    "no_face_detected": "Use a photo where the face is clear, frontal and not too small.",
    "reference_face_not_found": "Use a reference photo of someone who is in the target.",
    "reference_face_ambiguous": "Use a clearer reference, or one pair per person.",
    "provider_rejected": "Read the provider's message; change the input or the provider.",
    "provider_out_of_credit": "Top up the provider account, then retry.",
    "provider_unavailable": "Retry later; the provider was down or busy.",
    "provider_task_failed": "Retry, or try another provider.",
    "pose_mismatch": "Use photos facing the camera, or another provider.",
    "submit_outcome_unknown": "Wait: the job ends by the provider's webhook or at its deadline.",
    "result_url_refused": "Check the provider's result host; report it if it is the provider's.",
    "result_expired": "Retry: the provider's result was gone before it was kept.",
    "result_too_large": "Raise ResultMaxBytes, or send a smaller input.",
    "invalid_result": "Retry, or try another provider.",
    "result_missing": "Retry: the provider said done but gave no result.",
    "timed_out": "Retry; if it keeps happening, raise JobDeadlineSeconds or use another provider.",
    "processing_failed": "Read the function's logs for the job, fix the cause, then retry.",
    "configuration_error": "Store the provider's API key secret, then retry.",
}
"""Error code → one line on what to do (README "Error codes")."""


def what_to_do(code: str | None) -> str | None:
    """The advice for ``code``, or ``None`` for a code without any (or no code)."""
    return WHAT_TO_DO.get(code or "")
