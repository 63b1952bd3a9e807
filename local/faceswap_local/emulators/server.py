"""What every provider emulator shares: a werkzeug server on loopback, run in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from werkzeug.serving import make_server

from faceswap_local.stack import free_port


class EmulatorServer:
    """A WSGI server on ``127.0.0.1`` serving :meth:`_app`, started and stopped by the test or the local stack.

    Parameters
    ----------
    name
        Names the serving thread (``<name>-emulator``).
    port
        The port to listen on; a free one when ``None``.

    Attributes
    ----------
    port
        The port it listens on.
    """

    def __init__(self, *, name: str, port: int | None) -> None:
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=f"{name}-emulator")

    @property
    def url(self) -> str:
        """The emulator's base URL (the stand-in for the provider's API host)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        raise NotImplementedError


class _Arrival(Protocol):
    @property
    def at(self) -> float: ...


class RecordingEmulatorServer[R: _Arrival](EmulatorServer):
    """An :class:`EmulatorServer` that keeps every API request it received, in order, in :attr:`requests`.

    Parameters
    ----------
    name, port
        As for :class:`EmulatorServer`.

    Attributes
    ----------
    requests
        The requests, as each emulator records them (each with its arrival time ``at``).
    """

    def __init__(self, *, name: str, port: int | None) -> None:
        super().__init__(name=name, port=port)
        self.requests: list[R] = []

    @property
    def request_times(self) -> list[float]:
        """Arrival times (epoch seconds) of every API request (result downloads excluded)."""
        return [received.at for received in self.requests]

    def _keep(self, received: R) -> R:
        """Append ``received`` to :attr:`requests` (under the lock) and return it."""
        with self._lock:
            self.requests.append(received)
        return received
