"""The local stack's build of the layers (``layers/<name>/Makefile``), for this machine, each in a folder of its own.

``sam build`` builds the layers for Lambda (arm64); the local runtime runs each function from the same Makefiles'
output built for this machine's architecture (``PLATFORM=native``) under ``.local/build/``, never from the source
tree or the development virtual environment, so a module the layer lacks fails locally as it would on AWS. A build
is kept under a digest of everything it is made from and reused until one of those files changes; the
newest few builds are kept, so a stack started before a change keeps running on its own build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"SharedLayer": ROOT / "layers" / "shared", "MediaLayer": ROOT / "layers" / "media"}
"""Each layer of the template (logical id) and its source folder (its ``Makefile`` has ``build-<logical id>``)."""
LAYER_SOURCE = LAYERS["SharedLayer"]
KEEP_BUILDS = 3
"""Builds kept (newest first); older ones are removed after a new build."""
BUILD_DIR = ROOT / ".local" / "build"
"""Shared by every local stack of this checkout (builds are keyed by their sources' digest)."""


def layer_digest(source: Path = LAYER_SOURCE) -> str:
    """sha256 (hex, 16 characters) of the layer's sources: its Makefile, requirements and Python files."""
    digest = hashlib.sha256()
    files = [source / "Makefile", source / "requirements.txt", *sorted(source.rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(source)).encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_layer(source: Path = LAYER_SOURCE, build_dir: Path = BUILD_DIR, *, name: str = "SharedLayer") -> Path:
    """Layer ``name`` (from ``source``) built for this machine: its part of what Lambda mounts as ``/opt/python``.

    Builds it (``make build-<name> PLATFORM=native``, about 10 to 60 s, pip's cache permitting) when no build
    of the current sources exists; one process builds at a time (a file lock), and builds of the layer older than the
    newest :data:`KEEP_BUILDS` are removed.

    Raises
    ------
    RuntimeError
        The Makefile failed (its output is in the message).
    """
    digest = layer_digest(source)
    final = build_dir / f"{name}-{digest}"
    if (final / "python" / ".built").is_file():
        return final / "python"
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "python" / ".built").is_file():
            return final / "python"
        staging = build_dir / f".staging-{name}-{digest}"
        shutil.rmtree(staging, ignore_errors=True)
        done = subprocess.run(  # noqa: S603 - make, from PATH, on the layer's own Makefile
            [
                shutil.which("make") or "make",
                "--no-print-directory",
                "-C",
                str(source),
                f"build-{name}",
                f"ARTIFACTS_DIR={staging}",
                "PLATFORM=native",
                f"PYTHON={sys.executable}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n{done.stdout}\n{done.stderr}")
        (staging / "python" / ".built").touch()
        staging.rename(final)
        builds = sorted(build_dir.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in builds[KEEP_BUILDS:]:  # a stack still running may use the newest older one
            shutil.rmtree(old, ignore_errors=True)
    return final / "python"


def built_layers(names: tuple[str, ...], build_dir: Path = BUILD_DIR) -> tuple[Path, ...]:
    """The built layers ``names`` (logical ids of :data:`LAYERS`, in the function's order), for its import path:
    the last layer first, since on Lambda a later layer's files replace an earlier one's in ``/opt``
    (https://docs.aws.amazon.com/lambda/latest/dg/adding-layers.html)."""
    return tuple(built_layer(LAYERS[name], build_dir, name=name) for name in reversed(names))


def lambda_python() -> str:
    """The Python interpreter execution environments run: the base interpreter of this virtual environment
    (3.13, as the template's ``Runtime``), started isolated (``-I -S``) so none of its packages are importable;
    ``FACESWAP_LAMBDA_PYTHON`` overrides it."""
    return os.environ.get("FACESWAP_LAMBDA_PYTHON") or getattr(sys, "_base_executable", sys.executable)
