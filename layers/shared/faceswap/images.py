"""Input image checks with Pillow, run before any provider is paid.

Each input is decoded fully (so truncated files fail here, not at the provider), refused if it is not an
image, is a decompression bomb or is too small to hold a face, turned upright by its EXIF orientation,
converted to a format the provider takes, and downscaled to fit the provider's limits.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceswap.errors import ImageTooLarge, InvalidImage

if TYPE_CHECKING:
    from PIL import Image

# Pillow is imported where images are prepared (the submit function), not with this module, whose types every
# function imports: the callback, poller and publisher functions never load it (about 10 ms of each cold start).

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The image content type the first bytes announce (JPEG, PNG or WebP), or ``None``."""
    for magic, content_type in _MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


MAX_INPUT_PIXELS = 50_000_000
"""Decoded pixels above which an input is refused as a decompression bomb (about 7000x7000)."""

MIN_INPUT_SIDE = 16
"""Pixels a side below which an input is refused before any provider is paid: no face fits in it (the
self-hosted engine itself refuses images under 8 px)."""


@dataclass(frozen=True)
class ImageLimits:
    """What a provider accepts.

    Attributes
    ----------
    max_side
        Largest width or height in pixels; larger images are downscaled to fit.
    max_bytes
        Largest encoded size in bytes; larger outputs are re-encoded at lower JPEG quality.
    formats
        Pillow format names the provider takes (e.g. ``("JPEG", "PNG", "WEBP")``); others are re-encoded.
    """

    max_side: int
    max_bytes: int
    formats: tuple[str, ...] = ("JPEG", "PNG")


@dataclass(frozen=True)
class PreparedImage:
    """An input ready to send: encoded ``data``, its ``content_type``, and its ``width``/``height`` in pixels."""

    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        """File extension matching the content type, without the dot."""
        return {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}[self.content_type]


_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

MATCHER_MIN_SIDE = 80
"""Least pixels a side of an image the face matcher reads (Rekognition's minimum image dimensions)."""
Box = tuple[int, int, int, int]

MATCHER_LIMITS = ImageLimits(max_side=4096, max_bytes=5 * 1024 * 1024, formats=("JPEG", "PNG"))
"""What the face matcher takes: Amazon Rekognition reads JPEG and PNG images of at most 5 MB passed as bytes
(https://docs.aws.amazon.com/rekognition/latest/dg/limits.html). References are prepared to it; 4096 px a side is
ample for a face."""


def tile_crops(crops: Sequence[bytes], *, height: int = 200, gap: int = 16) -> tuple[PreparedImage, list[Box]]:
    """A provider's face crops (any format Pillow reads) side by side in one JPEG for the face matcher, each scaled to
    ``height`` pixels, in rows of at most five, with ``gap`` pixels of grey between them: one comparison per
    reference scores every crop (CompareFaces compares the source's face with each of the target's 100 largest).

    Returns
    -------
    tuple
        The sheet, and each crop's ``(left, top, right, bottom)`` box on it, in order.

    Raises
    ------
    InvalidImage
        A crop is not a readable image.
    ImageTooLarge
        The sheet cannot be encoded under the face matcher's 5 MB.
    """
    from PIL import Image, UnidentifiedImageError

    tiles = []
    for data in crops:
        try:
            image = _to_rgb(Image.open(io.BytesIO(data)))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InvalidImage("The provider's face crop is not a readable image.") from e
        width = max(1, round(image.width * height / image.height))
        tiles.append(image.resize((width, height), Image.Resampling.LANCZOS))
    rows = [tiles[i : i + 5] for i in range(0, len(tiles), 5)] or [[]]
    sheet_width = max(sum(t.width for t in row) + gap * (len(row) + 1) for row in rows)
    sheet = Image.new("RGB", (max(sheet_width, MATCHER_MIN_SIDE), len(rows) * (height + gap) + gap), (128, 128, 128))
    boxes: list[Box] = []
    for r, row in enumerate(rows):
        x, y = gap, gap + r * (height + gap)
        for tile in row:
            sheet.paste(tile, (x, y))
            boxes.append((x, y, x + tile.width, y + height))
            x += tile.width + gap
    for quality in (90, 75):
        out = io.BytesIO()
        sheet.save(out, format="JPEG", quality=quality)
        if out.tell() <= MATCHER_LIMITS.max_bytes:
            return PreparedImage(out.getvalue(), "image/jpeg", sheet.width, sheet.height), boxes
    raise ImageTooLarge("The provider's face crops cannot be put in one image under the face matcher's 5 MB.")


