"""Face detection and 68-point landmarks (dlib HOG detector + iBUG 68-point shape predictor)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import dlib
import numpy as np

from .errors import InvalidImage
from .models import get_models

__all__ = ["DETECT_MAX_SIDE", "Face", "as_bgr", "detect_faces"]

#: Faces are detected on a copy downscaled so its longest side is at most this many pixels (detection cost
#: grows with the pixel count; landmarks are then predicted on the full-resolution image).
DETECT_MAX_SIDE = 800


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in full-resolution pixel coordinates of the image it was found in.

    Attributes
    ----------
    box : tuple of int
        ``(left, top, right, bottom)`` in pixels; may extend slightly beyond the image border.
    landmarks : numpy.ndarray
        Shape ``(68, 2)``, dtype ``int32``: ``(x, y)`` pixel coordinates of the iBUG 300-W 68-point
        landmarks (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray

    @property
    def center_x(self) -> float:
        """Horizontal centre of the box in pixels (the left-to-right sort key)."""
        return (self.box[0] + self.box[2]) / 2.0

    @property
    def area(self) -> int:
        """Box area in square pixels."""
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


def as_bgr(image: np.ndarray, *, name: str = "input") -> np.ndarray:
    """Validate an image array and return it as contiguous ``(H, W, 3)`` BGR ``uint8``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` BGR, ``(H, W, 4)`` BGRA (alpha dropped) or ``(H, W)`` grayscale, dtype ``uint8``.
    name : str
        Which input this is (``"target"`` / ``"swap"``), used in error messages.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` ``uint8`` BGR; the input itself when it already qualifies.

    Raises
    ------
    InvalidImage
        If ``image`` is not a ``uint8`` array of a supported shape, or is smaller than 8x8 pixels.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidImage(f"the {name} image must be a uint8 numpy array", image=name)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImage(f"the {name} image has unsupported shape {image.shape}", image=name)
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InvalidImage(f"the {name} image is too small ({image.shape[1]}x{image.shape[0]})", image=name)
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray) -> list[Face]:
    """Detect faces and their 68 landmarks, sorted left to right.

    Detection runs on a grayscale copy downscaled so its longest side is at most :data:`DETECT_MAX_SIDE`
    (800 px) without upsampling; if that finds nothing, it is retried once with one 2x upsampling step
    (finds faces down to ~40 px in the downscaled copy). Boxes are scaled back and the landmarks are
    predicted on the full-resolution grayscale image.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` BGR ``uint8`` (also accepted: ``(H, W)`` grayscale, ``(H, W, 4)`` BGRA).

    Returns
    -------
    list of Face
        Possibly empty; sorted by box centre x, so index 0 is the left-most face. This is the face
        numbering used by ``swap_face_index`` / ``target_face_indices`` everywhere in the engine.

    Raises
    ------
    InvalidImage
        If ``image`` is not a supported array.
    """
    bgr = as_bgr(image)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = gray
    if scale < 1.0:
        small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

    models = get_models()
    with models.detector_lock:
        rects = models.detector(small, 0)
        if len(rects) == 0:
            rects = models.detector(small, 1)

    faces: list[Face] = []
    for r in rects:
        box = (
            round(r.left() / scale),
            round(r.top() / scale),
            round(r.right() / scale),
            round(r.bottom() / scale),
        )
        with models.predictor_lock:
            shape = models.predictor(gray, dlib.rectangle(*box))
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.int32)
        faces.append(Face(box=box, landmarks=pts))
    faces.sort(key=lambda f: f.center_x)
    return faces
