"""What every provider emulator shares: a werkzeug server on loopback, run in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from faceswap_local.loopback import LoopbackServer


class EmulatorServer(LoopbackServer):
    """A :class:`LoopbackServer` serving :meth:`_app`, started and stopped by the test or the local stack.

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
        self._lock = threading.Lock()
        super().__init__(self._app, name=f"{name}-emulator", port=port)

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
