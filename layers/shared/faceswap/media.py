"""Videos: recognise, probe and fit a target video to a provider's limits; check a provider's result and put the
input's audio back on it. With PyAV (FFmpeg's libraries in a wheel, https://pyav.basswood-io.com/).

PyAV lives in the media layer, attached only to the functions that handle videos (submit and poller); it is
imported inside the functions that decode, so any function may import this module for its types and codes.

Rules, for every provider (its :class:`VideoLimits` in the registry):

- A video is recognised by its content (:func:`sniff`: ISO base media ``ftyp``, QuickTime atoms, Matroska/WebM EBML),
  never by its name alone.
- :func:`probe` decodes the first frame and reads every packet of the video stream without decoding it, so a file
  without a video stream, a corrupt or truncated one, or one without frames fails ``invalid_video`` before any
  provider is paid.
- :func:`fit` re-encodes to what every provider takes (H.264, yuv420p, MP4 with its index first, AAC audio copied
  when it is AAC, re-encoded otherwise), downscales to the limits (never upscales), lowers the frame rate down to
  :attr:`VideoLimits.min_fps` to fit the frame limit, and lowers the bit rate to fit the byte limit. A video longer
  than the frame limit allows at ``min_fps`` fails ``video_too_long`` naming the limit, unless the request asks to
  trim: it is never cut silently. A video shown turned (a phone's display matrix: portrait recorded as landscape) is
  sent upright, turned as a player shows it, since providers and the engine look for faces in the stored pixels. A
  video that already conforms is sent as it is.
- :func:`check_result` refuses a result that is not a video, has no video stream, or whose duration is more than
  :data:`DURATION_TOLERANCE` away from the video sent (``invalid_result``); :func:`restore_audio` copies the audio of
  the video sent onto a result that lost it (stream copy, no re-encode).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

from faceswap.errors import InvalidResult, InvalidVideo, VideoTooLarge, VideoTooLong
from faceswap.images import PreparedImage

if TYPE_CHECKING:
    import av
    import av.container

CONTENT_TYPE = "video/mp4"
"""What every prepared video and every result kept is: an MP4."""

CONTENT_TYPES = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}
"""Content types of the containers a target video may come in, by :func:`sniff`'s name."""

DURATION_TOLERANCE = 0.10
"""How far a result's duration may be from the video sent, as a fraction of it."""

SNIFF_BYTES = 64
"""Bytes :func:`sniff` needs from the start of a file."""

WORKDIR_PREFIX = "faceswap-"
"""Scratch folders of video work (``tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX + …)`` in ``/tmp``)."""

_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_MAX_PIXELS = 8192 * 8192
ENCODER = "libx264"
"""The H.264 encoder every fitted video is made with (FFmpeg's name; GPL in PyAV's wheels: README, "Video jobs")."""
_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}


