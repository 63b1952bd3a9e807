"""Isolate and composite: swapping one chosen face with a provider that only swaps "the main face".

Providers without face ids swap whichever face they find first. To make them swap the face a user chose, the target
is cut down to that face:

1. :func:`isolate` crops the target around the chosen face (with a margin, as square as the image allows) and fills
   every other face that falls inside the crop with the crop's mean colour, so the provider's detector finds only the
   chosen one. The crop is upscaled when small (providers work on faces of a few hundred pixels) and sent as a
   one-face swap.
2. :func:`composite` pastes the provider's swapped crop back into the target through a feathered elliptical mask
   over the chosen face only. The mask is zero over the other faces (and the flat fill around them) and outside the
   crop's region, so every pixel of the target outside the mask is exactly the pixel the target had.

A job of several pairs isolates each chosen face from the same target and composites the swapped crops one after
another onto the same base image.

The result is encoded as PNG (:func:`encode_png`): re-encoding the whole image as JPEG would change every pixel of it,
not only the swapped faces, and each further pair would add its loss again.

Only Pillow is used (the shared layer has no numpy). Pillow is imported inside the functions, as in
:mod:`faceswap.images`: the functions that never composite do not pay for loading it at cold start.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceswap.errors import ImageTooLarge, InvalidImage, InvalidResult
from faceswap.images import open_image

if TYPE_CHECKING:
    from PIL import Image

Box = tuple[int, int, int, int]
"""A rectangle ``(left, top, right, bottom)`` in pixels of the target image (right and bottom exclusive)."""

JPEG_QUALITY = 95
"""JPEG quality of the isolated crop sent to the provider."""

ASPECT_TOLERANCE = 0.05
"""Largest relative difference between the aspect ratio of the provider's swapped crop and that of the crop sent."""

OTHER_FACE_GROWTH = 0.15
"""Each side of another face's box is moved out by this fraction of the box's width (left, right) or height (top,
bottom) before it is filled: detector boxes are tight (dlib's stops at the eyebrows and above the chin)."""

MASK_GROWTH = (0.075, 0.25, 0.075, 0.10)
"""How far the mask's ellipse reaches beyond the chosen face's box, as fractions of the box's width (left, right) or
height (top, bottom): 15 % wider, 25 % taller upward for the forehead and 10 % downward for the chin (the sample
photo's jaw landmarks reach 14 % of the box's height below dlib's box)."""

RESAMPLING_GUARD = 3
"""Pixels of the region around each filled face where the mask is also zero: resizing the swapped crop back to the
region (Lanczos, 3 lobes) spreads the flat fill's edge by up to this much."""


@dataclass(frozen=True)
class Isolated:
    """The crop of the target sent to the provider for one chosen face.

    Attributes
    ----------
    data
        The encoded crop (JPEG, quality :data:`JPEG_QUALITY`).
    content_type
        ``"image/jpeg"``.
    region
        The crop's rectangle in pixels of the target, inside the image.
    size
        The encoded crop's ``(width, height)`` in pixels; larger than the region's when it was upscaled, smaller
        only when the region's longer side was over ``max_side``.
    """

    data: bytes
    content_type: str
    region: Box
    size: tuple[int, int]


def decode(data: bytes) -> Image.Image:
    """Decode image bytes to an RGB image, as stored: EXIF orientation is NOT applied.

    The pipeline passes images already prepared for the provider (upright, see :func:`faceswap.images.prepare_image`),
    whose pixels are exactly those the provider received and the face boxes refer to.

    Parameters
    ----------
    data
        An encoded image (JPEG, PNG, WebP...).

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``, fully loaded; transparency is flattened onto white, 16-bit greyscale scaled to 8 bits.

    Raises
    ------
    InvalidImage
        ``data`` is empty, not an image, truncated or corrupt.
    ImageTooLarge
        The image declares more than :data:`faceswap.images.MAX_INPUT_PIXELS` pixels (a decompression bomb).
    """
    return _rgb(_open(data))


