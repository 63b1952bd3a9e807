"""The self-hosted engine on loopback for the local stack, and the swap the emulators use to make results."""

from __future__ import annotations

from typing import Any

from faceswap_engine import swap_image_bytes
from faceswap_engine.server import EngineServer
from faceswap_local.loopback import LoopbackServer
from faceswap_local.stack import free_port


def engine_swap(target: bytes, swap: bytes, options: dict[str, Any]) -> bytes:
    """Swap with the engine, reading PiAPI-style options (``swap_faces_index``, ``target_faces_index``); PNG out."""
    return swap_image_bytes(target, swap, format="PNG", **face_indices(options))


def face_indices(options: dict[str, Any]) -> dict[str, Any]:
    """PiAPI-style options (``swap_faces_index``: its first index; ``target_faces_index``: ``"1"`` or ``"0,1"``) as the
    engine's keyword arguments ``swap_face_index`` and ``target_face_indices``."""
    target_option = options.get("target_faces_index")
    return {
        "swap_face_index": int(str(options.get("swap_faces_index", "0")).split(",")[0]),
        "target_face_indices": [int(i) for i in str(target_option).split(",")]
        if target_option not in (None, "")
        else None,
    }


class EngineService(LoopbackServer):
    """:class:`faceswap_engine.server.EngineServer` served on a free loopback port in a background thread."""

    def __init__(self, *, port: int | None = None, workers: int = 2) -> None:
        port = port or free_port()
        self.app = EngineServer(base_url=f"http://127.0.0.1:{port}", workers=workers)
        super().__init__(self.app, name="engine", port=port)

    def stop(self) -> None:
        """Stop serving and stop the engine's workers."""
        super().stop()
        self.app.close()