@dataclass(frozen=True)
class VideoLimits:
    """What a provider's video task takes.

    Attributes
    ----------
    max_long_side, max_short_side
        Largest width and height in pixels, whichever way round (1280 and 720: "720p" in landscape or portrait).
    max_frames
        Most frames (0: no limit).
    max_bytes
        Largest file in bytes.
    max_fps
        Highest frame rate sent; a faster video is sent at this rate.
    min_fps
        Lowest frame rate a video is slowed to so as to fit ``max_frames`` (a source slower than this is kept as it
        is); below it, the video is too long.
    """

    max_long_side: int
    max_short_side: int
    max_frames: int
    max_bytes: int
    max_fps: float = 30.0
    min_fps: float = 24.0

    def max_seconds(self, fps: float) -> float:
        """The longest video these limits take from a source at ``fps`` (``inf`` without a frame limit)."""
        if not self.max_frames:
            return math.inf
        return self.max_frames / min(fps, self.min_fps) if fps > 0 else math.inf


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found.

    Attributes
    ----------
    container
        ``mp4``, ``mov`` or ``webm`` (:func:`sniff`).
    duration
        Seconds.
    frames
        Frames of the video stream (packets counted, not the header's claim).
    fps
        Average frames per second.
    width, height
        Pixels, as stored.
    video_codec, pixel_format
        FFmpeg's names (``h264``, ``yuv420p``).
    audio_codec
        FFmpeg's name of the first audio stream's codec (``aac``), or ``None`` without audio.
    audio_channels, audio_sample_rate
        Of the first audio stream (0 without audio).
    size
        Bytes of the file.
    rotation
        Degrees the frames are turned counter-clockwise when shown (the display matrix; 0, 90, 180 or 270): a phone's
        portrait video is often stored landscape with 270. ``width`` and ``height`` are as stored.
    """

    container: str
    duration: float
    frames: int
    fps: float
    width: int
    height: int
    video_codec: str
    pixel_format: str
    audio_codec: str | None
    audio_channels: int
    audio_sample_rate: int
    size: int
    rotation: int = 0

    @property
    def has_audio(self) -> bool:
        """Whether it has an audio stream."""
        return self.audio_codec is not None

    @property
    def shown_size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels as a player shows it (:attr:`rotation` applied)."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    def as_dict(self) -> dict[str, Any]:
        """As recorded on the job row (``media``) and published in events; durations rounded to milliseconds."""
        data = asdict(self)
        data["duration"] = round(self.duration, 3)
        data["fps"] = round(self.fps, 3)
        return data


@dataclass(frozen=True)
class PreparedVideo:
    """A target video ready to send: the MP4 at ``path`` (a file in the function's ``/tmp``), what it is (``info``),
    what it was made from (``source``), and ``trimmed_to`` (seconds) when the request asked to trim and it was cut."""

    path: str
    info: VideoInfo
    source: VideoInfo
    trimmed_to: float | None = None

    content_type = CONTENT_TYPE
    extension = "mp4"


def remove_stale_workdirs(root: str | None = None) -> int:
    """Remove every scratch folder of video work (:data:`WORKDIR_PREFIX`) from ``root`` (the temp dir: ``/tmp`` on
    Lambda); the number removed.

    Call it where no video work of the process is under way (the start of an invocation of a function that takes one
    message at a time): ``/tmp`` outlives invocations, and one that Lambda stopped at its timeout or out of memory
    never removed its own (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html).
    """
    import shutil
    import tempfile

    root = root or tempfile.gettempdir()
    stale = [entry.path for entry in os.scandir(root) if entry.is_dir() and entry.name.startswith(WORKDIR_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def sniff(head: bytes) -> str | None:
    """The container of a file that starts with ``head`` (at least :data:`SNIFF_BYTES` bytes): ``mp4`` (ISO base media,
    ``ftyp`` first), ``mov`` (QuickTime: brand ``qt`` or a bare QuickTime atom first), ``webm`` (Matroska/WebM EBML
    header), or ``None`` for anything else."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def probe(path: str, *, name: str = "target video") -> VideoInfo:
    """Read what the video at ``path`` is, checking that it decodes.

    The first frame is decoded and every packet of the video stream is read (not decoded): a truncated file has
    fewer than its header says.

    Raises
    ------
    InvalidVideo
        Not a container :func:`sniff` knows, FFmpeg cannot open it, no video stream, no frame decodes, or fewer frames
        than its header claims (truncated). The message names the video (``name``).
    """
    with open(path, "rb") as f:
        kind = sniff(f.read(SNIFF_BYTES))
    if kind is None:
        raise InvalidVideo(f"The {name} is not an MP4, MOV or WebM video.")
    import av  # the media layer

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InvalidVideo(f"The {name} cannot be read as a video ({type(e).__name__}).") from None
    with container:
        if not container.streams.video:
            raise InvalidVideo(f"The {name} has no video stream.")
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0 or width * height > _MAX_PIXELS:
            raise InvalidVideo(f"The {name} has frames of {width}x{height} pixels.")
        frames, first, end = 0, None, 0.0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    if first is None:  # the decoder's flush: a first frame held back by reordering comes now
                        first = next(iter(packet.decode()), None)
                    continue
                frames += 1
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if first is None:
                    first = next(iter(packet.decode()), None)
        except (av.FFmpegError, ValueError) as e:
            raise InvalidVideo(f"The {name} is corrupt after {frames} frames ({type(e).__name__}).") from None
        declared = stream.frames or 0
        if frames == 0 or first is None:
            raise InvalidVideo(f"The {name} has no frame that decodes.")
        if declared and frames < declared * 0.98 - 1:
            raise InvalidVideo(f"The {name} is truncated: {frames} of its {declared} frames are there.")
        duration = float(container.duration / 1_000_000) if container.duration else 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        duration = duration or end
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (frames / duration if duration else 0.0)
        if duration <= 0 or fps <= 0:
            raise InvalidVideo(f"The {name} has no duration.")
        return VideoInfo(
            container=kind,
            duration=duration,
            frames=frames,
            fps=fps,
            width=width,
            height=height,
            video_codec=stream.codec_context.name,
            pixel_format=str(stream.codec_context.pix_fmt or ""),
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_channels=audio.codec_context.layout.nb_channels if audio is not None else 0,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            size=os.path.getsize(path),
            rotation=_rotation(first),
        )


def _rotation(frame: Any) -> int:
    """A decoded frame's display rotation in degrees counter-clockwise, as 0, 90, 180 or 270 (PyAV's
    ``VideoFrame.rotation``: FFmpeg's display matrix, https://pyav.basswood-io.com/docs/stable/api/video.html)."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def plan(info: VideoInfo, limits: VideoLimits, *, trim: bool, provider: str) -> tuple[int, int, Fraction, float]:
    """The frame size, frame rate and duration a video ``info`` is sent at to fit ``limits``:
    ``(width, height, fps, seconds)``.

    Raises
    ------
    VideoTooLong
        More frames than ``limits.max_frames`` even at ``limits.min_fps`` and ``trim`` is false; the message names the
        limit and ``provider``.
    """
    shown_width, shown_height = info.shown_size
    scale = min(
        1.0,
        limits.max_long_side / max(shown_width, shown_height),
        limits.max_short_side / min(shown_width, shown_height),
    )
    width, height = max(2, int(shown_width * scale) // 2 * 2), max(2, int(shown_height * scale) // 2 * 2)
    fps = _rate(min(info.fps, limits.max_fps))
    seconds = info.duration
    if limits.max_frames and math.ceil(seconds * fps) > limits.max_frames:
        slowest = _rate(min(info.fps, limits.min_fps))
        fitting = Fraction(math.floor(limits.max_frames / seconds * 100), 100)
        if fitting >= slowest:
            fps = fitting
        elif trim:
            fps, seconds = slowest, limits.max_frames / float(slowest)
        else:
            longest = limits.max_seconds(info.fps)
            raise VideoTooLong(
                f"The target video is {info.duration:.1f} s long; {provider} takes at most {limits.max_frames} frames "
                f"({longest:.1f} s at {float(slowest):g} fps). Shorten it, or ask to trim (options.trim)."
            )
    return width, height, fps, seconds


def conforms(info: VideoInfo, limits: VideoLimits) -> bool:
    """Whether ``info`` can be sent as it is: an MP4 of H.264 in yuv420p (AAC audio or none), shown as stored (no
    rotation), within every limit."""
    return (
        info.container == "mp4"
        and info.rotation == 0
        and info.video_codec == "h264"
        and info.pixel_format == "yuv420p"
        and info.audio_codec in (None, "aac")
        and max(info.width, info.height) <= limits.max_long_side
        and min(info.width, info.height) <= limits.max_short_side
        and info.fps <= limits.max_fps + 0.01
        and (not limits.max_frames or info.frames <= limits.max_frames)
        and info.size <= limits.max_bytes
    )


def fit(
    path: str, info: VideoInfo, limits: VideoLimits, out_path: str, *, trim: bool = False, provider: str = ""
) -> PreparedVideo:
    """Fit the video at ``path`` (probed as ``info``) to ``limits``, writing ``out_path`` when it must change.

    Returns
    -------
    PreparedVideo
        ``path`` itself when it already conforms (:func:`conforms`), else ``out_path``: H.264 yuv420p at the size, rate
        and length of :func:`plan`, its index first (``+faststart``), the audio copied when AAC, else AAC.

    Raises
    ------
    VideoTooLong
        See :func:`plan`.
    VideoTooLarge
        Even at the bit rate that fits ``limits.max_bytes`` the file is over it.
    InvalidVideo
        The video stops decoding part way.
    """
    if conforms(info, limits):
        return PreparedVideo(path=path, info=info, source=info)
    width, height, fps, seconds = plan(info, limits, trim=trim, provider=provider)
    bit_rate = None
    for _ in range(2):
        _transcode(
            path,
            out_path,
            width=width,
            height=height,
            fps=fps,
            seconds=seconds,
            bit_rate=bit_rate,
            rotation=info.rotation,
        )
        size = os.path.getsize(out_path)
        if size <= limits.max_bytes:
            fitted = probe(out_path, name="prepared video")
            trimmed = seconds if seconds < info.duration - 1e-3 else None
            return PreparedVideo(path=out_path, info=replace(fitted, container="mp4"), source=info, trimmed_to=trimmed)
        audio_bits = 128_000 if info.has_audio else 0
        bit_rate = int(limits.max_bytes * 8 * 0.9 / seconds) - audio_bits
        if bit_rate < 100_000:
            break
    raise VideoTooLarge(
        f"The target video does not fit {provider}'s limit of {limits.max_bytes:,} bytes at {width}x{height}: "
        "shorten it."
    )


def _rate(fps: float) -> Fraction:
    """A frame rate as a fraction encoders take (30000/1001 stays exact; others to 1/100)."""
    exact = Fraction(fps).limit_denominator(1001)
    return exact if abs(float(exact) - fps) < 1e-6 else Fraction(round(fps * 100), 100)


def _transcode(
    path: str,
    out_path: str,
    *,
    width: int,
    height: int,
    fps: Fraction,
    seconds: float,
    bit_rate: int | None,
    rotation: int = 0,
) -> None:
    """Re-encode ``path`` into ``out_path`` (see :func:`fit`): each output frame at ``k / fps`` is the latest input
    frame shown by then, turned upright by ``rotation`` (:attr:`VideoInfo.rotation`); stops at ``seconds``."""
    import av

    try:
        source = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise InvalidVideo(f"The target video cannot be read ({type(e).__name__}).") from None
    with source, av.open(out_path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video_in: av.VideoStream = source.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = source.streams.audio[0] if source.streams.audio else None
        video = cast("av.VideoStream", out.add_stream(ENCODER, rate=fps, options=dict(_X264_OPTIONS)))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if bit_rate:
            video.options = {"preset": "veryfast", "maxrate": str(bit_rate), "bufsize": str(bit_rate * 2)}
            video.codec_context.bit_rate = bit_rate
        audio = None
        if audio_in is not None:
            if audio_in.codec_context.name == "aac":
                audio = out.add_stream_from_template(audio_in)
            else:
                audio = out.add_stream("aac", rate=audio_in.codec_context.sample_rate or 44100)
        start: float | None = None
        written = 0
        total = max(1, math.ceil(seconds * fps - 1e-6))
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        try:
            for packet in source.demux(*streams):
                if packet.stream.type == "audio":
                    assert audio is not None and audio_in is not None
                    _audio(out, audio, audio_in, packet, seconds)
                    continue
                for frame in video_in.decode(packet):
                    if frame.time is None:
                        continue
                    start = frame.time if start is None else start
                    shown_until = frame.time - start + 1 / (float(video_in.average_rate or fps))
                    upright = _upright(frame, rotation)
                    while written < total and written / fps < shown_until:
                        scaled = upright.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                        scaled.pts, scaled.time_base = written, Fraction(1, 1) / fps
                        out.mux(video.encode(scaled))
                        written += 1
            if audio is not None and audio_in is not None and audio_in.codec_context.name != "aac":
                out.mux(audio.encode(None))
            out.mux(video.encode(None))
        except (av.FFmpegError, ValueError) as e:
            raise InvalidVideo(
                f"The target video stops decoding after {written} frames ({type(e).__name__})."
            ) from None


def _upright(frame: av.VideoFrame, rotation: int) -> av.VideoFrame:
    """``frame`` turned ``rotation`` degrees counter-clockwise (as a player shows it); itself when 0."""
    if not rotation:
        return frame
    import av
    from PIL import Image

    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return av.VideoFrame.from_image(frame.to_image().transpose(turn[rotation]))


def _audio(out: av.container.OutputContainer, audio: Any, audio_in: Any, packet: Any, seconds: float) -> None:
    """Copy or re-encode one audio packet, dropping what lies past ``seconds``."""
    if packet.pts is not None and packet.time_base is not None and float(packet.pts * packet.time_base) >= seconds:
        return
    if audio_in.codec_context.name == "aac":
        if packet.size:
            packet.stream = audio
            out.mux(packet)
        return
    for frame in packet.decode():
        frame.pts = None
        out.mux(audio.encode(frame))


def first_frame(path: str) -> PreparedImage:
    """The first frame of the video at ``path`` as a PNG (its exact pixels, as a provider decodes them): where a face
    map chooses faces in a video. Raises ``InvalidVideo`` if no frame decodes."""
    import io

    import av

    with av.open(path) as container:
        frame = next(container.decode(video=0), None)
        if frame is None:
            raise InvalidVideo("The target video has no frame that decodes.")
        image = _upright(frame, _rotation(frame)).to_image()
    out = io.BytesIO()
    image.save(out, format="PNG")
    return PreparedImage(out.getvalue(), "image/png", image.width, image.height)


def check_result(path: str, sent: VideoInfo) -> VideoInfo:
    """Check a provider's result at ``path`` against the video sent (``sent``).

    Raises
    ------
    InvalidResult
        Not a video (content), no video stream, corrupt, or a duration more than :data:`DURATION_TOLERANCE` from
        ``sent.duration``.
    """
    try:
        info = probe(path, name="result")
    except InvalidVideo as e:
        raise InvalidResult(e.message) from None
    if abs(info.duration - sent.duration) > DURATION_TOLERANCE * sent.duration:
        raise InvalidResult(
            f"The result is {info.duration:.2f} s long; the video sent was {sent.duration:.2f} s "
            f"(more than {DURATION_TOLERANCE:.0%} apart)."
        )
    return info


def restore_audio(video_path: str, audio_path: str, out_path: str) -> None:
    """Write ``out_path``: the video stream of ``video_path`` and the first audio stream of ``audio_path``, both copied
    (no re-encode), interleaved by time, index first. Raises ``InvalidResult`` if either cannot be read."""
    import av

    try:
        with (
            av.open(video_path) as video_source,
            av.open(audio_path) as audio_source,
            av.open(out_path, "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            video_in, audio_in = video_source.streams.video[0], audio_source.streams.audio[0]
            video, audio = out.add_stream_from_template(video_in), out.add_stream_from_template(audio_in)
            for packet in _by_time(video_source.demux(video_in), audio_source.demux(audio_in)):
                packet.stream = video if packet.stream.type == "video" else audio
                out.mux(packet)
    except (av.FFmpegError, IndexError, OSError) as e:
        raise InvalidResult(f"The result's audio could not be restored ({type(e).__name__}).") from None


def _by_time(*demuxers: Iterator[Any]) -> Iterator[Any]:
    """The packets of several demuxers merged in decoding-time order (flush packets dropped)."""
    heads: list[Any] = []
    iterators = list(demuxers)
    for it in iterators:
        heads.append(_next_packet(it))
    while any(head is not None for head in heads):
        i = min((i for i, h in enumerate(heads) if h is not None), key=lambda i: _time(heads[i]))
        yield heads[i]
        heads[i] = _next_packet(iterators[i])


def _next_packet(it: Iterator[Any]) -> Any:
    for packet in it:
        if packet.size:
            return packet
    return None


def _time(packet: Any) -> float:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return float(stamp * packet.time_base) if stamp is not None else 0.0
