"""Identity embeddings (dlib ResNet, 128-d) used to check that a swap transferred the identity."""

from __future__ import annotations

import dlib
import numpy as np

from .detect import Face, as_bgr, detect_faces
from .errors import FaceIndexOutOfRange, NoFaceDetected
from .models import get_recognizer, recognizer_lock

__all__ = ["SAME_PERSON_THRESHOLD", "face_descriptor", "face_distance", "faces_with_descriptors"]

#: dlib's recommended decision threshold: descriptors closer than this are usually the same person.
SAME_PERSON_THRESHOLD = 0.6


def face_descriptor(image: np.ndarray, face_index: int = 0, *, name: str = "input") -> np.ndarray:
    """Compute the 128-d dlib ResNet face descriptor of one face.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` BGR ``uint8``.
    face_index : int, default 0
        Left-to-right index of the face (as returned by :func:`detect_faces`).
    name : str, default "input"
        Name of the image used in error messages.

    Returns
    -------
    numpy.ndarray
        Shape ``(128,)``, ``float64``, roughly unit norm. Compare with :func:`face_distance`.

    Raises
    ------
    InvalidImage
        If ``image`` is not a supported array.
    NoFaceDetected
        If the image has no face.
    FaceIndexOutOfRange
        If ``face_index`` is negative or not less than the number of faces.
    """
    bgr = as_bgr(image, name=name)
    faces = detect_faces(bgr)
    if not faces:
        raise NoFaceDetected(name)
    if not 0 <= face_index < len(faces):
        raise FaceIndexOutOfRange(name, face_index, len(faces))
    return _descriptor(_rgb(bgr), faces[face_index])


def faces_with_descriptors(image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
    """Detect every face and compute the 128-d dlib ResNet descriptor of each, in one detection pass.

    The descriptors are computed from the landmarks already detected (the same code path as
    :func:`face_descriptor`, so ``faces_with_descriptors(img)[i][1]`` equals ``face_descriptor(img, i)``).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` BGR ``uint8`` (also accepted: ``(H, W)`` grayscale, ``(H, W, 4)`` BGRA).

    Returns
    -------
    list of tuple of (Face, numpy.ndarray)
        One ``(face, descriptor)`` per detected face, left to right (the numbering of :func:`detect_faces`);
        each descriptor has shape ``(128,)``, ``float64``. Empty when the image has no face. Costs one
        detection plus ~one ResNet forward pass per face.

    Raises
    ------
    InvalidImage
        If ``image`` is not a supported array.
    """
    bgr = as_bgr(image)
    faces = detect_faces(bgr)
    if not faces:
        return []
    rgb = _rgb(bgr)
    return [(face, _descriptor(rgb, face)) for face in faces]


def _rgb(bgr: np.ndarray) -> np.ndarray:
    """The contiguous RGB copy of a BGR image that dlib's recognizer reads."""
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _descriptor(rgb: np.ndarray, face: Face) -> np.ndarray:
    """The ``(128,)`` ``float64`` descriptor of ``face`` (found in the image ``rgb``), from its 68 landmarks."""
    shape = dlib.full_object_detection(
        dlib.rectangle(*face.box), [dlib.point(int(x), int(y)) for x, y in face.landmarks]
    )
    recognizer = get_recognizer()
    with recognizer_lock:
        desc = recognizer.compute_face_descriptor(rgb, shape, 0)
    return np.asarray(desc, dtype=np.float64)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two face descriptors.

    Parameters
    ----------
    a, b : numpy.ndarray
        Shape ``(128,)`` descriptors from :func:`face_descriptor`.

    Returns
    -------
    float
        Distance (unitless); below :data:`SAME_PERSON_THRESHOLD` (0.6) usually means the same person.
    """
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
