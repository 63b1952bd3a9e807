"""Exception hierarchy of the face-swap engine.

Every exception carries a stable, machine-readable ``code`` attribute that callers (e.g. an HTTP handler)
can map to a status code or return to clients verbatim. Messages are human-readable and may change; codes
may not.
"""

from __future__ import annotations

__all__ = ["FaceIndexOutOfRange", "FaceSwapError", "InvalidImage", "NoFaceDetected"]


class FaceSwapError(Exception):
    """Base class of every error raised deliberately by :mod:`faceswap_engine`.

    Attributes
    ----------
    code : str
        Stable machine-readable error code.
    """

    code: str = "faceswap_error"


class InvalidImage(FaceSwapError, ValueError):
    """Raised when an image cannot be decoded or does not have a usable shape / dtype.

    Parameters
    ----------
    message : str
        Human-readable explanation.
    image : str or None
        Which input was invalid: ``"target"``, ``"swap"`` or ``None`` when unknown.
    """

    code = "invalid_image"

    def __init__(self, message: str, *, image: str | None = None) -> None:
        super().__init__(message)
        self.image = image


class NoFaceDetected(FaceSwapError):
    """Raised when an image contains no detectable face.

    Parameters
    ----------
    image : str
        Which input had no face: ``"target"`` or ``"swap"``. The message reads
        ``"no face detected in the <image> image"``.
    """

    code = "no_face_detected"

    def __init__(self, image: str) -> None:
        super().__init__(f"no face detected in the {image} image")
        self.image = image


class FaceIndexOutOfRange(FaceSwapError, IndexError):
    """Raised when a requested face index does not exist in an image.

    Parameters
    ----------
    image : str
        ``"target"`` or ``"swap"``.
    index : int
        The requested (0-based, left-to-right) face index.
    count : int
        Number of faces actually detected in that image.
    """

    code = "face_index_out_of_range"

    def __init__(self, image: str, index: int, count: int) -> None:
        super().__init__(
            f"face index {index} is out of range for the {image} image, which has {count} face(s) "
            f"(valid indices: 0..{count - 1}, numbered left to right)"
        )
        self.image = image
        self.index = index
        self.count = count


class ChosenFaceNotFound(FaceSwapError):
    """Raised when no detected face of the target lies on a box the caller chose (see
    :func:`faceswap_engine.swap.swap_chosen_faces`).

    Parameters
    ----------
    box : tuple of int
        The chosen ``(left, top, right, bottom)`` box in target pixels.
    """

    code = "chosen_face_not_found"

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        super().__init__(f"no face of the target image lies on the chosen box {list(box)}")
        self.box = box


class PoseMismatch(FaceSwapError):
    """Raised when the two faces are turned too differently (or one too far) for a classical swap, which would
    mangle the face: a profile onto a frontal face, say.

    Parameters
    ----------
    swap_yaw, target_yaw : float
        Each face's estimated head turn in degrees (0: frontal).
    """

    code = "pose_mismatch"

    def __init__(self, swap_yaw: float, target_yaw: float) -> None:
        super().__init__(
            f"the faces are turned too differently for a classical swap (swap face {swap_yaw:+.0f} degrees, target "
            f"face {target_yaw:+.0f} degrees); use photos facing the camera"
        )
        self.swap_yaw = swap_yaw
        self.target_yaw = target_yaw
