"""Decoding and encoding of image bytes with Pillow."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from .errors import InvalidImage

__all__ = ["OUTPUT_FORMATS", "decode_image", "encode_image"]

#: Accepted values of the ``format`` argument (case-insensitive; "JPG" is an alias of "JPEG").
OUTPUT_FORMATS = ("JPEG", "PNG")
JPEG_QUALITY = 95


def decode_image(data: bytes, *, name: str = "input") -> np.ndarray:
    """Decode image bytes (any format Pillow reads) into a BGR array, applying EXIF orientation.

    Parameters
    ----------
    data : bytes
        Encoded image (JPEG, PNG, WebP, ...).
    name : str
        ``"target"`` / ``"swap"``, used in error messages.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` ``uint8`` BGR, upright according to the EXIF ``Orientation`` tag.

    Raises
    ------
    InvalidImage
        If the bytes are empty, not an image Pillow can decode, truncated, or a decompression bomb.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise InvalidImage(f"the {name} image is empty or not bytes", image=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = np.asarray(upright.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"the {name} image could not be decoded: {exc}", image=name) from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_image(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    """Encode a BGR array as JPEG (quality 95) or PNG.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` ``uint8`` BGR.
    fmt : str
        ``"JPEG"`` (alias ``"JPG"``) or ``"PNG"``, case-insensitive.

    Returns
    -------
    bytes
        The encoded image.

    Raises
    ------
    ValueError
        If ``fmt`` is not supported.
    """
    f = fmt.upper()
    f = "JPEG" if f == "JPG" else f
    if f not in OUTPUT_FORMATS:
        raise ValueError(f"unsupported output format {fmt!r}; expected one of {OUTPUT_FORMATS}")
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
    if f == "JPEG":
        pil.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        pil.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
