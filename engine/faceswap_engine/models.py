"""Lazy, thread-safe loading of the dlib models.

Models are loaded on first use and cached for the life of the process (one load per warm serverless
container). Nothing is ever downloaded: the frontal face detector is compiled into dlib, and the 68-point
shape predictor and the ResNet face-recognition network are data files shipped inside the
``face_recognition_models`` wheel/sdist.

``face_recognition_models/__init__.py`` imports ``pkg_resources``, which setuptools >= 82 no longer ships.
We therefore locate the package directory with :func:`importlib.util.find_spec` (which does not execute the
package's ``__init__``), so setuptools is *not* needed at run time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlib

__all__ = ["Models", "get_models", "get_recognizer", "model_paths", "recognizer_lock"]

_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def _models_dir() -> Path:
    override = os.environ.get("FACESWAP_MODELS_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face_recognition_models package is not installed (pip install face-recognition-models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_paths() -> dict[str, Path]:
    """Return the paths of the model files used by the engine.

    Returns
    -------
    dict of str to pathlib.Path
        ``{"shape_predictor_68": ..., "face_recognition_resnet": ...}``. The directory can be overridden with
        the ``FACESWAP_MODELS_DIR`` environment variable (e.g. when the models live in a Lambda layer).
    """
    d = _models_dir()
    return {"shape_predictor_68": d / _PREDICTOR_FILE, "face_recognition_resnet": d / _RECOGNITION_FILE}


@dataclass(eq=False)
class Models:
    """The loaded dlib models plus one lock per model.

    dlib's ``object_detector`` is documented as not safe for concurrent use, so calls go through
    ``detector_lock``; the predictor lock is cheap insurance around the pybind11 object (~1 ms per call).
    """

    detector: Any
    predictor: Any
    detector_lock: threading.Lock = field(default_factory=threading.Lock)
    predictor_lock: threading.Lock = field(default_factory=threading.Lock)


_load_lock = threading.Lock()
_models: Models | None = None
_recognizer: Any = None
#: dlib's DNN keeps per-instance scratch buffers, so concurrent forward passes must be serialised.
recognizer_lock = threading.Lock()


def get_models() -> Models:
    """Return the process-wide detector and shape predictor, loading them on first call.

    Returns
    -------
    Models
        Cached models; loading takes ~0.5 s once (the 68-point predictor is a 95 MB file).

    Raises
    ------
    RuntimeError
        If a model file is missing.
    """
    global _models
    if _models is None:
        with _load_lock:
            if _models is None:
                path = model_paths()["shape_predictor_68"]
                if not path.is_file():
                    raise RuntimeError(f"shape predictor model not found at {path}")
                _models = Models(detector=dlib.get_frontal_face_detector(), predictor=dlib.shape_predictor(str(path)))
    return _models


def get_recognizer() -> Any:
    """Return the cached ``dlib.face_recognition_model_v1`` (ResNet, 128-d embeddings), loading it lazily.

    Kept separate from :func:`get_models` because swapping never needs it; only identity checks do.

    Raises
    ------
    RuntimeError
        If the model file is missing.
    """
    global _recognizer
    if _recognizer is None:
        with _load_lock:
            if _recognizer is None:
                path = model_paths()["face_recognition_resnet"]
                if not path.is_file():
                    raise RuntimeError(f"face recognition model not found at {path}")
                _recognizer = dlib.face_recognition_model_v1(str(path))
    return _recognizer
