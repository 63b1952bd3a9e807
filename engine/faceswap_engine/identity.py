"""Identity embeddings (dlib ResNet, 128-d) used to check that a swap transferred the identity."""

from __future__ import annotations

import dlib
import numpy as np

from .detect import as_bgr, detect_faces
from .errors import FaceIndexOutOfRange, NoFaceDetected
from .models import get_recognizer, recognizer_lock

__all__ = ["SAME_PERSON_THRESHOLD", "face_descriptor", "face_distance"]

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
    face = faces[face_index]
    shape = dlib.full_object_detection(
        dlib.rectangle(*face.box), [dlib.point(int(x), int(y)) for x, y in face.landmarks]
    )
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
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
