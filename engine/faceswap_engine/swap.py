"""Classical landmark-based face swap: Delaunay triangles, per-triangle affine warp, colour transfer, Poisson blend."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import SupportsIndex

import cv2
import numpy as np

from .detect import Face, as_bgr, detect_faces
from .errors import ChosenFaceNotFound, FaceIndexOutOfRange, NoFaceDetected
from .imageio import decode_image, encode_image

__all__ = ["swap_faces", "swap_image_bytes"]

#: Triangles whose area (in px^2, in either image) is below this are skipped: a degenerate triangle gives a
#: singular affine transform, which makes ``cv2.warpAffine`` produce garbage and can take seconds.
_MIN_TRIANGLE_AREA = 0.5

#: Landmarks used as triangle vertices: all but the inner-lip contour (60-67). Inner-lip triangles are
#: near-degenerate whenever one of the mouths is closed and smear the teeth into streaks; without them the
#: whole mouth is warped as a unit by the outer-lip triangles.
_TRIANGULATED = np.r_[0:60]

#: Blur sigma of the colour transfer as a fraction of the target's eye distance. Smaller transfers more of the
#: target's shading (and, too small, its features); 0.5 evens out lighting while keeping identity (measured).
_COLOUR_SIGMA_FRAC = 0.5


def _triangle_area(t: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = t
    return abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)) / 2.0


def _delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay-triangulate ``points`` ``(N, 2)`` float32; return vertex indices ``(T, 3)`` int."""
    x0, y0 = np.floor(points.min(axis=0)) - 1
    x1, y1 = np.ceil(points.max(axis=0)) + 2
    subdiv = cv2.Subdiv2D((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    subdiv.insert([(float(x), float(y)) for x, y in points])
    tri = subdiv.getTriangleList().reshape(-1, 3, 2)
    if len(tri) == 0:
        return np.empty((0, 3), dtype=np.intp)
    dist = np.linalg.norm(tri[:, :, None, :] - points[None, None, :, :], axis=-1)  # (T, 3, N)
    idx = dist.argmin(axis=-1)
    ok = (dist.min(axis=-1) < 0.5).all(axis=1)  # drops triangles touching Subdiv2D's virtual outer vertices
    return idx[ok]


def _warp_triangle(src: np.ndarray, dst: np.ndarray, t_src: np.ndarray, t_dst: np.ndarray) -> None:
    """Affine-warp triangle ``t_src`` of ``src`` onto triangle ``t_dst`` of ``dst`` (in place).

    Works inside the two bounding rectangles only. Both triangles are ``(3, 2)`` float32 and lie inside
    their images.
    """
    sx, sy, sw, sh = cv2.boundingRect(t_src)
    dx, dy, dw, dh = cv2.boundingRect(t_dst)
    dst_roi = dst[dy : dy + dh, dx : dx + dw]
    dh, dw = dst_roi.shape[:2]
    if dh == 0 or dw == 0:
        return
    src_roi = src[sy : sy + sh, sx : sx + sw]
    t_dst_local = t_dst - np.float32((dx, dy))
    m = cv2.getAffineTransform(t_src - np.float32((sx, sy)), t_dst_local)
    if not np.isfinite(m).all():
        return
    warped = cv2.warpAffine(src_roi, m, (dw, dh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = np.zeros((dh, dw), dtype=np.uint8)
    # Hard (non-antialiased) masks: adjacent triangles both cover their shared edge, so no seams or gaps.
    cv2.fillConvexPoly(mask, np.round(t_dst_local).astype(np.int32), 1, lineType=cv2.LINE_8)
    np.copyto(dst_roi, warped, where=mask[:, :, None].astype(bool))


def _lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of a float32 image; done at reduced resolution when ``sigma`` is large (speed)."""
    h, w = img.shape[:2]
    f = min(1.0, 4.0 / sigma)
    if f < 1.0:
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma * f)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _transfer_colour(face: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:
    """Give ``face`` the low-frequency colour and lighting of ``target`` (Gaussian-blur ratio transfer).

    ``face`` and ``target`` are same-sized BGR ``uint8`` crops, identical outside the warped face.
    ``result = face * blur(target) / blur(face)``: skin tone and shading gradients come from the target while
    the detail (identity) stays from the swap face. ``sigma`` (px) is tied to the eye distance.
    """
    f = face.astype(np.float32)
    f_blur = _lowpass(f, sigma)
    t_blur = _lowpass(target.astype(np.float32), sigma)
    ratio = np.clip(t_blur / np.maximum(f_blur, 1.0), 0.33, 3.0)
    return np.clip(f * ratio, 0, 255).astype(np.uint8)


def _padded_crop(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Return ``img[y0:y1, x0:x1]`` as a new array; parts outside the image are filled by edge replication."""
    h, w = img.shape[:2]
    crop = img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    top, left, bottom, right = max(0, -y0), max(0, -x0), max(0, y1 - h), max(0, x1 - w)
    if top or left or bottom or right:
        return cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return crop.copy()


def _swap_one(out: np.ndarray, src: np.ndarray, src_face: Face, dst_face: Face) -> None:
    """Replace ``dst_face`` in ``out`` (in place) with ``src_face`` taken from ``src``.

    Landmarks of a face cut by the image border lie outside the image; rather than clamping them (which squashes
    triangles), both crops are padded by edge replication so the geometry stays exact, and only the part inside
    the image is written back.
    """
    h, w = out.shape[:2]

    # Source: a padded crop around the landmarks (the warps only ever read inside it).
    src_lm = src_face.landmarks.astype(np.float32)
    sx, sy, sw, sh = cv2.boundingRect(src_lm)
    src_crop = _padded_crop(src, sx - 2, sy - 2, sx + sw + 2, sy + sh + 2)
    src_pts = src_lm - np.float32((sx - 2, sy - 2))

    # Target: work in a crop around the face, so everything below is O(face area), not O(image area).
    dst_pts = dst_face.landmarks.astype(np.float32)
    hx, hy, hw, hh = cv2.boundingRect(dst_pts)
    margin = max(4, int(0.1 * max(hw, hh)))
    x0, y0, x1, y1 = hx - margin, hy - margin, hx + hw + margin, hy + hh + margin
    target_roi = _padded_crop(out, x0, y0, x1, y1)
    local_dst = dst_pts - np.float32((x0, y0))

    canvas = target_roi.copy()
    for i, j, k in _delaunay(local_dst[_TRIANGULATED]):
        tri = _TRIANGULATED[[i, j, k]]
        t_dst = local_dst[tri]
        t_src = src_pts[tri]
        if _triangle_area(t_dst) < _MIN_TRIANGLE_AREA or _triangle_area(t_src) < _MIN_TRIANGLE_AREA:
            continue
        _warp_triangle(src_crop, canvas, t_src, t_dst)

    # Keep the target's own mouth interior (teeth, tongue): a source mouth stretched into a differently opened
    # target mouth looks smeared. When the target mouth is closed this polygon is degenerate and keeps nothing.
    mouth = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(local_dst[60:68]).astype(np.int32)], 1)
    np.copyto(canvas, target_roi, where=mouth[:, :, None].astype(bool))

    hull = cv2.convexHull(np.round(local_dst).astype(np.int32))
    mask = np.zeros(canvas.shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    k = max(3, int(0.03 * max(hw, hh))) | 1
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask[[0, -1], :] = 0
    mask[:, [0, -1]] = 0
    if cv2.countNonZero(mask) == 0:
        return

    eye_dist = float(np.linalg.norm(dst_pts[36:42].mean(axis=0) - dst_pts[42:48].mean(axis=0)))
    canvas = _transfer_colour(canvas, target_roi, sigma=max(2.0, _COLOUR_SIGMA_FRAC * eye_dist))
    bx, by, bw, bh = cv2.boundingRect(mask)
    center = (bx + bw // 2, by + bh // 2)  # seamlessClone centres the mask's bounding box here
    blended = cv2.seamlessClone(canvas, target_roi, mask, center, cv2.NORMAL_CLONE)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(w, x1), min(h, y1)
    out[cy0:cy1, cx0:cx1] = blended[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def _check_index(index: SupportsIndex, count: int, image: str) -> int:
    i = operator.index(index)
    if not 0 <= i < count:
        raise FaceIndexOutOfRange(image, i, count)
    return i


def swap_faces(
    target: np.ndarray,
    swap: np.ndarray,
    *,
    swap_face_index: int = 0,
    target_face_indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Put a face from ``swap`` onto one or more faces of ``target``.

    Faces in both images are numbered 0..n-1 **left to right** (by box centre x), like PiAPI's labelling.

    Default target selection (decision): with ``target_face_indices=None`` only the **largest** face of the
    target (by detection box area) is replaced, which is the single-face behaviour callers expect from a
    plain "swap" and is unaffected by small background faces. To replace several faces pass their indices,
    e.g. ``range(len(detect_faces(target)))`` for all of them; each gets the same swap face.

    Parameters
    ----------
    target : numpy.ndarray
        ``(H, W, 3)`` BGR ``uint8`` image whose face(s) are replaced.
    swap : numpy.ndarray
        ``(h, w, 3)`` BGR ``uint8`` image that supplies the face.
    swap_face_index : int, default 0
        Left-to-right index of the face in ``swap`` to use.
    target_face_indices : sequence of int or None, default None
        Left-to-right indices of the faces in ``target`` to replace (duplicates are ignored);
        ``None`` means the largest face.

    Returns
    -------
    numpy.ndarray
        New ``(H, W, 3)`` BGR ``uint8`` array, same size as ``target``. Pixels outside the replaced faces'
        neighbourhood (landmark hull plus a 10 % margin) are identical to ``target``.

    Raises
    ------
    InvalidImage
        If an input is not a supported ``uint8`` array.
    NoFaceDetected
        If the target (checked first) or the swap image has no detectable face.
    FaceIndexOutOfRange
        If ``swap_face_index`` or any of ``target_face_indices`` is negative or too large.
    ValueError
        If ``target_face_indices`` is an empty sequence.
    """
    target = as_bgr(target, name="target")
    swap = as_bgr(swap, name="swap")
    target_faces = detect_faces(target)
    if not target_faces:
        raise NoFaceDetected("target")
    swap_faces_found = detect_faces(swap)
    if not swap_faces_found:
        raise NoFaceDetected("swap")
    src_face = swap_faces_found[_check_index(swap_face_index, len(swap_faces_found), "swap")]

    if target_face_indices is None:
        chosen = [max(range(len(target_faces)), key=lambda i: target_faces[i].area)]
    else:
        chosen = list(dict.fromkeys(_check_index(i, len(target_faces), "target") for i in target_face_indices))
        if not chosen:
            raise ValueError("target_face_indices must not be empty (use None for the largest face)")

    out = target.copy()
    for i in chosen:
        _swap_one(out, swap, src_face, target_faces[i])
    return out


def swap_image_bytes(
    target: bytes,
    swap: bytes,
    *,
    swap_face_index: int = 0,
    target_face_indices: Sequence[int] | None = None,
    format: str = "JPEG",  # shadows the builtin on purpose: mirrors Pillow's ``format``
) -> bytes:
    """Byte-level wrapper of :func:`swap_faces`: decode, swap, encode.

    Inputs are decoded with Pillow (any format it reads), rotated upright according to EXIF orientation and
    converted to RGB (alpha dropped). Metadata is not carried over to the output.

    Parameters
    ----------
    target, swap : bytes
        Encoded target image and encoded image supplying the face.
    swap_face_index, target_face_indices
        As in :func:`swap_faces` (left-to-right numbering; ``None`` = largest target face).
    format : {"JPEG", "PNG"}, default "JPEG"
        Output encoding (case-insensitive, "JPG" accepted). JPEG is written at quality 95.

    Returns
    -------
    bytes
        The encoded result, with the (EXIF-upright) target's pixel size.

    Raises
    ------
    InvalidImage
        If either input cannot be decoded (checked before any detection).
    NoFaceDetected, FaceIndexOutOfRange
        As in :func:`swap_faces`.
    ValueError
        If ``format`` is unsupported or ``target_face_indices`` is empty.
    """
    fmt = format.upper()
    if fmt not in ("JPEG", "JPG", "PNG"):
        raise ValueError(f"unsupported output format {format!r}; expected 'JPEG' or 'PNG'")
    target_img = decode_image(target, name="target")
    swap_img = decode_image(swap, name="swap")
    result = swap_faces(target_img, swap_img, swap_face_index=swap_face_index, target_face_indices=target_face_indices)
    return encode_image(result, fmt)


#: Least overlap (intersection over union) of a detected face with a chosen box for it to be that face.
CHOSEN_FACE_MIN_OVERLAP = 0.3


def swap_chosen_faces(target: np.ndarray, pairs: Sequence[tuple[tuple[int, int, int, int], np.ndarray]]) -> np.ndarray:
    """Put each pair's swap face onto the target's face at the pair's box; every other face is left as it was.

    The boxes come from a face matcher (e.g. Amazon Rekognition, whose boxes are not dlib's): each is taken to be
    the detected face it overlaps most, which must overlap it by at least :data:`CHOSEN_FACE_MIN_OVERLAP`.

    Parameters
    ----------
    target : numpy.ndarray
        ``(H, W, 3)`` BGR ``uint8`` image whose chosen faces are replaced.
    pairs : sequence of (box, numpy.ndarray)
        ``(left, top, right, bottom)`` in target pixels, and the ``(h, w, 3)`` BGR ``uint8`` image whose largest
        face goes there.

    Returns
    -------
    numpy.ndarray
        New ``(H, W, 3)`` BGR ``uint8`` array; pixels outside the replaced faces' neighbourhood are ``target``'s.

    Raises
    ------
    InvalidImage
        If an input is not a supported ``uint8`` array.
    NoFaceDetected
        If the target or a swap image has no detectable face.
    ChosenFaceNotFound
        If no detected face lies on a box.
    ValueError
        If ``pairs`` is empty.
    """
    if not pairs:
        raise ValueError("pairs must not be empty")
    target = as_bgr(target, name="target")
    target_faces = detect_faces(target)
    if not target_faces:
        raise NoFaceDetected("target")
    out = target.copy()
    for box, swap_image in pairs:
        swap = as_bgr(swap_image, name="swap")
        found = detect_faces(swap)
        if not found:
            raise NoFaceDetected("swap")
        overlaps = [_overlap(face.box, box) for face in target_faces]
        best = max(range(len(target_faces)), key=lambda i: overlaps[i])
        if overlaps[best] < CHOSEN_FACE_MIN_OVERLAP:
            raise ChosenFaceNotFound(box)
        _swap_one(out, swap, max(found, key=lambda f: f.area), target_faces[best])
    return out


def swap_chosen_faces_bytes(
    target: bytes, pairs: Sequence[tuple[tuple[int, int, int, int], bytes]], *, format: str = "JPEG"
) -> bytes:
    """Byte-level wrapper of :func:`swap_chosen_faces` (decoding and output as :func:`swap_image_bytes`)."""
    fmt = format.upper()
    if fmt not in ("JPEG", "JPG", "PNG"):
        raise ValueError(f"unsupported output format {format!r}; expected 'JPEG' or 'PNG'")
    target_img = decode_image(target, name="target")
    decoded = [(box, decode_image(swap, name="swap")) for box, swap in pairs]
    return encode_image(swap_chosen_faces(target_img, decoded), fmt)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes (0..1)."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
