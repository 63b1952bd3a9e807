"""Self-hosted classical face-swap engine (dlib landmarks + OpenCV warping and Poisson blending).

Public API::

    detect_faces(image) -> list[Face]
    swap_faces(target, swap, *, swap_face_index=0, target_face_indices=None) -> np.ndarray
    swap_image_bytes(target, swap, *, swap_face_index=0, target_face_indices=None, format="JPEG") -> bytes
    face_descriptor(image, face_index=0) -> np.ndarray
    faces_with_descriptors(image) -> list[tuple[Face, np.ndarray]]
    face_distance(a, b) -> float

Arrays are ``(H, W, 3)`` BGR ``uint8`` (OpenCV convention). Faces are numbered left to right.
"""

from __future__ import annotations

from .detect import Face, detect_faces
from .errors import FaceIndexOutOfRange, FaceSwapError, InvalidImage, NoFaceDetected, PoseMismatch
from .identity import SAME_PERSON_THRESHOLD, face_descriptor, face_distance, faces_with_descriptors
from .imageio import decode_image, encode_image
from .swap import swap_faces, swap_image_bytes

__all__ = [
    "SAME_PERSON_THRESHOLD",
    "Face",
    "FaceIndexOutOfRange",
    "FaceSwapError",
    "InvalidImage",
    "NoFaceDetected",
    "PoseMismatch",
    "decode_image",
    "detect_faces",
    "encode_image",
    "face_descriptor",
    "face_distance",
    "faces_with_descriptors",
    "swap_faces",
    "swap_image_bytes",
]
