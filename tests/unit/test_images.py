"""prepare_image: inputs are decoded, checked and normalised with Pillow before any provider is paid.

Every image is made in the test with Pillow, except the sample photos in ``../shared/faces`` (read-only).
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from faceswap import images
from faceswap.errors import ImageTooLarge, InvalidImage
from faceswap.images import ImageLimits, PreparedImage, prepare_image

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
PIAPI = ImageLimits(max_side=2048, max_bytes=10 * 1024 * 1024, formats=("JPEG", "PNG", "WEBP"))
DEFAULT = ImageLimits(max_side=2048, max_bytes=10 * 1024 * 1024)  # formats: JPEG and PNG


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def decode(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def noise(width: int, height: int, seed: int = 7) -> Image.Image:
    """An RGB image of random pixels: it compresses badly, so encoded sizes are large and predictable."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed), i.e. a decompression bomb."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


# --- Not an image -----------------------------------------------------------------------------------------------------


def test_empty_bytes_are_invalid_image() -> None:
    with pytest.raises(InvalidImage) as caught:
        prepare_image(b"", PIAPI, name="target image")
    assert caught.value.code == "invalid_image"
    assert "target image" in caught.value.message


def test_text_file_named_jpg_is_invalid_image() -> None:
    with pytest.raises(InvalidImage):
        prepare_image(b"This is not a photo, just text saved as party.jpg\n" * 20, PIAPI, name="party.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_invalid_image(fmt: str) -> None:
    data = encode(noise(128, 128), fmt)
    with pytest.raises(InvalidImage):
        prepare_image(data[: len(data) // 2], PIAPI)


def test_image_with_corrupt_header_is_invalid_image() -> None:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "PNG"))
    data[23] ^= 0x0F  # IHDR height changed without fixing the CRC
    with pytest.raises(InvalidImage):
        prepare_image(bytes(data), PIAPI)


# --- Decompression bombs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(100_000, 100_000, id="over-pillow-error-limit"),
        pytest.param(10_000, 10_000, id="over-pillow-warning-limit"),
        pytest.param(8_000, 8_000, id="over-own-limit-only"),
    ],
)
def test_png_declaring_huge_dimensions_is_image_too_large(width: int, height: int) -> None:
    with pytest.raises(ImageTooLarge) as caught:
        prepare_image(png_declaring(width, height), PIAPI)
    assert caught.value.code == "image_too_large"


def test_image_over_max_input_pixels_is_image_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 100 * 100)
    data = encode(Image.new("RGB", (101, 100), (10, 20, 30)), "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        prepare_image(data, PIAPI)
    assert caught.value.code == "image_too_large"


def test_image_exactly_at_max_input_pixels_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 100 * 100)
    data = encode(Image.new("RGB", (100, 100), (10, 20, 30)), "PNG")
    assert prepare_image(data, PIAPI).data == data


# --- Orientation and size ---------------------------------------------------------------------------------------------


def test_exif_rotated_photo_is_turned_upright_and_reencoded() -> None:
    # Stored 80x40, left half red and right half blue; Orientation=6 says "rotate 90 degrees clockwise to view".
    stored = Image.new("RGB", (80, 40), (220, 0, 0))
    stored.paste((0, 0, 220), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)

    prepared = prepare_image(data, PIAPI)

    assert prepared.data != data
    assert (prepared.width, prepared.height) == (40, 80)
    upright = decode(prepared)
    assert upright.size == (40, 80)
    assert upright.getexif().get(0x0112, 1) == 1
    # Turned clockwise, the stored left edge is now the top.
    assert_close(upright.convert("RGB").getpixel((20, 10)), (220, 0, 0), tolerance=30)
    assert_close(upright.convert("RGB").getpixel((20, 70)), (0, 0, 220), tolerance=30)


def test_photo_taller_than_2048_is_downscaled_keeping_aspect() -> None:
    data = (FACES / "biden.jpg").read_bytes()
    width, height = Image.open(io.BytesIO(data)).size
    assert height == 2204  # the sample's documented size

    prepared = prepare_image(data, PIAPI)

    result = decode(prepared)
    assert result.size == (prepared.width, prepared.height)
    assert max(result.size) == 2048
    assert result.height == 2048
    assert abs(result.width - width * 2048 / height) <= 1
    assert prepared.content_type == "image/jpeg"
    assert result.format == "JPEG"


def test_photo_within_limits_in_accepted_format_passes_unchanged() -> None:
    data = (FACES / "obama.jpg").read_bytes()
    prepared = prepare_image(data, PIAPI)
    assert prepared.data == data
    assert prepared.content_type == "image/jpeg"
    assert (prepared.width, prepared.height) == (910, 1137)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(1, 1, id="1x1"),
        pytest.param(15, 400, id="15-px-wide"),
        pytest.param(400, 15, id="15-px-tall"),
    ],
)
def test_image_too_small_to_hold_a_face_is_invalid_image(width: int, height: int) -> None:
    data = encode(Image.new("RGB", (width, height), (1, 2, 3)), "PNG")
    with pytest.raises(InvalidImage) as caught:
        prepare_image(data, PIAPI, name="target image")
    assert caught.value.code == "invalid_image"
    assert f"target image is {width}x{height} pixels" in caught.value.message