def encode_png(image: Image.Image, *, compress_level: int = 1) -> bytes:
    """Encode an image losslessly as PNG, so that every pixel outside the composited masks survives exactly.

    Parameters
    ----------
    image
        Any Pillow image (the output of :func:`composite` is ``RGB``).
    compress_level
        zlib level, 0 to 9. Encoding dominates the cost of compositing: for a 2048x1365 photograph, level 1 took
        0.22 s for 3.2 MB, level 6 (Pillow's default) 0.73 s for 2.7 MB (one x86_64 core; a composite itself about
        10 ms).

    Returns
    -------
    bytes
        The PNG file (about 1 byte a pixel for a photograph at level 1).
    """
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def isolate(
    target: bytes,
    face: Box,
    others: Sequence[Box],
    *,
    margin: float = 0.6,
    min_side: int = 512,
    max_side: int = 2048,
) -> Isolated:
    """Crop the target around one chosen face, with every other face in the crop filled flat.

    The region is ``face`` grown on each side by ``margin`` times the face's larger side, widened to a square when
    the image allows (the square is slid inside the image rather than cut at its edge) and clamped to the image.
    Each box of ``others`` that intersects the region is grown (:data:`OTHER_FACE_GROWTH`), clipped to the region and
    filled with the region's mean colour, except over ``face`` itself. The crop is then resized (Lanczos) so that its
    shorter side is at least ``min_side`` and its longer side at most ``max_side``; it is never downscaled unless its
    longer side is over ``max_side``.

    Parameters
    ----------
    target
        The encoded target image exactly as prepared for the provider; decoded without EXIF rotation.
    face
        The chosen face's box ``(left, top, right, bottom)`` in pixels of ``target``; must lie inside the image.
    others
        The boxes of the target's other faces, in pixels of ``target`` (may extend beyond the image); a box equal to
        ``face`` is ignored, so every face of the target may be passed.
    margin
        Context kept around the face on each side, as a fraction of the face's larger side.
    min_side
        Pixels: the crop is upscaled until its shorter side is at least this (unless that puts its longer side over
        ``max_side``).
    max_side
        Pixels: the crop's longer side is never above this.

    Returns
    -------
    Isolated
        The JPEG crop, its region in the target and its encoded size.

    Raises
    ------
    InvalidImage
        ``target`` does not decode as an image.
    ImageTooLarge
        ``target`` is a decompression bomb.
    ValueError
        ``face`` is empty or not inside the image, or ``min_side``/``max_side`` are not positive.
    """
    from PIL import Image, ImageStat

    if min_side < 1 or max_side < 1:
        raise ValueError(f"min_side and max_side must be positive, not {min_side} and {max_side}.")
    image = decode(target)
    _check_inside(face, image.size)
    region = _region(face, image.size, margin)
    crop = image.crop(region)

    hidden = _hidden_boxes(face, others, region)
    if hidden:
        mean = tuple(round(v) for v in ImageStat.Stat(crop).mean)
        for box in hidden:
            _fill_except(crop, _shift(box, region), mean, _shift(face, region))

    size = _scaled_size(crop.size, min_side, max_side)
    if size != crop.size:
        crop = crop.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=JPEG_QUALITY)
    return Isolated(data=out.getvalue(), content_type="image/jpeg", region=region, size=crop.size)


def placement(
    face: Box, image_size: tuple[int, int], *, margin: float = 0.6, min_side: int = 512, max_side: int = 2048
) -> Isolated:
    """Where :func:`isolate`, with the same arguments, cuts its crop around ``face`` in an image of ``image_size``:
    its ``region`` and encoded ``size``, from the geometry alone (nothing is decoded; ``data`` is empty). Enough for
    :func:`composite`, which reads only those two."""
    region = _region(face, image_size, margin)
    size = _scaled_size((region[2] - region[0], region[3] - region[1]), min_side, max_side)
    return Isolated(data=b"", content_type="image/jpeg", region=region, size=size)


