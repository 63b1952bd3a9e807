"""Short video clips made here, for the demo, the tests and the benchmarks: nothing is downloaded.

:func:`make_clip` turns a photo into a clip that slowly pans and zooms over it (so a face moves a little from frame to
frame, as in a real video), optionally with a tone as its sound track, in any container and codec FFmpeg writes.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from PIL import Image


def make_clip(
    path: str | Path,
    *,
    photo: bytes | None = None,
    width: int = 320,
    height: int = 240,
    fps: float = 24,
    seconds: float = 1.0,
    audio: bool = True,
    codec: str = "libx264",
    audio_codec: str = "aac",
    container: str | None = None,
    pix_fmt: str = "yuv420p",
    move: float = 0.04,
    rotation: int = 0,
    noise: float = 0.0,
) -> Path:
    """Write a clip of ``seconds`` at ``fps`` frames per second and ``width`` x ``height`` pixels to ``path``.

    Parameters
    ----------
    path
        Where it is written.
    width, height, fps, seconds
        Its frame size in pixels, frame rate and length in seconds.
    move
        How far the view pans and zooms over the clip, as a fraction of the photo's size.
    photo
        An image (any format Pillow reads) each frame is cut from, panning and zooming by up to ``move`` of its size
        over the clip; ``None``: a moving grey pattern.
    audio, audio_codec
        Whether it has a sound track: a 440 Hz tone in ``audio_codec`` (``aac``; ``libopus`` for WebM).
    codec, container, pix_fmt
        The video codec (``libx264``, ``libvpx-vp9``, ``mpeg4``), the container (``mp4``, ``mov``, ``webm``; default by
        the file name) and the pixel format.
    noise
        Fresh Gaussian noise of this standard deviation (0-255 scale) in every frame, as a camera in dim light adds
        (seeded: the same clip each time).
    rotation
        Store the frames turned and say in the display matrix that a player turns them back by ``rotation`` degrees
        counter-clockwise (0, 90, 180, 270), as phones do: shown, the clip is ``width`` x ``height`` and upright.

    Returns the path written.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    frames = max(1, round(seconds * fps))
    source = Image.open(io.BytesIO(photo)).convert("RGB") if photo is not None else None
    grain = np.random.default_rng(0)
    with av.open(str(path), "w", format=container) as out:
        video = cast(av.VideoStream, out.add_stream(codec, rate=rate))
        turns = rotation // 90 % 4
        video.width, video.height = (height, width) if turns % 2 else (width, height)
        video.pix_fmt = pix_fmt
        if turns:
            video.set_display_rotation(rotation)
        sound = cast(av.AudioStream, out.add_stream(audio_codec, rate=48000)) if audio else None
        for i in range(frames):
            progress = i / max(1, frames - 1)
            image = _frame(source, width, height, progress, move) if source else _pattern(width, height, i)
            if noise:
                image = np.clip(image + grain.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
            image = np.ascontiguousarray(np.rot90(image, k=-turns)) if turns else image
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            rate_hz = 48000
            t = np.arange(int(rate_hz * frames / fps)) / rate_hz
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(tone), 960):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + 960], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate_hz, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of the video at ``path``, decoded as BGR ``uint8`` arrays (OpenCV's order), in order."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def _frame(source: Image.Image, width: int, height: int, progress: float, move: float) -> np.ndarray:
    """The frame at ``progress`` (0..1): a crop of ``source`` at the clip's aspect ratio, zooming and panning."""
    aspect = width / height
    w, h = source.size
    crop_w = min(w, h * aspect) * (1 - move * progress)
    crop_h = crop_w / aspect
    left = (w - crop_w) / 2 + move * progress * w / 4
    top = min(max(0.0, h * 0.2 - crop_h / 2), h - crop_h)  # centred a fifth of the way down: a portrait's face
    box = (int(left), int(top), int(left + crop_w), int(top + crop_h))
    return np.asarray(source.crop(box).resize((width, height), Image.Resampling.BILINEAR))


def _pattern(width: int, height: int, i: int) -> np.ndarray:
    image = np.full((height, width, 3), 96, np.uint8)
    x = (i * 7) % max(1, width - 16)
    image[height // 3 : height // 3 + 16, x : x + 16] = 255
    return image