def test_image_at_the_minimum_side_passes_unchanged() -> None:
    data = encode(Image.new("RGB", (images.MIN_INPUT_SIDE, images.MIN_INPUT_SIDE), (1, 2, 3)), "JPEG")
    prepared = prepare_image(data, PIAPI)
    assert prepared.data == data
    assert (prepared.width, prepared.height) == (16, 16)


# --- Formats and modes ------------------------------------------------------------------------------------------------


def test_cmyk_jpeg_is_converted_to_rgb_jpeg() -> None:
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)  # red in CMYK
    assert Image.open(io.BytesIO(data)).mode == "CMYK"

    prepared = prepare_image(data, PIAPI)

    result = decode(prepared)
    assert prepared.content_type == "image/jpeg"
    assert result.format == "JPEG"
    assert result.mode == "RGB"
    assert_close(result.getpixel((16, 16)), (255, 0, 0), tolerance=30)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped() -> None:
    levels = [0, 16384, 32768, 49152, 65535]
    source = Image.new("I;16", (16 * len(levels), 16))
    source.putdata([levels[x // 16] for _ in range(16) for x in range(16 * len(levels))])
    data = encode(source, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    prepared = prepare_image(data, PIAPI)

    grey = decode(prepared).convert("L")
    measured = [grey.getpixel((16 * i + 8, 8)) for i in range(len(levels))]
    assert_close(tuple(measured), (0, 64, 128, 192, 255), tolerance=6)


def test_rgba_png_within_limits_passes_unchanged_with_alpha() -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    image.paste((0, 255, 0, 255), (16, 0, 32, 32))
    data = encode(image, "PNG")
    prepared = prepare_image(data, PIAPI)
    assert prepared.data == data
    assert prepared.content_type == "image/png"


def test_rgba_png_reencoded_for_size_keeps_alpha_as_png() -> None:
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    image.paste((0, 255, 0, 255), (32, 0, 64, 64))
    data = encode(image, "PNG")

    prepared = prepare_image(data, ImageLimits(max_side=32, max_bytes=1024 * 1024, formats=("JPEG", "PNG")))

    result = decode(prepared)
    assert prepared.content_type == "image/png"
    assert result.format == "PNG"
    assert result.mode == "RGBA"
    assert result.size == (32, 32)
    assert result.getpixel((2, 16))[3] == 0
    assert result.getpixel((30, 16))[3] == 255


def test_animated_gif_is_reencoded_from_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in [(230, 20, 20), (20, 230, 20), (20, 20, 230)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    prepared = prepare_image(data, PIAPI)

    result = decode(prepared)
    assert prepared.content_type in ("image/jpeg", "image/png")
    assert result.format in ("JPEG", "PNG")
    assert getattr(result, "n_frames", 1) == 1
    assert_close(result.convert("RGB").getpixel((16, 16)), (230, 20, 20), tolerance=30)


def test_webp_passes_unchanged_when_provider_takes_webp() -> None:
    data = encode(Image.new("RGB", (40, 30), (40, 120, 200)), "WEBP")
    prepared = prepare_image(data, PIAPI)
    assert prepared.data == data
    assert prepared.content_type == "image/webp"
    assert prepared.extension == "webp"


def test_webp_is_converted_when_provider_does_not_take_webp() -> None:
    data = encode(Image.new("RGB", (40, 30), (40, 120, 200)), "WEBP")
    prepared = prepare_image(data, DEFAULT)
    result = decode(prepared)
    assert prepared.content_type == "image/jpeg"
    assert result.format == "JPEG"
    assert result.size == (40, 30)
    assert_close(result.getpixel((20, 15)), (40, 120, 200), tolerance=20)


# --- Byte limit -------------------------------------------------------------------------------------------------------


def test_image_over_max_bytes_is_reencoded_at_lower_quality() -> None:
    image = noise(256, 256)
    data = encode(image, "JPEG", quality=100)
    at_92, at_60 = len(encode(image, "JPEG", quality=92)), len(encode(image, "JPEG", quality=60))
    max_bytes = (at_92 + at_60) // 2
    assert at_60 < max_bytes < at_92 < len(data)

    prepared = prepare_image(data, ImageLimits(max_side=2048, max_bytes=max_bytes, formats=("JPEG", "PNG")))

    assert len(prepared.data) <= max_bytes
    assert prepared.content_type == "image/jpeg"
    assert decode(prepared).size == (256, 256)


def test_image_that_cannot_fit_max_bytes_is_image_too_large() -> None:
    data = encode(noise(256, 256), "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        prepare_image(data, ImageLimits(max_side=2048, max_bytes=2_000, formats=("JPEG", "PNG")))
    assert caught.value.code == "image_too_large"


def test_our_pixel_limit_is_below_pillows_so_no_warning_filter_is_needed() -> None:
    assert images.MAX_INPUT_PIXELS < Image.MAX_IMAGE_PIXELS


def test_opening_an_image_leaves_warnings_already_shown_alone() -> None:
    """A warning shown once per place (Powertools' "No application metrics to publish") stays shown once: changing a
    filter, even inside ``warnings.catch_warnings``, resets every module's record of what was shown."""
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(photo, format="JPEG")

    def warn() -> None:
        warnings.warn("shown once here", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        warn()
        images.open_image(photo.getvalue(), name="target image")
        warn()
    assert len(seen) == 1
