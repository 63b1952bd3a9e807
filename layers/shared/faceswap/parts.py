"""Face maps at providers without face ids: one task per pair, by isolate and composite (:mod:`faceswap.composite`).

For a job whose chosen faces' ``method`` is :data:`faceswap.faces.ISOLATE_COMPOSITE`, pair ``part`` (the job row's
``part``) is sent as a one-face swap of a crop of the target around its chosen face, the other faces masked. The
provider's swapped crop is kept under :data:`INTERMEDIATE_PREFIX` in the results bucket, never at the result key; the
job then moves to its next part (``next-part``, :mod:`faceswap.lifecycle`) until the last, whose collect composites
every part onto the target as the provider received it (kept there too, as the base) and keeps that at the result
key, create-only like any result. Everything under the prefix expires with the bucket's lifecycle rule
(``template.yaml``: ``expire-intermediate``).

Keys hold the provider's name, so a job that fails over to another provider starts its parts afresh, never reusing
another provider's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faceswap.composite import Isolated, check_shape, composite, crop_size, decode, encode_png, isolate, placement
from faceswap.faces import ChosenFace
from faceswap.images import ImageLimits, PreparedImage
from faceswap.model import Job
from faceswap.ports import InputStore, ObjectStore

INTERMEDIATE_PREFIX = "intermediate/"
"""Prefix of the results bucket's intermediate objects (expire after a few days)."""
RESULT_CONTENT_TYPE = "image/png"
"""A composite is PNG, so that every pixel outside the swapped faces is exactly the target's."""


def base_key(job_id: str, provider: str) -> str:
    """Key of the target as the provider received it (the composite's base)."""
    return f"{INTERMEDIATE_PREFIX}{job_id}/{provider}/base"


def part_key(job_id: str, provider: str, part: int, task_id: str) -> str:
    """Key of the swapped crop of face map pair ``part`` that the provider's task ``task_id`` made."""
    return f"{INTERMEDIATE_PREFIX}{job_id}/{provider}/part-{part}-{task_id}"


@dataclass(kw_only=True)
class Composer:
    """Makes each part's crop and puts the parts' outputs together.

    Attributes
    ----------
    objects
        Reads the base and the parts' outputs.
    writer
        Stores the base.
    bucket
        The results bucket.
    max_bytes
        Largest object read back (a base or a part's output), in bytes.
    """

    objects: ObjectStore
    writer: InputStore
    bucket: str
    max_bytes: int = 64 * 1024 * 1024

    def base(self, job_id: str, provider: str) -> PreparedImage:
        """The target as the provider received it with the job's first part (later parts are cut from it, never from
        the input again, which may have changed or gone since).

        Raises
        ------
        faceswap.errors.InputNotFound
            The base is gone (it expires with the prefix).
        """
        data = self.objects.read(self.bucket, base_key(job_id, provider), max_bytes=self.max_bytes)
        return _prepared(data)

    def part_input(
        self, job_id: str, provider: str, target: PreparedImage, face: ChosenFace, limits: ImageLimits, *, part: int
    ) -> PreparedImage:
        """The crop around ``face`` to send as a one-face swap. For the first part, ``target`` becomes the base,
        create-only: if another delivery stored one first, the crop is cut from that one, so every part and the
        composite use the same pixels. Later parts pass the base itself (:meth:`base`).

        Raises
        ------
        faceswap.errors.StoreUnavailable
            The base could not be stored or read: deliver the job's message again.
        """
        base = target
        stored = part > 0 or not self.writer.put_new(
            self.bucket, base_key(job_id, provider), target.data, content_type=target.content_type
        )
        if stored and part == 0:
            base = self.base(job_id, provider)
        isolated = _isolated(base.data, face, limits)
        width, height = isolated.size
        return PreparedImage(isolated.data, isolated.content_type, width, height)

    def assemble(self, job: Job, faces: Sequence[ChosenFace], limits: ImageLimits) -> bytes:
        """Every part's swapped crop composited onto the base, in order, as PNG. Each part's output is the one its
        task in ``job.attempts`` made (the last part's: ``job.provider_task_id``).

        Raises
        ------
        faceswap.errors.InvalidResult
            A part's output is not an image of its crop's shape.
        faceswap.errors.InputNotFound
            The base or a part's output is gone (expired).
        """
        tasks = {
            int(attempt["part"]): str(attempt["provider_task_id"])
            for attempt in job.attempts
            if attempt.get("provider") == job.provider and "part" in attempt and attempt.get("provider_task_id")
        }
        tasks[job.part] = job.provider_task_id or ""
        base_data = self.objects.read(self.bucket, base_key(job.job_id, job.provider), max_bytes=self.max_bytes)
        image = decode(base_data)
        for face in faces:
            key = part_key(job.job_id, job.provider, face.pair, tasks.get(face.pair, ""))
            output = self.objects.read(self.bucket, key, max_bytes=self.max_bytes)
            where = placement(face.box, image.size, max_side=_max_side(limits))  # the crop sent: no re-encoding
            image = composite(image, output, where, face.box, face.others)
        return encode_png(image)


def _prepared(data: bytes) -> PreparedImage:
    """A stored base as a prepared image (its type and size read from its header)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        content_type = Image.MIME.get(image.format or "", "image/jpeg")
    return PreparedImage(data, content_type, width, height)


def check_part(output: bytes, face: ChosenFace, limits: ImageLimits) -> None:
    """Raise ``InvalidResult`` unless a part's output has the shape of the crop sent for ``face`` (checked as each
    part comes back, so a provider that returns something else fails the job before its later parts are paid)."""
    check_shape(output, crop_size(face.box, face.size, max_side=_max_side(limits)))


def _max_side(limits: ImageLimits) -> int:
    return min(2048, limits.max_side)


def _isolated(target: bytes, face: ChosenFace, limits: ImageLimits) -> Isolated:
    return isolate(target, face.box, face.others, max_side=_max_side(limits))
