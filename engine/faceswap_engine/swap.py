"""Classical landmark-based face swap: Delaunay triangles, per-triangle affine warp, colour transfer, Poisson blend."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import SupportsIndex

import cv2
import numpy as np

from .detect import Face, as_bgr, detect_faces
from .errors import ChosenFaceNotFound, FaceIndexOutOfRange, NoFaceDetected, PoseMismatch
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


def _padded_crop(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Return ``img[y0:y1, x0:x1]`` as a new array; parts outside the image are filled by edge replication."""
    h, w = img.shape[:2]
    crop = img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    top, left, bottom, right = max(0, -y0), max(0, -x0), max(0, y1 - h), max(0, x1 - w)
    if top or left or bottom or right:
        return cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return crop.copy()


#: How far each landmark of the target moves toward the aligned swap face's (0: keep the target's shape, 1: take the
#: swap face's): the jaw and the nose carry most of a face's shape; the eyes stay put, so the target's own eyes (kept,
#: see :func:`_swap_one`) and its gaze fit; the mouth moves a little, so an open mouth is not pulled onto a closed one.
_SHAPE_WEIGHTS = np.r_[
    np.full(17, 0.7),  # jaw 0-16
    np.full(10, 0.5),  # brows 17-26
    np.full(9, 0.5),  # nose 27-35
    np.full(12, 0.0),  # eyes 36-47
    np.full(20, 0.3),  # mouth 48-67
].astype(np.float32)[:, None]

#: Largest landmark move, as a fraction of the face's size: beyond it the surrounding warp would show.
_MAX_SHAPE_MOVE = 0.08

#: Landmarks the swap face is aligned to the target by (eye corners, nose bridge and tip): they move least between
#: expressions.
_STABLE = np.array([36, 39, 42, 45, 27, 28, 29, 30])

#: Robust z-score (Lab, against the face's own skin) above which a pixel inside the face is not skin: an occluder
#: (a microphone, a hand, hair), glare, or a shadow too deep to match.
_OCCLUDER_Z = 4.0

#: Least robust spread (Lab units, lightness and the two colour channels) a face's skin is taken to have: a very even
#: skin would otherwise make every nostril, crease and flushed cheek an "occluder" and riddle the blend with holes.
_MIN_SPREAD = np.float32((4.0, 4.0, 4.0))

#: Faces are analysed (skin statistics, occluder masks, shading) on a copy of their crop this many pixels across at
#: most: the results are smooth or coarse, and at full resolution a large face took over half a second more.
_ANALYSIS_SIDE = 320

#: Holes of the blend mask (occluder pixels inside it) smaller than this share of the face's area are filled: a speck
#: of colour is not an occluder, and each hole's edge is a seam the Poisson blend cannot hide.
_MIN_HOLE = 0.005

#: Most difference in head turn (degrees) between the two faces, and most turn of either, for a classical swap.
MAX_YAW_DIFFERENCE = 35.0
MAX_YAW = 50.0


def _yaw(landmarks: np.ndarray) -> float:
    """Rough head turn in degrees from 68 landmarks: the nose tip's place between the jaw's ends (0: frontal)."""
    left = float(np.linalg.norm(landmarks[30] - landmarks[0]))
    right = float(np.linalg.norm(landmarks[16] - landmarks[30]))
    return float(np.degrees(np.arcsin(np.clip((right - left) / max(right + left, 1e-6), -1.0, 1.0))))


def _moved_landmarks(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``dst`` moved toward the swap face's shape: ``src`` aligned onto ``dst`` by a similarity transform of the stable
    landmarks, then each point moved by its :data:`_SHAPE_WEIGHTS` share of the difference, at most
    :data:`_MAX_SHAPE_MOVE` of the face's size."""
    m, _ = cv2.estimateAffinePartial2D(src[_STABLE], dst[_STABLE])
    if m is None or not np.isfinite(m).all():
        return dst.copy()
    aligned = src @ m[:, :2].T + m[:, 2]
    move = _SHAPE_WEIGHTS * (aligned - dst)
    size = float(max(np.ptp(dst[:, 0]), np.ptp(dst[:, 1])))
    length = np.linalg.norm(move, axis=1, keepdims=True)
    move *= np.minimum(1.0, _MAX_SHAPE_MOVE * size / np.maximum(length, 1e-6))
    return (dst + move).astype(np.float32)


def _border_points(width: int, height: int, per_side: int = 6) -> np.ndarray:
    """Fixed points along a crop's edge, so the shape warp leaves the crop's border (and all outside it) in place."""
    xs = np.linspace(0, width - 1, per_side)
    ys = np.linspace(0, height - 1, per_side)
    top = np.stack([xs, np.zeros_like(xs)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, height - 1)], axis=1)
    left = np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], axis=1)
    right = np.stack([np.full_like(ys[1:-1], width - 1), ys[1:-1]], axis=1)
    return np.concatenate([top, bottom, left, right]).astype(np.float32)


