"""Video face swap: the swap face onto the face of every frame of a video, with the original audio kept.

Frames are decoded with PyAV (FFmpeg's libraries), swapped one by one with the image swap's own steps
(:func:`faceswap_engine.swap._swap_one`) and encoded again as H.264 (yuv420p, MP4 with its index first); the audio
stream is copied packet for packet, never re-encoded.

What keeps the face from flickering: the swap face is analysed once, not per frame; the target face is followed from
frame to frame (the detected face nearest to where it was); its landmarks are smoothed over time (an exponential
moving average, :data:`SMOOTHING`), and so are its colour match (skin statistics and shading map) and the masks of
what covers it (:class:`faceswap_engine.swap.FaceMemory`); all start again when the face jumps more than
:data:`RESET_JUMP` of its size (a cut) or is lost.
Frames in which no face is found, or whose face is turned too far for a classical swap, are passed through unchanged;
a video in which no frame had a face fails ``no_face_detected``.

With chosen faces (``faces``: a box in the first frame and a swap image each, e.g. from a face matcher), each box's
face is followed instead, from the detected face it overlaps most in the first frame (at least
:data:`faceswap_engine.swap.CHOSEN_FACE_MIN_OVERLAP`, else ``chosen_face_not_found``), and gets its own swap face;
every other face is left as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .detect import Face, as_bgr, detect_faces
from .errors import ChosenFaceNotFound, InvalidImage, NoFaceDetected, PoseMismatch
from .imageio import decode_image
from .swap import CHOSEN_FACE_MIN_OVERLAP, FaceMemory, _check_index, _check_pose, _overlap, _swap_one

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

    def __init__(
        self, box: tuple[int, int, int, int] | None = None, colour_weight: float = 0.3, index: int | None = None
    ) -> None:
        self.landmarks: np.ndarray | None = None
        self.box = box
        """A chosen face's box in the first frame (``None``: follow the largest face, or ``index``)."""
        self.index = index
        """The first frame's face to follow, left to right (``None``: the largest, or ``box``)."""
        self.memory = FaceMemory(weight=colour_weight)
        """What the face's swap carries over frames; reset with the landmarks."""

    def next(self, faces: list[Face]) -> Face | None:
        """The followed face in this frame's ``faces`` (at first the one on the chosen box, the one at the chosen index
        or the largest; then the nearest), smoothed.

        Raises
        ------
        ChosenFaceNotFound
            In the first frame, no face lies on the chosen box.
        FaceIndexOutOfRange
            The first frame has no face at the chosen index.
        """
        if self.index is not None:
            index, self.index = self.index, None
            ordered = sorted(faces, key=lambda f: f.center_x)
            self.landmarks = ordered[_check_index(index, len(ordered), "target")].landmarks.astype(np.float64)
        if self.box is not None:
            box, self.box = self.box, None
            overlaps = [_overlap(face.box, box) for face in faces]
            if not faces or max(overlaps) < CHOSEN_FACE_MIN_OVERLAP:
                raise ChosenFaceNotFound(box)
            self.landmarks = faces[int(np.argmax(overlaps))].landmarks.astype(np.float64)
        if not faces:
            self.landmarks = None
            self.memory.reset()
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
        else:
            self.memory.reset()
        self.landmarks = points
        return Face(box=face.box, landmarks=np.rint(points).astype(np.int32))


def swap_video_file(
    target_path: str,
    swap_image: bytes,
    out_path: str,
    *,
    swap_face_index: int = 0,
    crf: int = 20,
    faces: list[tuple[tuple[int, int, int, int], bytes]] | None = None,
    colour_weight: float = 0.3,
    target_face_indices: list[int] | None = None,
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
    faces
        Chosen faces: ``(box in the first frame's pixels, encoded swap image)`` each (1 to 4); ``swap_image`` and
        ``swap_face_index`` are then unused, and only those faces change.
    target_face_indices
        The first frame's faces (left to right) that get the swap face, each followed through the video; ``None``:
        the largest. Other faces are left as they were.
    colour_weight
        Weight of each new frame in the moving averages of the colour match and the masks of what covers the face
        (:class:`faceswap_engine.swap.FaceMemory`; 1: each frame swapped on its own, as a still image).

    Raises
    ------
    InvalidImage
        ``swap_image`` does not decode, or the video cannot be read.
    NoFaceDetected
        ``swap_image`` has no face, or no frame of the video has one.
    FaceIndexOutOfRange
        ``swap_face_index`` is past the swap image's faces.
    ChosenFaceNotFound
        No face of the first frame lies on a chosen box.
    FaceIndexOutOfRange
        The first frame has no face at one of ``target_face_indices``.
    """
    if faces:
        followed = [(_Follower(box, colour_weight), *_swap_face(image, None)) for box, image in faces]
    else:
        swap, src_face = _swap_face(swap_image, swap_face_index)
        followed = [
            (_Follower(colour_weight=colour_weight, index=index), swap, src_face)
            for index in (target_face_indices or [None])
        ]
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
                detected = detect_faces(image)
                done = 0
                for follower, swap, src_face in followed:
                    face = follower.next(detected)
                    if face is None:
                        continue
                    try:
                        _check_pose(src_face, face)
                        _swap_one(image, swap, src_face, face, follower.memory)
                        done += 1
                    except PoseMismatch:
                        pass
                swapped += done == len(followed)
                new = av.VideoFrame.from_ndarray(image, format="bgr24")
                new.pts, new.time_base = frame.pts, frame.time_base
                out.mux(video.encode(new.reformat(format="yuv420p")))
        out.mux(video.encode(None))
    if swapped == 0:
        raise NoFaceDetected("target")
    stats = VideoSwapStats(frames=frames, swapped=swapped, passed=frames - swapped, audio=audio_in is not None)
    logger.info("video swapped: %s", stats)
    return stats


def _swap_face(image: bytes, index: int | None) -> tuple[np.ndarray, Face]:
    """A swap image decoded and its face ``index`` (left to right; ``None``: the largest, as for chosen faces)."""
    swap = as_bgr(decode_image(image, name="swap"), name="swap")
    found = detect_faces(swap)
    if not found:
        raise NoFaceDetected("swap")
    if index is None:
        return swap, max(found, key=lambda f: f.area)
    return swap, found[_check_index(index, len(found), "swap")]