def for_matcher(image: PreparedImage) -> PreparedImage:
    """``image`` (a target prepared for a provider) in a form the face matcher reads, with the same pixels.

    Returns ``image`` itself when it is JPEG or PNG within :data:`MATCHER_LIMITS`; otherwise the same pixels encoded
    as PNG (lossless), or, when that is over 5 MB, as JPEG at quality 95 (the matcher then sees nearly, not exactly,
    the pixels sent).

    Raises
    ------
    ImageTooLarge
        Not even a JPEG of it fits in 5 MB.
    """
    if image.content_type in ("image/jpeg", "image/png") and len(image.data) <= MATCHER_LIMITS.max_bytes:
        return image
    from PIL import Image

    decoded = Image.open(io.BytesIO(image.data))
    decoded.load()
    out = io.BytesIO()
    _to_rgb(decoded).save(out, format="PNG")
    if out.tell() <= MATCHER_LIMITS.max_bytes:
        return PreparedImage(out.getvalue(), "image/png", image.width, image.height)
    out = io.BytesIO()
    _to_rgb(decoded).save(out, format="JPEG", quality=95)
    if out.tell() <= MATCHER_LIMITS.max_bytes:
        return PreparedImage(out.getvalue(), "image/jpeg", image.width, image.height)
    raise ImageTooLarge("The target image cannot be encoded under the face matcher's 5 MB.")


def open_image(data: bytes, *, name: str = "image") -> Image.Image:
    """Decode ``data`` fully with Pillow, refusing what must not be decoded (a decompression bomb) or cannot be.

    Returns the loaded image, as stored (no EXIF rotation, mode unchanged; ``format`` set). Raises ``InvalidImage``
    (empty, not an image, truncated or corrupt) or ``ImageTooLarge`` (over :data:`MAX_INPUT_PIXELS`); the messages
    name the image (``name``).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidImage(f"The {name} is empty (0 bytes).")
    # MAX_INPUT_PIXELS is below Pillow's own bomb limit (Image.MAX_IMAGE_PIXELS, about 89 M pixels): a size Pillow would
    # only warn about is refused below, and one twice its limit raises on opening. No warnings filter is changed here:
    # warnings.catch_warnings resets every module's record of warnings already shown, and a Powertools warning was then
    # logged again at every invocation.
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_INPUT_PIXELS:
            raise ImageTooLarge(f"The {name} declares {width}x{height} pixels, over the limit of {MAX_INPUT_PIXELS:,}.")
        image.load()
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"The {name} is too large to decode safely.") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImage(f"The {name} is not a readable image (JPEG, PNG or WebP expected).") from e
    return image


def prepare_image(data: bytes, limits: ImageLimits, *, name: str = "image") -> PreparedImage:
    """Decode, check and normalise one input image for a provider.

    Parameters
    ----------
    data
        The encoded image as uploaded.
    limits
        The provider's limits.
    name
        What to call the image in error messages (``target image`` or ``swap image``).

    Returns
    -------
    PreparedImage
        The original bytes when they already fit (upright, accepted format, within limits), otherwise a
        re-encoded JPEG (PNG when the image has transparency).

    Raises
    ------
    InvalidImage
        ``data`` is empty, not an image, truncated or corrupt, or narrower or shorter than
        :data:`MIN_INPUT_SIDE` pixels.
    ImageTooLarge
        The image declares more than :data:`MAX_INPUT_PIXELS` pixels (a decompression bomb), or cannot
        be brought under ``limits.max_bytes``.
    """
    from PIL import Image, ImageOps

    image = open_image(data, name=name)
    width, height = image.size
    source_format = image.format or ""
    if min(width, height) < MIN_INPUT_SIDE:
        raise InvalidImage(
            f"The {name} is {width}x{height} pixels, too small to hold a face "
            f"(at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} is needed)."
        )

    rotated = _has_orientation(image)
    oriented = ImageOps.exif_transpose(image) if rotated else image
    too_big = max(oriented.size) > limits.max_side
    keep_as_is = (
        source_format in limits.formats
        and not rotated
        and not too_big
        and len(data) <= limits.max_bytes
        and getattr(image, "n_frames", 1) == 1
        and image.mode in ("RGB", "L", "RGBA", "P")
    )
    if keep_as_is:
        return PreparedImage(data, _CONTENT_TYPES[source_format], width, height)

    if too_big:
        oriented.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    return _encode(oriented, limits, name)


def _has_orientation(image: Image.Image) -> bool:
    return image.getexif().get(0x0112, 1) not in (1, None)


def _encode(image: Image.Image, limits: ImageLimits, name: str) -> PreparedImage:
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha and "PNG" in limits.formats:
        out = io.BytesIO()
        image.convert("RGBA").save(out, format="PNG", optimize=False)
        if out.tell() <= limits.max_bytes:
            return PreparedImage(out.getvalue(), "image/png", image.width, image.height)
    rgb = _to_rgb(image)
    for quality in (92, 85, 75, 60):
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=quality)
        if out.tell() <= limits.max_bytes:
            return PreparedImage(out.getvalue(), "image/jpeg", rgb.width, rgb.height)
    raise ImageTooLarge(f"The {name} cannot be encoded under {limits.max_bytes:,} bytes.")


def _to_rgb(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip.
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")
