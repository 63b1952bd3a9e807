"""Isolate and composite: the chosen face is swapped in a crop and pasted back; every other pixel is left exactly.

Images are made in the test with Pillow (random noise shows any changed pixel; smooth gradients keep JPEG's loss
small where a test compares a JPEG crop), plus the sample photo ``../shared/faces/obama_and_biden_side_by_side.jpg``
(read-only). The "provider" is a function that changes the crop it is sent (colours inverted) and encodes it again.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from faceswap.composite import (
    Box,
    Isolated,
    check_shape,
    composite,
    crop_size,
    decode,
    encode_png,
    isolate,
    mask_bounds,
)
from faceswap.errors import InvalidImage, InvalidResult

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"
SIDE_BY_SIDE = FACES / "obama_and_biden_side_by_side.jpg"
# The photo's two face boxes (1126x661, no EXIF orientation), measured once with the self-hosted engine's detector
# (dlib HOG, in the dev venv): detect_faces(decode_image(data)) gave these, left to right. Hard-coded so that the unit
# tests do not need dlib.
OBAMA: Box = (255, 59, 400, 205)
BIDEN: Box = (792, 72, 967, 248)

SIZE = (1200, 800)
LEFT: Box = (300, 250, 500, 470)
RIGHT: Box = (700, 260, 880, 460)
NEAR: Box = (560, 270, 720, 450)
"""A face close enough to LEFT that LEFT's crop (default margin) and the reach of its mask take in part of it."""


# --- images -----------------------------------------------------------------------------------------------------


def noise(size: tuple[int, int] = SIZE, seed: int = 1) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def gradient(size: tuple[int, int] = SIZE) -> Image.Image:
    ramp = Image.linear_gradient("L")  # 256x256, black at the top to white at the bottom
    red = ramp.rotate(90).resize(size)
    green = ramp.resize(size)
    blue = Image.new("L", size, 96)
    return Image.merge("RGB", (red, green, blue))