def _reshaped(roi: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``roi`` warped so that its points ``before`` go to ``after`` (piecewise affine over a triangulation that
    includes fixed points on the crop's border: the warp is continuous and leaves the border in place)."""
    h, w = roi.shape[:2]
    border = _border_points(w, h)
    src_pts = np.concatenate([before[_TRIANGULATED], border])
    dst_pts = np.concatenate([after[_TRIANGULATED], border])
    out = roi.copy()
    for i, j, k in _delaunay(dst_pts):
        t_dst, t_src = dst_pts[[i, j, k]], src_pts[[i, j, k]]
        if _triangle_area(t_dst) < _MIN_TRIANGLE_AREA or _triangle_area(t_src) < _MIN_TRIANGLE_AREA:
            continue
        _warp_triangle(roi, out, t_src, t_dst)
    return out


def _feature_mask(shape: tuple[int, ...], lm: np.ndarray) -> np.ndarray:
    """Eyes, brows and mouth (dilated), where a face's colour is not its skin's."""
    mask = np.zeros(shape[:2], np.uint8)
    eye_dist = float(np.linalg.norm(lm[36:42].mean(axis=0) - lm[42:48].mean(axis=0)))
    for polygon in (lm[36:42], lm[42:48], lm[48:60]):
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    thickness = max(2, int(0.12 * eye_dist))
    for brow in (lm[17:22], lm[22:27]):
        cv2.polylines(mask, [np.round(brow).astype(np.int32)], False, 1, thickness)
    k = max(3, int(0.12 * eye_dist)) | 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)


def _robust_stats(lab: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and scaled MAD (a robust standard deviation) of Lab pixels ``where`` is true; ``(3,)`` each (with fewer
    than 16 such pixels: the mean of all, and a spread of 10)."""
    pixels = lab[where]
    if len(pixels) < 16:
        return lab.reshape(-1, 3).mean(axis=0), np.full(3, 10.0, np.float32)
    pixels = pixels[:: max(1, len(pixels) // 20000)]  # a regular sample is as good a median, and much cheaper
    median = np.median(pixels, axis=0)
    return median, np.median(np.abs(pixels - median), axis=0) * 1.4826


def _not_skin(lab: np.ndarray, skin: np.ndarray, region: np.ndarray, size: float) -> np.ndarray:
    """Pixels of ``region`` whose colour is far from the skin's (robust z over Lab, lightness weighed less, since
    shading varies), cleaned of specks and grown a little: what covers the face."""
    median, spread = _robust_stats(lab, skin)
    z = (lab - median) / np.maximum(spread, _MIN_SPREAD)
    z[:, :, 0] *= 0.5
    far = (np.sqrt((z * z).sum(axis=2)) > _OCCLUDER_Z) & region
    k = max(3, int(0.04 * size)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    far = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.dilate(far, kernel).astype(bool)


@dataclass
class FaceMemory:
    """What the swap of one face carries from frame to frame of a video, so its colour does not flicker.

    The colour match's statistics (skin medians, colour gain, the shading map) and the masks of what covers either
    face are averaged with the previous frames' (an exponential moving average, the newest weighing :attr:`weight`;
    a mask pixel counts as covered while its average is over a half), so one frame's sensor noise neither shifts the
    colour nor flips pixels between the swap and the target. :meth:`reset` starts again (a cut, or the face lost).
    Maps follow the face: they are kept in the face crop's coordinates and resized to the next crop. ``weight=1`` is
    a still image's swap, frame by frame.
    """

    weight: float = 0.3
    _values: dict[str, np.ndarray] = field(default_factory=dict)

    def smooth(self, name: str, value: np.ndarray) -> np.ndarray:
        """``value`` (a statistic named ``name``: a vector, or a 2-D map) averaged with the earlier frames'."""
        last = self._values.get(name)
        if last is not None and last.shape != value.shape:
            last = cv2.resize(last, (value.shape[1], value.shape[0]), interpolation=cv2.INTER_LINEAR)
        smoothed = value if last is None else (self.weight * value + (1 - self.weight) * last).astype(value.dtype)
        self._values[name] = smoothed
        return smoothed

    def reset(self) -> None:
        """Forget the earlier frames."""
        self._values.clear()


