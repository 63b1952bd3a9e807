"""Video face swap: the swap face onto the face of every frame of a video, with the original audio kept.

Frames are decoded with PyAV (FFmpeg's libraries), swapped one by one with the image swap's own steps
(:func:`faceswap_engine.swap._swap_one`) and encoded again as H.264 (yuv420p, MP4 with its index first); the audio
stream is copied packet for packet, never re-encoded.

What keeps the face from flickering: the swap face is analysed once, not per frame; the target face is followed from
frame to frame (the detected face nearest to where it was); and its landmarks are smoothed over time (an exponential
moving average, :data:`SMOOTHING`), reset when the face jumps more than :data:`RESET_JUMP` of its size (a cut).
Frames in which no face is found, or whose face is turned too far for a classical swap, are passed through unchanged;
a video in which no frame had a face fails ``no_face_detected``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .detect import Face, as_bgr, detect_faces
from .errors import InvalidImage, NoFaceDetected, PoseMismatch
from .imageio import decode_image
from .swap import _check_index, _check_pose, _swap_one

logger = logging.getLogger(__name__)

SMOOTHING = 0.6
"""Weight of the newest frame's landmarks in the moving average (1: no smoothing)."""

RESET_JUMP = 0.25
"""A face whose landmarks move more than this fraction of its size between frames starts a new average."""


@dataclass(frozen=True)
class VideoSwapStats:
    """What :func:`swap_video_file` did: ``frames`` in all, ``swapped`` of them, ``passed`` through (no face, or turned
    too far), and whether the audio was copied."""

    frames: int
    swapped: int
    passed: int
    audio: bool


class _Follower:
    """Follows one target face through the frames and smooths its landmarks."""

    def __init__(self) -> None:
        self.landmarks: np.ndarray | None = None

    def next(self, faces: list[Face]) -> Face | None:
        """The followed face in this frame's ``faces`` (the largest at first, then the nearest), smoothed."""
        if not faces:
            self.landmarks = None
            return None
        if self.landmarks is None:
            face = max(faces, key=lambda f: f.area)
        else:
            centre = self.landmarks.mean(axis=0)
            face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(axis=0) - centre)))
        points = face.landmarks.astype(np.float64)
        size = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1.0))
        if self.landmarks is not None and float(np.abs(points - self.landmarks).mean()) < RESET_JUMP * size:
            points = SMOOTHING * points + (1 - SMOOTHING) * self.landmarks
        self.landmarks = points
        return Face(box=face.box, landmarks=np.rint(points).astype(np.int32))


def swap_video_file(
    target_path: str, swap_image: bytes, out_path: str, *, swap_face_index: int = 0, crf: int = 20
) -> VideoSwapStats:
    """Swap the face of ``swap_image`` onto the face of every frame of the video at ``target_path``.

    Parameters
    ----------
    target_path
        A video FFmpeg reads (MP4, MOV, WebM…).
    swap_image
        Encoded image supplying the face.
    out_path
        Where the MP4 is written: H.264 yuv420p at the target's size and frame rate, ``crf`` quality, the audio
        copied.
    swap_face_index
        Left-to-right index of the face in ``swap_image``.
    crf
        x264's constant rate factor (lower is better and bigger; 20 is near transparent).

    Raises
    ------
    InvalidImage
        ``swap_image`` does not decode, or the video cannot be read.
    NoFaceDetected
        ``swap_image`` has no face, or no frame of the video has one.
    FaceIndexOutOfRange
        ``swap_face_index`` is past the swap image's faces.
    """
    swap = as_bgr(decode_image(swap_image, name="swap"), name="swap")
    swap_faces = detect_faces(swap)
    if not swap_faces:
        raise NoFaceDetected("swap")
    src_face = swap_faces[_check_index(swap_face_index, len(swap_faces), "swap")]
    follower = _Follower()
    frames = swapped = 0
    try:
        source = av.open(target_path)
    except (av.FFmpegError, OSError) as e:
        raise InvalidImage(f"the target video cannot be read ({type(e).__name__})", image="target") from None
    with source, av.open(out_path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        if not source.streams.video:
            raise InvalidImage("the target video has no video stream", image="target")
        video_in = source.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = source.streams.audio[0] if source.streams.audio else None
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        video = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": str(crf)})
        video.width, video.height, video.pix_fmt = (
            video_in.codec_context.width,
            video_in.codec_context.height,
            "yuv420p",
        )
        video.codec_context.time_base = video_in.time_base
        audio = out.add_stream_from_template(audio_in) if audio_in is not None else None
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        for packet in source.demux(*streams):
            if packet.stream.type == "audio":
                if packet.size and audio is not None:
                    packet.stream = audio
                    out.mux(packet)
                continue
            for frame in video_in.decode(packet):
                frames += 1
                image = frame.to_ndarray(format="bgr24")
                face = follower.next(detect_faces(image))
                if face is not None:
                    try:
                        _check_pose(src_face, face)
                        _swap_one(image, swap, src_face, face)
                        swapped += 1
                    except PoseMismatch:
                        pass
                new = av.VideoFrame.from_ndarray(image, format="bgr24")
                new.pts, new.time_base = frame.pts, frame.time_base
                out.mux(video.encode(new.reformat(format="yuv420p")))
        out.mux(video.encode(None))
    if swapped == 0:
        raise NoFaceDetected("target")
    stats = VideoSwapStats(frames=frames, swapped=swapped, passed=frames - swapped, audio=audio_in is not None)
    logger.info("video swapped: %s", stats)
    return stats
