"""Input preparation: read a job's target image (or target video) and swap face, and fit them to the provider's limits.

Images come from the inputs bucket (``s3_key``) or an https URL (read through the safe fetcher, with the input
byte cap), and are prepared by :func:`faceswap.images.prepare_image` (EXIF rotation, downscaling, re-encoding) to
what the provider's create accepts. For providers that take URLs only, the prepared images are stored under
``prepared/<job_id>/`` and presigned.

A target video is streamed into a file of the function's ``/tmp`` (never held in memory), recognised and probed by
its content and fitted to the provider's video limits (:mod:`faceswap.media`); every video task takes its video by
URL, so the fitted video is stored under ``prepared/<job_id>/`` and presigned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceswap import media
from faceswap.errors import (
    ImageTooLarge,
    InputNotFound,
    InvalidImage,
    InvalidRequest,
    InvalidVideo,
    ProviderUnavailable,
    ResultError,
    VideoTooLarge,
)
from faceswap.images import MATCHER_LIMITS, PreparedImage, prepare_image
from faceswap.model import ImageRef
from faceswap.ports import FaceInput, InputStore, ObjectStore, Provider

if TYPE_CHECKING:  # the fetcher (and httpx) is wired in; the publisher never loads it
    from faceswap.fetch import ResultFetcher

PREPARED_URL_SECONDS = 2 * 3600
"""Lifetime asked of presigned URLs of prepared inputs given to URL-only providers (CRUN: detect_id lasts 1 h).
A ceiling, not a promise: a URL signed with the function's temporary credentials stops working when they expire
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html)."""


@dataclass(kw_only=True)
class InputPreparer:
    """Reads and prepares input images.

    Attributes
    ----------
    objects
        The inputs bucket, for ``s3_key`` images.
    fetcher
        Safe downloader for ``url`` images (its byte cap is the input cap; any type Pillow then reads).
    max_bytes
        Largest input image read from S3, in bytes.
    inputs, input_bucket
        Where prepared images are stored for URL-only providers; without them no URLs are offered.
    max_video_bytes
        Largest target video read, in bytes.
    """

    objects: ObjectStore
    fetcher: ResultFetcher
    max_bytes: int
    inputs: InputStore | None = None
    input_bucket: str = ""
    max_video_bytes: int = 500 * 1024 * 1024

    def prepare_video(
        self, ref: ImageRef, limits: media.VideoLimits, workdir: str, *, provider: str, trim: bool
    ) -> media.PreparedVideo:
        """Read the target video at ``ref`` into ``workdir`` and fit it to ``limits`` (:func:`faceswap.media.fit`).

        Raises
        ------
        InputError
            ``input_not_found`` (retryable when the URL's host failed), ``video_too_large`` (over
            ``max_video_bytes``, or it cannot fit the provider's byte limit), ``invalid_video`` (not a video by its
            content, no video stream, corrupt, no frames), ``video_too_long`` (naming ``provider``'s limit) or
            ``invalid_request``.
        """
        source = os.path.join(workdir, "source")
        self.download(ref, source, name="target video")
        info = media.probe(source)
        return media.fit(source, info, limits, os.path.join(workdir, "target.mp4"), trim=trim, provider=provider)

    def download(self, ref: ImageRef, path: str, *, name: str) -> int:
        """Stream the video at ``ref`` into the file ``path``; its size in bytes (errors as :meth:`prepare_video`)."""
        too_large = f"The {name} is over the limit of {self.max_video_bytes:,} bytes."
        if ref.url:
            try:
                with (
                    self.fetcher.open(
                        ref.url, allowed_hosts=("*",), video=True, max_bytes=self.max_video_bytes, subject=name
                    ) as stream,
                    open(path, "wb") as out,
                ):
                    for chunk in stream.chunks():
                        out.write(chunk)
                    return stream.size
            except ResultError as e:
                error = {"result_too_large": VideoTooLarge, "invalid_result": InvalidVideo}.get(e.code, InputNotFound)
                raise error(f"The {name} URL could not be used: {e.message}") from e
            except ProviderUnavailable as e:
                raise InputNotFound(f"The {name} URL could not be downloaded: {e.message}", retryable=True) from e
        if not ref.bucket or not ref.key:
            raise InvalidRequest(f"The {name} names no object.")
        try:
            return self.objects.download(
                ref.bucket, ref.key, path, version_id=ref.version_id, max_bytes=self.max_video_bytes
            )
        except ImageTooLarge as e:
            raise VideoTooLarge(too_large) from e

    def video_urls(
        self, job_id: str, video: media.PreparedVideo, swap: PreparedImage
    ) -> Callable[[], tuple[str, str]] | None:
        """A function that stores the prepared video and swap image under ``prepared/<job_id>/`` and returns presigned
        GET URLs ``(target video, swap image)`` valid :data:`PREPARED_URL_SECONDS`; ``None`` without an inputs
        store."""
        inputs, bucket = self.inputs, self.input_bucket
        if inputs is None or not bucket:
            return None

        def urls() -> tuple[str, str]:
            video_key, swap_key = f"prepared/{job_id}/target.mp4", f"prepared/{job_id}/swap.{swap.extension}"
            inputs.put_file(bucket, video_key, video.path, content_type=video.content_type)
            inputs.put_input(bucket, swap_key, swap.data, content_type=swap.content_type)
            return (
                inputs.presign_get(bucket, video_key, version_id=None, expires_seconds=PREPARED_URL_SECONDS),
                inputs.presign_get(bucket, swap_key, version_id=None, expires_seconds=PREPARED_URL_SECONDS),
            )

        return urls

    def prepare(self, ref: ImageRef, provider: Provider, name: str) -> PreparedImage:
        """Read the image at ``ref`` and fit it to ``provider.image_limits``.

        Raises
        ------
        InputError
            ``input_not_found`` (retryable when the URL's host failed), ``image_too_large``, ``invalid_image`` or
            ``invalid_request``; the message names the image (``name``: "target image", "swap image").
        """
        return prepare_image(self.read(ref, name), provider.image_limits, name=name)

    def face_urls(self, job_id: str, faces: Sequence[FaceInput]) -> Callable[[], tuple[str, ...]] | None:
        """For URL-only providers given a face map's ``faces``: a function that stores each face's swap image under
        ``prepared/<job_id>/face-<n>.<ext>`` and returns presigned GET URLs, in order (as :meth:`image_urls`)."""
        inputs, bucket = self.inputs, self.input_bucket
        if inputs is None or not bucket:
            return None

        def urls() -> tuple[str, ...]:
            signed = []
            for n, face in enumerate(faces):
                key = f"prepared/{job_id}/face-{n}.{face.swap_image.extension}"
                inputs.put_input(bucket, key, face.swap_image.data, content_type=face.swap_image.content_type)
                signed.append(inputs.presign_get(bucket, key, version_id=None, expires_seconds=PREPARED_URL_SECONDS))
            return tuple(signed)

        return urls

    def prepare_reference(self, ref: ImageRef, name: str) -> PreparedImage:
        """Read a face map's reference photo and fit it to the face matcher (:data:`faceswap.images.MATCHER_LIMITS`:
        EXIF rotation, JPEG or PNG, at most 5 MB). Errors as :meth:`prepare`."""
        return prepare_image(self.read(ref, name), MATCHER_LIMITS, name=name)

    def read(self, ref: ImageRef, name: str) -> bytes:
        """The bytes of the image at ``ref`` (errors as :meth:`prepare`)."""
        if ref.url:
            try:
                with self.fetcher.open(ref.url, allowed_hosts=("*",)) as stream:
                    return b"".join(stream.chunks())
            except ResultError as e:
                error = {"result_too_large": ImageTooLarge, "invalid_result": InvalidImage}.get(e.code, InputNotFound)
                raise error(f"The {name} URL could not be used: {e.message}") from e
            except ProviderUnavailable as e:
                raise InputNotFound(f"The {name} URL could not be downloaded: {e.message}", retryable=True) from e
        if not ref.bucket or not ref.key:
            raise InvalidRequest(f"The {name} names no object.")
        return self.objects.read(ref.bucket, ref.key, version_id=ref.version_id, max_bytes=self.max_bytes)

    def image_urls(
        self, job_id: str, target: PreparedImage, swap: PreparedImage, *, name: str = ""
    ) -> Callable[[], tuple[str, str]] | None:
        """For URL-only providers: a function that stores the prepared images under ``prepared/<job_id>/`` (their
        names prefixed with ``name``: each part of a face map has its own) and returns presigned GET URLs
        ``(target, swap)`` valid :data:`PREPARED_URL_SECONDS`; ``None`` when this deployment has no inputs store."""
        inputs, bucket = self.inputs, self.input_bucket
        if inputs is None or not bucket:
            return None

        def urls() -> tuple[str, str]:
            signed = []
            for which, image in (("target", target), ("swap", swap)):
                key = f"prepared/{job_id}/{name}{which}.{image.extension}"
                inputs.put_input(bucket, key, image.data, content_type=image.content_type)
                signed.append(inputs.presign_get(bucket, key, version_id=None, expires_seconds=PREPARED_URL_SECONDS))
            return signed[0], signed[1]

        return urls