def _match_colour(
    face_lab: np.ndarray,
    small_face_lab: np.ndarray,
    small_target_lab: np.ndarray,
    face_skin: np.ndarray,
    target_skin: np.ndarray,
    sigma: float,
    memory: FaceMemory | None = None,
) -> np.ndarray:
    """``face_lab`` (the warped swap face in CIE Lab, float; corrected in place) with the target's skin colour and
    lighting, as BGR; only its face region is used afterwards (the blend takes the target's pixels elsewhere).

    The statistics are taken on the small copies (``small_*``, with the small ``face_skin``/``target_skin``: skin only,
    eyes, brows, mouth and occluders left out). Lightness: the skin's median matched, the swap face's own contrast kept
    (its texture carries its identity: matching the spread too took 0.02-0.03 of identity margin on the benchmark),
    then the target's low-frequency shading added, measured over skin only (normalised convolution), so nothing that
    is not skin bleeds into the correction. Colour (a, b): the median matched and the spread scaled to the target
    skin's, so a face put into a black-and-white photo loses its colour too. In a video, ``memory`` averages these
    over frames (:class:`FaceMemory`).
    """
    mu_f, sd_f = _robust_stats(small_face_lab, face_skin)
    mu_t, sd_t = _robust_stats(small_target_lab, target_skin)
    gain = np.ones(3, np.float32)
    gain[1:] = np.clip(sd_t[1:] / np.maximum(sd_f[1:], 1.0), 0.0, 1.5)
    if memory is not None:
        mu_f, mu_t, gain = memory.smooth("mu_f", mu_f), memory.smooth("mu_t", mu_t), memory.smooth("gain", gain)
    small_matched_l = small_face_lab[:, :, 0] - mu_f[0] + mu_t[0]

    def skin_lowpass(lightness: np.ndarray, skin: np.ndarray) -> np.ndarray:
        weight = _lowpass(skin.astype(np.float32), sigma)
        return _lowpass(lightness * skin, sigma) / np.maximum(weight, 1e-3)

    shading = np.clip(
        skin_lowpass(small_target_lab[:, :, 0], target_skin) - skin_lowpass(small_matched_l, face_skin), -25.0, 25.0
    )
    if memory is not None:
        shading = memory.smooth("shading", shading)
    h, w = face_lab.shape[:2]
    matched = face_lab  # corrected in place (the caller's copy is not used again)
    matched[:, :, 0] += cv2.resize(shading, (w, h), interpolation=cv2.INTER_LINEAR) + (mu_t[0] - mu_f[0])
    matched[:, :, 1:] -= mu_f[1:]
    matched[:, :, 1:] *= gain[1:]
    matched[:, :, 1:] += mu_t[1:]
    np.clip(matched, 0, 255, out=matched)
    return cv2.cvtColor(np.rint(matched).astype(np.uint8), cv2.COLOR_LAB2BGR)


def _without_specks(mask: np.ndarray, min_area: float) -> np.ndarray:
    """``mask`` without its connected parts smaller than ``min_area`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def _mouth_opening(lm: np.ndarray) -> float:
    """How open a mouth is: the inner lips' area over the squared mouth width (0: closed)."""
    width = float(np.linalg.norm(lm[54] - lm[48]))
    return float(cv2.contourArea(np.round(lm[60:68]).astype(np.float32))) / max(width * width, 1.0)