def crop_size(
    face: Box, image_size: tuple[int, int], *, margin: float = 0.6, min_side: int = 512, max_side: int = 2048
) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of the crop :func:`isolate` makes around ``face`` in an image of
    ``image_size``, with the same arguments (the geometry only: nothing is decoded)."""
    return placement(face, image_size, margin=margin, min_side=min_side, max_side=max_side).size


def check_shape(swapped: bytes, expected: tuple[int, int]) -> None:
    """Raise ``InvalidResult`` unless ``swapped`` (a provider's swapped crop) is an image whose aspect ratio is within
    :data:`ASPECT_TOLERANCE` of ``expected`` ``(width, height)``, the crop sent. Reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(swapped)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InvalidResult("The provider's swapped crop is not a readable image.") from e
    aspect, sent = width / max(height, 1), expected[0] / max(expected[1], 1)
    if abs(aspect - sent) > ASPECT_TOLERANCE * sent:
        raise InvalidResult(
            f"The provider returned a crop of {width}x{height} for the {expected[0]}x{expected[1]} crop it was sent: "
            "it cannot be put back over the face."
        )


def composite(
    base: Image.Image,
    swapped: bytes,
    isolated: Isolated,
    face: Box,
    others: Sequence[Box],
    *,
    feather: float = 0.12,
) -> Image.Image:
    """Paste the provider's swapped crop back over the chosen face only.

    The swapped crop is resized (Lanczos) to the region's size and pasted at the region through a mask: an ellipse
    around ``face`` grown by :data:`MASK_GROWTH`, blurred (Gaussian, standard deviation ``feather`` times the face's
    larger side), then zero over each box of ``others`` (grown as :func:`isolate` fills them, plus
    :data:`RESAMPLING_GUARD` pixels) and outside the region. Pixels where the mask is zero keep exactly the values of
    ``base``.

    Parameters
    ----------
    base
        The image to composite onto, the size of the target: the decoded target (:func:`decode`) for the first pair,
        the previous call's result for the next ones. Not modified.
    swapped
        The provider's result for ``isolated``: an encoded image with the aspect ratio of ``isolated.size``
        (any size; greyscale, palette and RGBA are accepted, transparent pixels keep ``base``'s).
    isolated
        What :func:`isolate` returned for this face.
    face
        The chosen face's box in pixels of the target (the one given to :func:`isolate`).
    others
        The other faces' boxes in pixels of the target (the ones given to :func:`isolate`).
    feather
        Softness of the mask's edge, as a fraction of the face's larger side.

    Returns
    -------
    PIL.Image.Image
        A new ``RGB`` image the size of ``base``.

    Raises
    ------
    InvalidResult
        ``swapped`` does not decode as an image, or its aspect ratio differs from ``isolated.size``'s by more than
        :data:`ASPECT_TOLERANCE`.
    ValueError
        ``isolated.region`` is not inside ``base``, or ``face`` not inside the region.
    """
    from PIL import Image, ImageDraw

    region = isolated.region
    _check_inside(region, base.size)
    _check_inside(face, base.size)
    if not _contains(region, face):
        raise ValueError(f"The face box {face} is not inside the isolated region {region}.")
    try:
        result = _open(swapped)
    except (InvalidImage, ImageTooLarge) as e:
        raise InvalidResult(f"The provider's swapped crop is not a readable image: {e.message}") from e
    sent_w, sent_h = isolated.size
    got_w, got_h = result.size
    if abs((got_w / got_h) / (sent_w / sent_h) - 1) > ASPECT_TOLERANCE:
        raise InvalidResult(
            f"The provider's swapped crop is {got_w}x{got_h} pixels, not the shape of the {sent_w}x{sent_h} crop sent."
        )

    region_size = (region[2] - region[0], region[3] - region[1])
    out = base.convert("RGB") if base.mode != "RGB" else base.copy()
    patch = _patch(result, out.crop(region))
    if patch.size != region_size:
        patch = patch.resize(region_size, Image.Resampling.LANCZOS)

    mask = _face_mask(face, region, feather)
    draw = ImageDraw.Draw(mask)
    for box in _hidden_boxes(face, others, region, guard=RESAMPLING_GUARD):
        left, top, right, bottom = _shift(box, region)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=0)
    out.paste(patch, region[:2], mask)
    return out


def mask_bounds(face: Box, isolated: Isolated, *, feather: float = 0.12) -> Box:
    """The bounding box, in pixels of the target, of the pixels :func:`composite` may change for ``face``.

    It is the support of the blurred ellipse within the region, before the other faces are cut out of it: every pixel
    outside it keeps its value whatever ``others`` are.

    Parameters
    ----------
    face
        The chosen face's box in pixels of the target.
    isolated
        What :func:`isolate` returned for this face.
    feather
        As given to :func:`composite`.

    Returns
    -------
    Box
        ``(left, top, right, bottom)`` in pixels of the target, inside ``isolated.region``; empty
        (``left == right``) if the mask is zero everywhere.
    """
    region = isolated.region
    bbox = _face_mask(face, region, feather).getbbox()
    if bbox is None:
        return (region[0], region[1], region[0], region[1])
    left, top, right, bottom = bbox
    return (left + region[0], top + region[1], right + region[0], bottom + region[1])


def _open(data: bytes) -> Image.Image:
    return open_image(data, name="image")