def draw_face(image: Image.Image, box: Box) -> None:
    """A cartoon face filling ``box``: skin ellipse, eyes, nose and mouth."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    draw = ImageDraw.Draw(image)
    draw.ellipse((left, top, right - 1, bottom - 1), fill=(224, 172, 140))
    for ex in (left + 0.3 * w, left + 0.7 * w):
        draw.ellipse((ex - 0.08 * w, top + 0.35 * h, ex + 0.08 * w, top + 0.45 * h), fill=(255, 255, 255))
        draw.ellipse((ex - 0.03 * w, top + 0.37 * h, ex + 0.03 * w, top + 0.43 * h), fill=(40, 30, 20))
    draw.line((left + 0.5 * w, top + 0.45 * h, left + 0.45 * w, top + 0.65 * h), fill=(150, 100, 80), width=3)
    draw.arc((left + 0.3 * w, top + 0.6 * h, left + 0.7 * w, top + 0.8 * h), 20, 160, fill=(160, 40, 50), width=4)


def scene(background: Image.Image, faces: Sequence[Box]) -> Image.Image:
    image = background.copy()
    for box in faces:
        draw_face(image, box)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    if fmt == "PNG":
        params.setdefault("compress_level", 0)  # noise does not compress: spend no time trying
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def provider(
    isolated: Isolated, change: Callable[[Image.Image], Image.Image] = ImageOps.invert, fmt: str = "JPEG"
) -> bytes:
    """What a provider returns for ``isolated``: the crop, changed, encoded again."""
    return encode(change(decode(isolated.data)), fmt)


# --- comparisons --------------------------------------------------------------------------------------------------


def changed_outside(before: Image.Image, after: Image.Image, allowed: Sequence[Box]) -> Box | None:
    """The bounding box of the pixels that differ between the images outside every ``allowed`` box (None: none)."""
    diff = ImageChops.difference(before.convert("RGB"), after.convert("RGB"))
    for box in allowed:
        diff.paste((0, 0, 0), box)
    return diff.getbbox()


def changed_within(before: Image.Image, after: Image.Image, box: Box) -> Box | None:
    return ImageChops.difference(before.crop(box), after.crop(box)).getbbox()


def in_crop(box: Box, isolated: Isolated, *, inset: int = 0) -> Box:
    """``box`` (target pixels, inside the region) in pixels of the encoded crop, shrunk by ``inset`` a side."""
    rx, ry = isolated.region[:2]
    sx = isolated.size[0] / (isolated.region[2] - isolated.region[0])
    sy = isolated.size[1] / (isolated.region[3] - isolated.region[1])
    left, top = round((box[0] - rx) * sx), round((box[1] - ry) * sy)
    right, bottom = round((box[2] - rx) * sx), round((box[3] - ry) * sy)
    return (left + inset, top + inset, right - inset, bottom - inset)


def intersection(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# --- isolate ------------------------------------------------------------------------------------------------------


def test_isolate_grows_the_face_by_the_margin_into_a_square() -> None:
    target = encode(scene(gradient(), [LEFT, RIGHT]))

    isolated = isolate(target, LEFT, [RIGHT])

    # LEFT is 200x220: 0.6 x 220 = 132 px on each side of the larger side, centred on the face
    assert isolated.region == (158, 118, 642, 602)
    assert isolated.content_type == "image/jpeg"
    assert isolated.size == (512, 512)  # 484 px upscaled to min_side
    assert Image.open(io.BytesIO(isolated.data)).size == isolated.size
    assert Image.open(io.BytesIO(isolated.data)).format == "JPEG"


def test_isolate_fills_another_face_in_the_crop_with_one_flat_colour() -> None:
    image = scene(gradient(), [LEFT, NEAR])
    isolated = isolate(encode(image, "PNG"), LEFT, [NEAR])
    crop = decode(isolated.data)

    hidden = intersection(NEAR, isolated.region)
    assert hidden is not None, "the test needs part of NEAR inside LEFT's crop"
    # inside the filled box, away from its edge (JPEG rings for a few pixels across an edge)
    stat = ImageStat.Stat(crop.crop(in_crop(hidden, isolated, inset=8)))
    assert max(stat.var) < 1.0
    region_mean = ImageStat.Stat(image.crop(isolated.region)).mean
    assert all(abs(a - b) < 3 for a, b in zip(stat.mean, region_mean, strict=True))


def test_isolate_keeps_the_chosen_face_as_it_was() -> None:
    image = scene(gradient(), [LEFT, NEAR])
    isolated = isolate(encode(image, "PNG"), LEFT, [NEAR])

    sent = decode(isolated.data).resize(
        (isolated.region[2] - isolated.region[0], isolated.region[3] - isolated.region[1]), Image.Resampling.LANCZOS
    )
    rx, ry = isolated.region[:2]
    face = sent.crop((LEFT[0] - rx, LEFT[1] - ry, LEFT[2] - rx, LEFT[3] - ry))
    assert mean_abs_difference(face, image.crop(LEFT)) < 2.5  # JPEG at quality 95, upscaled and back
    assert max(ImageStat.Stat(face).var) > 100  # the face's features are there, not a fill


def test_isolate_never_fills_the_chosen_face_even_under_an_overlapping_face() -> None:
    chosen: Box = (400, 300, 600, 500)
    overlapping: Box = (560, 300, 760, 500)  # its box covers the chosen face's right 40 px
    image = scene(gradient(), [chosen])
    isolated = isolate(encode(image, "PNG"), chosen, [overlapping])
    sent = decode(isolated.data)

    face = sent.crop(in_crop(chosen, isolated)).resize((200, 200), Image.Resampling.LANCZOS)
    assert mean_abs_difference(face, image.crop(chosen)) < 2.5
    beside = intersection((600, 300, 760, 500), isolated.region)  # the overlapping face right of the chosen one
    assert beside is not None
    assert max(ImageStat.Stat(sent.crop(in_crop(beside, isolated, inset=8))).var) < 1.0


def test_isolate_ignores_the_chosen_face_among_others() -> None:
    target = encode(scene(gradient(), [LEFT, RIGHT]), "PNG")

    assert isolate(target, LEFT, [LEFT, RIGHT]) == isolate(target, LEFT, [RIGHT])


@pytest.mark.parametrize(
    ("face", "region"),
    [
        ((0, 0, 100, 100), (0, 0, 220, 220)),
        ((1100, 700, 1200, 800), (980, 580, 1200, 800)),
        ((1150, 0, 1200, 60), (1068, 0, 1200, 132)),
    ],
    ids=["top-left", "bottom-right", "top-right"],
)
def test_isolate_keeps_the_region_square_inside_the_image_at_a_corner(face: Box, region: Box) -> None:
    isolated = isolate(encode(scene(gradient(), [face]), "PNG"), face, [])

    assert isolated.region == region
    assert contains(isolated.region, face)


def test_isolate_cuts_the_region_to_the_image_when_the_square_does_not_fit() -> None:
    face: Box = (150, 80, 450, 330)  # 300 px: a 660 px square in a 600x400 image
    isolated = isolate(encode(scene(gradient((600, 400)), [face]), "PNG"), face, [])

    assert isolated.region == (0, 0, 600, 400)
    assert isolated.size == (768, 512)  # shorter side up to min_side, aspect kept


def test_isolate_upscales_a_small_face_crop_to_min_side() -> None:
    face: Box = (500, 300, 540, 340)  # 40 px: an 88 px crop
    isolated = isolate(encode(scene(gradient(), [face]), "PNG"), face, [])

    assert isolated.region == (476, 276, 564, 364)
    assert isolated.size == (512, 512)
    assert isolate(encode(scene(gradient(), [face]), "PNG"), face, [], min_side=256).size == (256, 256)


@pytest.mark.parametrize(
    ("max_side", "size"),
    [(2048, (1320, 1320)), (1024, (1024, 1024))],
    ids=["never-downscaled", "downscaled-to-max-side"],
)
def test_isolate_downscales_only_over_max_side(max_side: int, size: tuple[int, int]) -> None:
    face: Box = (1200, 600, 1800, 1200)  # 600 px in a 3000x1800 image: a 1320 px crop
    target = encode(Image.new("RGB", (3000, 1800), (90, 120, 150)), "PNG")

    assert isolate(target, face, [], max_side=max_side).size == size


def test_isolate_refuses_bytes_that_are_not_an_image() -> None:
    with pytest.raises(InvalidImage):
        isolate(b"GIF89a not really", LEFT, [])
    with pytest.raises(InvalidImage):
        isolate(b"", LEFT, [])


@pytest.mark.parametrize(
    "face",
    [(-10, 100, 100, 200), (1150, 100, 1201, 200), (100, 700, 200, 801), (300, 300, 300, 400), (500, 300, 400, 400)],
    ids=["left-of-image", "right-of-image", "below-image", "empty", "inverted"],
)
def test_isolate_refuses_a_face_box_not_inside_the_image(face: Box) -> None:
    with pytest.raises(ValueError, match="not inside"):
        isolate(encode(gradient(), "PNG"), face, [])


# --- composite ----------------------------------------------------------------------------------------------------


def test_composite_changes_no_pixel_outside_the_mask_bounds() -> None:
    base = scene(noise(), [LEFT, RIGHT])
    isolated = isolate(encode(base, "PNG"), LEFT, [RIGHT])

    out = decode(encode_png(composite(base, provider(isolated), isolated, LEFT, [RIGHT])))

    bounds = mask_bounds(LEFT, isolated)
    assert contains(isolated.region, bounds)
    assert contains(bounds, LEFT)
    assert changed_outside(base, out, [bounds]) is None
    assert changed_within(base, out, LEFT) is not None


def test_composite_leaves_the_other_face_in_the_crop_exactly_as_it_was() -> None:
    base = scene(noise(), [LEFT, NEAR])
    isolated = isolate(encode(base, "PNG"), LEFT, [NEAR])
    assert intersection(NEAR, mask_bounds(LEFT, isolated)) is not None, "the test needs the mask to reach NEAR"

    out = decode(encode_png(composite(base, provider(isolated), isolated, LEFT, [NEAR])))

    assert changed_within(base, out, NEAR) is None
    assert changed_outside(base, out, [mask_bounds(LEFT, isolated)]) is None


def test_composite_puts_the_swapped_face_in_with_a_feathered_edge() -> None:
    base = Image.new("RGB", SIZE, (100, 100, 100))
    isolated = isolate(encode(base, "PNG"), LEFT, [])

    out = composite(base, encode(Image.new("RGB", isolated.size, (200, 200, 200)), "PNG"), isolated, LEFT, [])

    centre_y = (LEFT[1] + LEFT[3]) // 2
    row = [out.getpixel((x, centre_y)) for x in range((LEFT[0] + LEFT[2]) // 2, isolated.region[2])]
    greys = [pixel[0] for pixel in row]  # type: ignore[index]
    assert greys[0] == 200  # the face's centre is the swapped crop's
    assert greys[-1] == 100  # the region's edge is the base's
    assert greys == sorted(greys, reverse=True)  # fading outward, never back
    assert len({g for g in greys if 100 < g < 200}) > 20  # through a soft edge, not a step


def test_composite_does_not_modify_the_base() -> None:
    base = scene(noise(), [LEFT, RIGHT])
    before = base.tobytes()
    isolated = isolate(encode(base, "PNG"), LEFT, [RIGHT])

    out = composite(base, provider(isolated), isolated, LEFT, [RIGHT])

    assert base.tobytes() == before
    assert out is not base
    assert out.mode == "RGB"
    assert out.size == base.size


@pytest.mark.parametrize(
    "size",
    [(256, 256), (1024, 1024), (520, 500)],
    ids=["half", "double", "aspect-4-percent-off"],
)
def test_composite_accepts_a_result_of_another_size_with_the_same_aspect(size: tuple[int, int]) -> None:
    base = scene(noise(), [LEFT, RIGHT])
    isolated = isolate(encode(base, "PNG"), LEFT, [RIGHT])

    out = composite(base, provider(isolated, lambda im: ImageOps.invert(im).resize(size)), isolated, LEFT, [RIGHT])

    assert changed_outside(base, out, [mask_bounds(LEFT, isolated)]) is None
    assert changed_within(base, out, LEFT) is not None


@pytest.mark.parametrize("size", [(512, 384), (540, 512)], ids=["4-3", "aspect-5.5-percent-off"])
def test_composite_refuses_a_result_of_another_aspect(size: tuple[int, int]) -> None:
    base = scene(noise(), [LEFT])
    isolated = isolate(encode(base, "PNG"), LEFT, [])
    assert isolated.size == (512, 512)

    with pytest.raises(InvalidResult, match="shape"):
        composite(base, encode(Image.new("RGB", size)), isolated, LEFT, [])


@pytest.mark.parametrize("swapped", [b"", b"\xff\xd8\xff\xe0 truncated", b"<html>error</html>"])
def test_composite_refuses_a_result_that_is_not_an_image(swapped: bytes) -> None:
    base = scene(noise(), [LEFT])
    isolated = isolate(encode(base, "PNG"), LEFT, [])

    with pytest.raises(InvalidResult) as raised:
        composite(base, swapped, isolated, LEFT, [])
    assert raised.value.code == "invalid_result"


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_composite_accepts_a_greyscale_palette_or_rgba_result(mode: str) -> None:
    base = scene(noise(), [LEFT, RIGHT])
    isolated = isolate(encode(base, "PNG"), LEFT, [RIGHT])

    swapped = provider(isolated, lambda im: ImageOps.invert(im).convert(mode), fmt="PNG")
    out = composite(base, swapped, isolated, LEFT, [RIGHT])

    assert out.mode == "RGB"
    assert changed_outside(base, out, [mask_bounds(LEFT, isolated)]) is None
    assert changed_within(base, out, LEFT) is not None


def test_composite_keeps_the_base_where_the_result_is_transparent() -> None:
    base = scene(noise(), [LEFT])
    isolated = isolate(encode(base, "PNG"), LEFT, [])
    clear = encode(Image.new("RGBA", isolated.size, (255, 0, 0, 0)), "PNG")

    assert composite(base, clear, isolated, LEFT, []).tobytes() == base.tobytes()


def test_two_pairs_composited_in_turn_change_nothing_outside_their_masks() -> None:
    base = scene(noise(), [LEFT, NEAR])
    target = encode(base, "PNG")
    first = isolate(target, LEFT, [NEAR])
    second = isolate(target, NEAR, [LEFT])

    once = composite(base, provider(first), first, LEFT, [NEAR])
    twice = decode(encode_png(composite(once, provider(second), second, NEAR, [LEFT])))

    bounds = [mask_bounds(LEFT, first), mask_bounds(NEAR, second)]
    assert changed_outside(base, twice, bounds) is None
    assert changed_within(once, twice, LEFT) is None  # the second pair leaves the first face as swapped
    assert changed_outside(once, twice, bounds[1:]) is None
    assert changed_within(base, twice, LEFT) is not None
    assert changed_within(base, twice, NEAR) is not None


def test_composite_refuses_a_face_outside_the_isolated_region() -> None:
    base = scene(noise(), [LEFT, RIGHT])
    isolated = isolate(encode(base, "PNG"), LEFT, [RIGHT])

    with pytest.raises(ValueError, match="not inside"):
        composite(base, provider(isolated), isolated, RIGHT, [LEFT])


# --- the sample photo ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("face", "other"), [(OBAMA, BIDEN), (BIDEN, OBAMA)], ids=["obama", "biden"])
def test_sample_photo_changes_only_the_chosen_face(face: Box, other: Box) -> None:
    target = SIDE_BY_SIDE.read_bytes()
    base = decode(target)
    isolated = isolate(target, face, [other])

    out = decode(encode_png(composite(base, provider(isolated), isolated, face, [other])))

    bounds = mask_bounds(face, isolated)
    assert intersection(bounds, other) is None
    assert changed_outside(base, out, [bounds]) is None
    assert changed_within(base, out, other) is None
    assert mean_abs_difference(base.crop(face), out.crop(face)) > 50  # the face is the provider's (inverted)


def test_sample_photo_wide_crop_hides_the_other_face() -> None:
    target = SIDE_BY_SIDE.read_bytes()
    isolated = isolate(target, BIDEN, [OBAMA], margin=2.5)  # wide enough to take in Obama's face
    crop = decode(isolated.data)

    assert contains(isolated.region, OBAMA)
    assert max(ImageStat.Stat(crop.crop(in_crop(OBAMA, isolated, inset=8))).var) < 1.0
    assert max(ImageStat.Stat(crop.crop(in_crop(BIDEN, isolated))).var) > 500

    base = decode(target)
    out = composite(base, provider(isolated), isolated, BIDEN, [OBAMA])
    assert changed_within(base, out, OBAMA) is None
    assert changed_outside(base, out, [mask_bounds(BIDEN, isolated)]) is None


# --- helpers ------------------------------------------------------------------------------------------------------


def test_encode_png_keeps_every_pixel() -> None:
    image = noise((300, 200))

    assert decode(encode_png(image)).tobytes() == image.tobytes()


def test_decode_does_not_apply_exif_orientation() -> None:
    image = gradient((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"

    decoded = decode(encode(image, "PNG", exif=exif))

    assert decoded.size == (40, 20)
    assert decoded.tobytes() == image.tobytes()


def test_decode_gives_rgb() -> None:
    assert decode(encode(Image.new("L", (30, 20), 128), "PNG")).mode == "RGB"
    assert decode(encode(Image.new("RGBA", (30, 20), (0, 0, 0, 0)), "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_importing_the_module_does_not_load_pillow() -> None:
    code = "import sys, faceswap.composite; print('PIL' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert loaded == "False"


@pytest.mark.parametrize(
    ("face", "size", "max_side"),
    [(LEFT, (1200, 800), 2048), ((0, 0, 90, 120), (1200, 800), 2048), ((900, 500, 1190, 790), (1200, 800), 1024)],
)
def test_crop_size_is_the_size_isolate_makes(face: Box, size: tuple[int, int], max_side: int) -> None:
    target = encode(Image.new("RGB", size, (90, 120, 150)))
    assert crop_size(face, size, max_side=max_side) == isolate(target, face, [], max_side=max_side).size


def test_a_swapped_crop_is_held_to_the_shape_sent() -> None:
    out = io.BytesIO()
    Image.new("RGB", (300, 310), (1, 2, 3)).save(out, format="PNG")
    check_shape(out.getvalue(), (512, 512))  # the same shape, within 5 %
    with pytest.raises(InvalidResult, match="cannot be put back"):
        check_shape(out.getvalue(), (512, 256))
    with pytest.raises(InvalidResult, match="not a readable image"):
        check_shape(b"<html>", (512, 512))