def _closed(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """``crop`` with the mouth's inside (teeth, tongue) painted over from the lips around it: an open mouth to be
    warped onto a closed one, whose thin lip band would otherwise streak the teeth. Inpainted on a copy of the mouth
    scaled to 64 pixels wide (inpainting's cost grows with the area times the radius squared), then scaled back."""
    width = float(np.linalg.norm(lm[54] - lm[48]))
    x, y, w, h = cv2.boundingRect(np.round(lm[48:68]).astype(np.int32))
    pad = max(4, int(0.25 * width))
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(crop.shape[1], x + w + pad), min(crop.shape[0], y + h + pad)
    if x1 <= x0 or y1 <= y0:
        return crop
    box = crop[y0:y1, x0:x1]
    inside = np.zeros(box.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(lm[60:68] - np.float32((x0, y0))).astype(np.int32)], 255)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8))
    scale = min(1.0, 64.0 / max(width, 1.0))
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    painted = cv2.inpaint(
        cv2.resize(box, size, interpolation=cv2.INTER_AREA),
        cv2.resize(inside, size, interpolation=cv2.INTER_NEAREST),
        4,
        cv2.INPAINT_TELEA,
    )
    painted = cv2.resize(painted, (box.shape[1], box.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = crop.copy()
    np.copyto(out[y0:y1, x0:x1], painted, where=(inside > 0)[:, :, None])
    return out


#: Mouth openings (see :func:`_mouth_opening`) above which a mouth is open, and below which it is closed.
_OPEN_MOUTH, _CLOSED_MOUTH = 0.06, 0.02


def _check_pose(src_face: Face, dst_face: Face) -> None:
    """Raise :class:`PoseMismatch` when the faces' head turns differ by over :data:`MAX_YAW_DIFFERENCE` degrees or
    either is turned over :data:`MAX_YAW` (a profile): a classical swap cannot turn a face."""
    swap_yaw, target_yaw = _yaw(src_face.landmarks.astype(np.float32)), _yaw(dst_face.landmarks.astype(np.float32))
    if abs(swap_yaw - target_yaw) > MAX_YAW_DIFFERENCE or max(abs(swap_yaw), abs(target_yaw)) > MAX_YAW:
        raise PoseMismatch(swap_yaw, target_yaw)


def _swap_one(
    out: np.ndarray, src: np.ndarray, src_face: Face, dst_face: Face, memory: FaceMemory | None = None
) -> None:
    """Replace ``dst_face`` in ``out`` (in place) with ``src_face`` taken from ``src`` (``memory``: what the swap of
    this face carries over from earlier frames of a video, :class:`FaceMemory`).

    Steps, in a crop around the target face: the target's landmarks move toward the swap face's shape and the crop
    is warped smoothly to follow (:func:`_reshaped`); the swap face is warped triangle by triangle onto the moved
    landmarks; what covers either face (colours far from its skin) is left out of the blend, so an occluder of the
    swap face is not carried over and one of the target stays in front; the colour is matched over skin in Lab; the
    target's own mouth interior is kept; a Poisson blend hides the seam.

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
    if _mouth_opening(src_pts) > _OPEN_MOUTH and _mouth_opening(dst_face.landmarks.astype(np.float32)) < _CLOSED_MOUTH:
        src_crop = _closed(src_crop, src_pts)  # an open mouth onto a closed one: closed lips, not streaked teeth

    # Target: work in a crop around the face, so everything below is O(face area), not O(image area).
    dst_pts = dst_face.landmarks.astype(np.float32)
    hx, hy, hw, hh = cv2.boundingRect(dst_pts)
    size = float(max(hw, hh))
    margin = max(4, int(0.2 * size))
    x0, y0, x1, y1 = hx - margin, hy - margin, hx + hw + margin, hy + hh + margin
    original_roi = _padded_crop(out, x0, y0, x1, y1)
    before = dst_pts - np.float32((x0, y0))
    local_dst = _moved_landmarks(before, src_pts)
    target_roi = _reshaped(original_roi, before, local_dst)

    canvas = target_roi.copy()
    for i, j, k in _delaunay(local_dst[_TRIANGULATED]):
        tri = _TRIANGULATED[[i, j, k]]
        t_dst = local_dst[tri]
        t_src = src_pts[tri]
        if _triangle_area(t_dst) < _MIN_TRIANGLE_AREA or _triangle_area(t_src) < _MIN_TRIANGLE_AREA:
            continue
        _warp_triangle(src_crop, canvas, t_src, t_dst)

    hull = cv2.convexHull(np.round(local_dst).astype(np.int32))
    region = np.zeros(canvas.shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(region, hull, 1)
    face_region = region.astype(bool)
    features = _feature_mask(canvas.shape, local_dst)
    skin = face_region & ~features
    canvas_lab = cv2.cvtColor(canvas, cv2.COLOR_BGR2LAB).astype(np.float32)

    # Analysis on a small copy of the crop (statistics and masks are smooth or coarse); masks come back full size.
    crop_h, crop_w = canvas.shape[:2]
    scale = min(1.0, _ANALYSIS_SIDE / max(crop_h, crop_w))
    small_size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))

    def small(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) if scale < 1.0 else image

    def small_mask(mask: np.ndarray) -> np.ndarray:
        return small(mask.astype(np.uint8) * 255) > 127

    def full_mask(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), (crop_w, crop_h), interpolation=cv2.INTER_NEAREST).astype(bool)

    small_canvas_lab = cv2.cvtColor(small(canvas), cv2.COLOR_BGR2LAB).astype(np.float32)
    small_target_lab = cv2.cvtColor(small(target_roi), cv2.COLOR_BGR2LAB).astype(np.float32)
    small_skin = small_mask(skin)
    covered_swap_small = _not_skin(small_canvas_lab, small_skin, small_skin, size * scale)
    covered_target_small = _not_skin(small_target_lab, small_skin, small_skin, size * scale)
    if memory is not None:  # a video: what covers a face changes over frames, not with each frame's noise
        covered_swap_small = memory.smooth("covered_swap", covered_swap_small.astype(np.float32)) > 0.5
        covered_target_small = memory.smooth("covered_target", covered_target_small.astype(np.float32)) > 0.5
    covered_swap, covered_target = full_mask(covered_swap_small), full_mask(covered_target_small)

    eye_dist = float(np.linalg.norm(local_dst[36:42].mean(axis=0) - local_dst[42:48].mean(axis=0)))
    canvas = _match_colour(
        canvas_lab,
        small_canvas_lab,
        small_target_lab,
        small_skin & ~covered_swap_small,
        small_skin & ~covered_target_small,
        sigma=max(2.0, _COLOUR_SIGMA_FRAC * eye_dist * scale),
        memory=memory,
    )

    # Keep the target's own mouth interior (teeth, tongue): a source mouth stretched into a differently opened
    # target mouth looks smeared. When the target mouth is closed this polygon is degenerate and keeps nothing.
    mouth = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(local_dst[60:68]).astype(np.int32)], 1)
    np.copyto(canvas, target_roi, where=mouth[:, :, None].astype(bool))
    # Keep the target's own eyes (iris and whites inside the lids): the gaze stays the target's, the lids around them
    # are the swap face's.
    eyes = np.zeros(canvas.shape[:2], np.uint8)
    for eye in (local_dst[36:42], local_dst[42:48]):
        cv2.fillPoly(eyes, [np.round(eye).astype(np.int32)], 1)
    eyes = cv2.erode(eyes, np.ones((3, 3), np.uint8))
    soft = cv2.GaussianBlur(eyes.astype(np.float32), (0, 0), max(1.0, 0.03 * eye_dist))[:, :, None]
    canvas = np.rint(canvas * (1 - soft) + target_roi * soft).astype(np.uint8)

    mask = region * 255
    k = max(3, int(0.03 * size)) | 1
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    mask[_without_specks(covered_swap | covered_target, _MIN_HOLE * size * size)] = 0  # covers: the target's pixels
    mask[[0, -1], :] = 0
    mask[:, [0, -1]] = 0
    if cv2.countNonZero(mask) == 0:
        return
    # Poisson blending clones the gradients of the whole bounding box of the mask; the occluded holes take the
    # target's pixels there and the blend's boundary goes round them.
    np.copyto(canvas, target_roi, where=(mask == 0)[:, :, None])
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
    PoseMismatch
        If the faces are turned too differently, or one too far, for a classical swap (nothing is swapped).
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

    for i in chosen:
        _check_pose(src_face, target_faces[i])
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
        source_face = max(found, key=lambda f: f.area)
        _check_pose(source_face, target_faces[best])
        _swap_one(out, swap, source_face, target_faces[best])
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