def _rgb(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB") if image.mode != "RGB" else image


def _patch(result: Image.Image, under: Image.Image) -> Image.Image:
    """The swapped crop in RGB; where it is transparent, the base's pixels (``under``, the region) show through."""
    if result.mode in ("RGBA", "LA", "PA") or (result.mode == "P" and "transparency" in result.info):
        from PIL import Image

        rgba = result.convert("RGBA")
        if rgba.size != under.size:
            rgba = rgba.resize(under.size, Image.Resampling.LANCZOS)
        flat = under.copy()
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return _rgb(result)


def _check_inside(box: Box, size: tuple[int, int]) -> None:
    left, top, right, bottom = box
    if not (0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]):
        raise ValueError(f"The box {box} is empty or not inside the {size[0]}x{size[1]} image.")


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _region(face: Box, size: tuple[int, int], margin: float) -> Box:
    """``face`` grown by ``margin`` times its larger side on each side, squared, slid and clamped inside ``size``."""
    left, top, right, bottom = face
    width, height = size
    pad = margin * max(right - left, bottom - top)
    side = math.ceil(max(right - left, bottom - top) + 2 * pad)
    x0, w = _span(left, right, side, width)
    y0, h = _span(top, bottom, side, height)
    return (x0, y0, x0 + w, y0 + h)


def _span(low: int, high: int, side: int, limit: int) -> tuple[int, int]:
    """Start and length of a span of ``side`` pixels centred on ``[low, high)``, moved and cut to fit ``[0, limit)``."""
    length = min(side, limit)
    start = round((low + high - length) / 2)
    return max(0, min(start, limit - length)), length


def _scaled_size(size: tuple[int, int], min_side: int, max_side: int) -> tuple[int, int]:
    """``size`` scaled up until its shorter side is ``min_side``, down until its longer side is at most ``max_side``."""
    width, height = size
    scale = min(max(1.0, min_side / min(width, height)), max_side / max(width, height))
    if scale == 1.0:
        return size
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def _grow(box: Box, left: float, top: float, right: float, bottom: float) -> tuple[float, float, float, float]:
    width, height = box[2] - box[0], box[3] - box[1]
    return (box[0] - left * width, box[1] - top * height, box[2] + right * width, box[3] + bottom * height)


def _intersect(a: Box, b: Box) -> Box | None:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (left, top, right, bottom) if left < right and top < bottom else None


def _hidden_boxes(face: Box, others: Sequence[Box], region: Box, *, guard: int = 0) -> list[Box]:
    """The other faces' boxes that intersect ``region``, grown, widened by ``guard`` pixels a side and clipped to it.

    A box equal to ``face`` is skipped (a caller may pass every face of the target as ``others``).
    """
    hidden = []
    g = OTHER_FACE_GROWTH
    for other in others:
        if tuple(other) == tuple(face):
            continue
        x0, y0, x1, y1 = _grow(other, g, g, g, g)
        grown = (math.floor(x0) - guard, math.floor(y0) - guard, math.ceil(x1) + guard, math.ceil(y1) + guard)
        clipped = _intersect(grown, region)
        if clipped is not None:
            hidden.append(clipped)
    return hidden


def _shift(box: Box, region: Box) -> Box:
    return (box[0] - region[0], box[1] - region[1], box[2] - region[0], box[3] - region[1])


def _fill_except(image: Image.Image, box: Box, colour: tuple[int, ...], keep: Box) -> None:
    """Fill ``box`` (right/bottom exclusive) with ``colour``, except where it overlaps ``keep``."""
    from PIL import Image

    left, top, right, bottom = box
    pieces = [
        (left, top, right, min(bottom, keep[1])),  # above keep
        (left, max(top, keep[3]), right, bottom),  # below keep
        (left, max(top, keep[1]), min(right, keep[0]), min(bottom, keep[3])),  # left of keep
        (max(left, keep[2]), max(top, keep[1]), right, min(bottom, keep[3])),  # right of keep
    ]
    for x0, y0, x1, y1 in pieces:
        if x0 < x1 and y0 < y1:
            image.paste(Image.new("RGB", (x1 - x0, y1 - y0), colour), (x0, y0))


def _face_mask(face: Box, region: Box, feather: float) -> Image.Image:
    """Mode ``L`` mask the size of ``region``: the blurred ellipse around ``face`` (0 = keep base, 255 = swapped)."""
    from PIL import Image, ImageDraw, ImageFilter

    size = (region[2] - region[0], region[3] - region[1])
    mask = Image.new("L", size, 0)
    x0, y0, x1, y1 = _grow(_shift(face, region), *MASK_GROWTH)
    ImageDraw.Draw(mask).ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    radius = feather * max(face[2] - face[0], face[3] - face[1])
    if radius > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(radius))
    return mask
