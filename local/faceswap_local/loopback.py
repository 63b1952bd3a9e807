"""A WSGI app served on loopback in a background thread: the base of the emulators, the engine and the gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import make_server

from faceswap_local.stack import free_port

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class LoopbackServer:
    """Serves ``app`` on ``127.0.0.1:<port>`` (threaded) from :meth:`start` until :meth:`stop`.

    Parameters
    ----------
    app
        The WSGI application.
    name
        Names the serving thread.
    port
        The port to listen on; a free one when ``None``.

    Attributes
    ----------
    port
        The port it listens on.
    """

    def __init__(self, app: WsgiApp, *, name: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=name)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
