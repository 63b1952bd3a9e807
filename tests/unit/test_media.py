"""Target videos and video results (faceswap.media) on clips made by the test (faceswap_local.clips)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from faceswap import media
from faceswap.errors import InvalidResult, InvalidVideo, VideoTooLarge, VideoTooLong
from faceswap_local.clips import make_clip

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
PIAPI = media.VideoLimits(max_long_side=1280, max_short_side=720, max_frames=600, max_bytes=10 * 1024 * 1024)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def test_sniff_recognises_containers_by_content() -> None:
    assert media.sniff(b"\x00\x00\x00\x18ftypisom" + bytes(8)) == "mp4"
    assert media.sniff(b"\x00\x00\x00\x14ftypqt  " + bytes(8)) == "mov"
    assert media.sniff(b"\x00\x00\x00\x08wide" + bytes(8)) == "mov"
    assert media.sniff(b"\x1a\x45\xdf\xa3" + bytes(12)) == "webm"
    assert media.sniff(b"\xff\xd8\xff\xe0" + bytes(12)) is None  # a JPEG
    assert media.sniff(b"hello, world, a text file") is None


@pytest.mark.parametrize(
    ("name", "kwargs", "container", "codec", "audio"),
    [
        ("a.mp4", {}, "mp4", "h264", "aac"),
        ("b.webm", {"codec": "libvpx-vp9", "audio_codec": "libopus"}, "webm", "vp9", "opus"),
        ("c.mov", {"codec": "mpeg4", "audio": False}, "mov", "mpeg4", None),
    ],
)
def test_probe_reads_what_a_video_is(
    clips: Path, name: str, kwargs: dict[str, object], container: str, codec: str, audio: str | None
) -> None:
    path = make_clip(clips / name, width=160, height=120, fps=25, seconds=1, **kwargs)  # type: ignore[arg-type]
    info = media.probe(str(path))
    assert (info.container, info.video_codec, info.audio_codec) == (container, codec, audio)
    assert (info.width, info.height, info.frames) == (160, 120, 25)
    assert info.fps == pytest.approx(25)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.has_audio is (audio is not None)
    assert info.size == path.stat().st_size
    assert info.as_dict()["frames"] == 25


def test_probe_refuses_a_text_file_named_mp4(clips: Path) -> None:
    path = clips / "text.mp4"
    path.write_text("not a video at all, just text " * 10)
    with pytest.raises(InvalidVideo, match="not an MP4, MOV or WebM"):
        media.probe(str(path))


def test_probe_refuses_an_audio_only_mp4(clips: Path) -> None:
    path = clips / "audio-only.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        for start in range(0, 48000, 960):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(InvalidVideo, match="no video stream"):
        media.probe(str(path))


@pytest.mark.parametrize("faststart", [False, True])
def test_probe_refuses_a_truncated_mp4(clips: Path, faststart: bool) -> None:
    whole = make_clip(clips / f"whole-{faststart}.mp4", width=160, height=120, fps=25, seconds=1)
    if faststart:  # the index first: the header is whole, the frames are not
        info = media.probe(str(whole))
        whole = Path(media.fit(str(whole), info, PIAPI, str(clips / "fast.mp4"), provider="x").path)
        whole = Path(media.fit(str(whole), info, media.VideoLimits(64, 64, 0, 10**9), str(clips / "f2.mp4")).path)
    data = whole.read_bytes()
    cut = clips / f"cut-{faststart}.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidVideo, match=r"truncated|cannot be read"):
        media.probe(str(cut))


def test_a_conforming_video_is_sent_as_it_is(clips: Path) -> None:
    path = make_clip(clips / "ok.mp4", width=320, height=240, fps=24, seconds=1)
    info = media.probe(str(path))
    prepared = media.fit(str(path), info, PIAPI, str(clips / "ok-out.mp4"))
    assert prepared.path == str(path) and prepared.info == info
    assert not (clips / "ok-out.mp4").exists()


def test_a_4k_clip_is_downscaled_to_720p_with_its_audio(clips: Path) -> None:
    path = make_clip(clips / "4k.mp4", width=3840, height=2160, fps=10, seconds=0.5)
    info = media.probe(str(path))
    prepared = media.fit(str(path), info, PIAPI, str(clips / "4k-out.mp4"), provider="piapi")
    assert (prepared.info.width, prepared.info.height) == (1280, 720)
    assert (prepared.info.video_codec, prepared.info.pixel_format, prepared.info.audio_codec) == (
        "h264",
        "yuv420p",
        "aac",
    )
    assert prepared.info.frames == info.frames
    assert prepared.source == info


def test_a_portrait_clip_keeps_its_orientation(clips: Path) -> None:
    path = make_clip(clips / "portrait.mp4", width=1080, height=1920, fps=10, seconds=0.3, audio=False)
    prepared = media.fit(str(path), media.probe(str(path)), PIAPI, str(clips / "portrait-out.mp4"))
    assert (prepared.info.width, prepared.info.height) == (720, 1280)


@pytest.mark.parametrize("rotation", [270, 180, 90])
def test_a_phone_video_shown_turned_is_sent_upright(clips: Path, rotation: int) -> None:
    photo = (FACES / "obama.jpg").read_bytes()
    shown = {"photo": photo, "width": 240, "height": 320, "fps": 10, "seconds": 0.3, "audio": False}
    upright = make_clip(clips / f"upright-{rotation}.mp4", **shown)  # type: ignore[arg-type]
    turned = make_clip(clips / f"turned-{rotation}.mp4", rotation=rotation, **shown)  # type: ignore[arg-type]
    info = media.probe(str(turned))
    assert info.rotation == rotation and info.shown_size == (240, 320)
    assert not media.conforms(info, PIAPI)

    prepared = media.fit(str(turned), info, PIAPI, str(clips / f"turned-{rotation}-out.mp4"), provider="piapi")

    assert (prepared.info.width, prepared.info.height, prepared.info.rotation) == (240, 320, 0)
    expected = first_frame_pixels(upright)
    assert np.abs(first_frame_pixels(prepared.path) - expected).mean() < 6  # the same picture, encoded once more
    assert np.abs(first_frame_pixels(turned) - expected).mean() < 6  # where a face map looks for faces


def first_frame_pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(media.first_frame(str(path)).data)), dtype=np.int16)


def test_a_60_fps_clip_is_sent_at_30_and_within_600_frames(clips: Path) -> None:
    path = make_clip(clips / "60.mp4", width=160, height=120, fps=60, seconds=12)
    info = media.probe(str(path))
    assert info.frames == 720
    prepared = media.fit(str(path), info, PIAPI, str(clips / "60-out.mp4"))
    assert prepared.info.fps == pytest.approx(30)
    assert prepared.info.frames == 360
    assert prepared.info.duration == pytest.approx(12, abs=0.1)
    assert prepared.info.has_audio


def test_a_clip_over_600_frames_at_30_fps_is_slowed_to_fit(clips: Path) -> None:
    path = make_clip(clips / "24s.mp4", width=160, height=120, fps=30, seconds=24, audio=False)
    prepared = media.fit(str(path), media.probe(str(path)), PIAPI, str(clips / "24s-out.mp4"))
    assert 24 <= prepared.info.fps <= 25 and prepared.info.frames <= 600
    assert prepared.trimmed_to is None and prepared.info.duration == pytest.approx(24, abs=0.1)


def test_a_clip_too_long_is_refused_naming_the_limit_unless_trimmed(clips: Path) -> None:
    path = make_clip(clips / "long.mp4", width=160, height=120, fps=24, seconds=30)
    info = media.probe(str(path))
    with pytest.raises(VideoTooLong, match=r"30\.0 s long; piapi takes at most 600 frames \(25\.0 s at 24 fps\)"):
        media.fit(str(path), info, PIAPI, str(clips / "long-out.mp4"), provider="piapi")
    trimmed = media.fit(str(path), info, PIAPI, str(clips / "long-out.mp4"), provider="piapi", trim=True)
    assert trimmed.trimmed_to == pytest.approx(25)
    assert trimmed.info.frames == 600 and trimmed.info.duration == pytest.approx(25, abs=0.1)
    assert trimmed.info.has_audio


def test_webm_with_opus_becomes_mp4_with_aac(clips: Path) -> None:
    path = make_clip(
        clips / "w.webm", width=160, height=120, fps=25, seconds=1, codec="libvpx-vp9", audio_codec="libopus"
    )
    prepared = media.fit(str(path), media.probe(str(path)), PIAPI, str(clips / "w-out.mp4"))
    assert (prepared.info.container, prepared.info.video_codec, prepared.info.audio_codec) == ("mp4", "h264", "aac")
    assert prepared.info.duration == pytest.approx(1.0, abs=0.05)


def test_a_clip_that_cannot_fit_the_byte_limit_is_too_large(clips: Path) -> None:
    path = make_clip(clips / "big.mp4", width=320, height=240, fps=24, seconds=2, audio=False)
    tiny = media.VideoLimits(max_long_side=1280, max_short_side=720, max_frames=600, max_bytes=2000, max_fps=24)
    with pytest.raises(VideoTooLarge, match="2,000 bytes"):
        media.fit(str(path), media.probe(str(path)), tiny, str(clips / "big-out.mp4"), provider="piapi")


def test_the_bit_rate_is_lowered_to_fit_the_byte_limit(clips: Path) -> None:
    photo = (FACES / "obama.jpg").read_bytes()
    path = make_clip(clips / "noisy.mp4", photo=photo, width=640, height=480, fps=24, seconds=2, audio=False, move=0.2)
    info = media.probe(str(path))
    limit = info.size * 2 // 3
    limits = media.VideoLimits(max_long_side=1280, max_short_side=720, max_frames=600, max_bytes=limit)
    prepared = media.fit(str(path), info, limits, str(clips / "noisy-out.mp4"))
    assert prepared.info.size <= limit and prepared.info.frames == info.frames


def test_a_result_must_last_as_long_as_the_video_sent(clips: Path) -> None:
    sent = media.probe(str(make_clip(clips / "two.mp4", width=160, height=120, fps=24, seconds=2)))
    same = make_clip(clips / "two-result.mp4", width=160, height=120, fps=24, seconds=2, audio=False)
    assert media.check_result(str(same), sent).frames == 48
    short = make_clip(clips / "one-result.mp4", width=160, height=120, fps=24, seconds=1.5, audio=False)
    with pytest.raises(InvalidResult, match="more than 10% apart"):
        media.check_result(str(short), sent)
    text = clips / "result.txt"
    text.write_bytes(b"<html>expired</html>" * 10)
    with pytest.raises(InvalidResult, match="not an MP4"):
        media.check_result(str(text), sent)


def test_lost_audio_is_restored_by_stream_copy(clips: Path) -> None:
    sent = make_clip(clips / "sent.mp4", width=160, height=120, fps=24, seconds=2)
    silent = make_clip(clips / "silent.mp4", width=160, height=120, fps=24, seconds=2, audio=False)
    out = clips / "restored.mp4"
    media.restore_audio(str(silent), str(sent), str(out))
    restored, original = media.probe(str(out)), media.probe(str(sent))
    assert restored.has_audio and restored.audio_codec == original.audio_codec
    assert restored.frames == original.frames
    assert restored.duration == pytest.approx(original.duration, abs=0.05)
    with av.open(str(out)) as container, av.open(str(sent)) as source:
        assert len(container.streams) == len(source.streams) == 2
        copied = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
        originals = [bytes(p) for p in source.demux(source.streams.audio[0]) if p.size]
    assert copied == originals  # the very packets: a stream copy, not a re-encode
