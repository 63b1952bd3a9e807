"""One Lambda execution environment's runtime, run as a child process by the local runtime (standard library only).

It is started as ``python -I -S lambda_bootstrap.py <fd> <task root> <layer roots>`` (``os.pathsep``-separated)
with exactly the function's environment (``_HANDLER`` names the handler), so nothing of the development environment
is importable: the import path is the function's code (``/var/task`` on Lambda) then its built layers (together,
``/opt/python``), then the standard
library, as on Lambda's Python runtime (https://docs.aws.amazon.com/lambda/latest/dg/python-package.html,
https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html). A module missing from the layer fails here as
it would on AWS.

The parent speaks to it over the socket ``<fd>`` in frames (4-byte big-endian length, then a JSON object):

- parent → child: ``{"type": "invoke", "event": …, "context": {"aws_request_id", "deadline_epoch_ms", …}}``;
- child → parent: ``{"type": "ready", "init_seconds"}`` once the handler's module is imported, or ``{"type":
  "init_error", "error"}`` (then it exits); per invocation ``{"type": "result", "payload"}`` or ``{"type": "error",
  "error"}``, with ``error`` as Lambda reports it (``errorType``, ``errorMessage``, ``stackTrace``), and the
  process's peak resident memory so far (``max_rss_mb``);
- child → parent, as they happen: ``{"type": "aws", …}`` for every AWS API call and presigned URL the function makes
  (botocore) and ``{"type": "http", …}`` for every request it sends with httpx, for the local stack's checks and
  measurements (the IAM check, ``make bench``). They are recorded where the function's code calls the SDK, through
  hooks set as those modules are imported; the function's own code runs unchanged.

Its stdout and stderr are the function's log stream.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any

_HEADER = struct.Struct(">I")


class Channel:
    """Frames of JSON over the socket to the parent; sending is thread-safe (the SDK may call from threads)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._file = sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, default=_unserialisable).encode("utf-8")
        with self._lock:
            self._sock.sendall(_HEADER.pack(len(data)) + data)

    def receive(self) -> dict[str, Any] | None:
        header = self._file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack(header)
        return json.loads(self._file.read(length))


def _unserialisable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return f"<{type(value).__name__}>"


class LambdaContext:
    """The context object Lambda's Python runtime passes to the handler (the attributes Powertools reads)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.function_name = info["function_name"]
        self.function_version = info["function_version"]
        self.invoked_function_arn = info["invoked_function_arn"]
        self.memory_limit_in_mb = info["memory_limit_in_mb"]
        self.aws_request_id = info["aws_request_id"]
        self.log_group_name = info["log_group_name"]
        self.log_stream_name = info["log_stream_name"]
        self.identity = None
        self.client_context = None
        self._deadline_ms = int(info["deadline_epoch_ms"])

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, self._deadline_ms - int(time.time() * 1000))


# ------------------------------------------------------------------------------------------------ probes


def _probe_botocore_client(module: Any, channel: Channel) -> None:
    base = module.BaseClient
    original = base._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        started = time.time()
        error_code = None
        try:
            return original(client, operation, params)
        except Exception as e:
            response = getattr(e, "response", None)
            error_code = response.get("Error", {}).get("Code") if isinstance(response, dict) else type(e).__name__
            raise
        finally:
            channel.send(
                {
                    "type": "aws",
                    "service": client.meta.service_model.service_name,
                    "operation": operation,
                    "params": _summary(params),
                    "error_code": error_code,
                    "started": started,
                    "ended": time.time(),
                    "presigned": False,
                }
            )

    base._make_api_call = make_api_call


def _probe_botocore_signers(module: Any, channel: Channel) -> None:
    original = module.generate_presigned_url

    def generate_presigned_url(client: Any, method: str, Params: Any = None, **kwargs: Any) -> Any:
        operation = client.meta.method_to_api_mapping.get(method, method)
        now = time.time()
        channel.send(
            {
                "type": "aws",
                "service": client.meta.service_model.service_name,
                "operation": operation,
                "params": _summary(dict(Params or {})),
                "error_code": None,
                "started": now,
                "ended": now,
                "presigned": True,
            }
        )
        return original(client, method, Params=Params, **kwargs)

    module.generate_presigned_url = generate_presigned_url  # bound to clients as they are made


def _probe_httpx(module: Any, channel: Channel) -> None:
    original = module.Client.send

    def send(client: Any, request: Any, **kwargs: Any) -> Any:
        started = time.time()
        status = None
        try:
            response = original(client, request, **kwargs)
            status = response.status_code
            return response
        finally:
            channel.send(
                {
                    "type": "http",
                    "method": request.method,
                    "url": str(request.url.copy_with(query=None)),
                    "status": status,
                    "started": started,
                    "ended": time.time(),
                }
            )

    module.Client.send = send


PROBES = {"botocore.client": _probe_botocore_client, "botocore.signers": _probe_botocore_signers, "httpx": _probe_httpx}


def _summary(params: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters without bodies (streams and bytes become a placeholder)."""
    return {k: (f"<{type(v).__name__}>" if hasattr(v, "read") else v) for k, v in params.items()}


class ProbeOnImport(importlib.abc.MetaPathFinder):
    """Sets a probe on a module right after the function's code first imports it (nothing is imported early)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        probe = PROBES.get(name)
        if probe is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader, channel = spec.loader, self._channel

        class Probed(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                probe(module, channel)

        spec.loader = Probed()
        return spec


# -------------------------------------------------------------------------------------------- the loop


def _error(e: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(e).__name__,
        "errorMessage": str(e),
        "stackTrace": traceback.format_exception(e),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``VmHWM``; ``ru_maxrss`` would count the parent's before exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    fd, task_root, layer_roots = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(os.pathsep)
    sys.path[:0] = [task_root, *layer_roots]
    channel = Channel(socket.socket(fileno=fd))
    sys.meta_path.insert(0, ProbeOnImport(channel))
    started = time.monotonic()
    try:
        module_name, attribute = os.environ["_HANDLER"].rsplit(".", 1)
        handler = getattr(importlib.import_module(module_name), attribute)
    except Exception as e:
        traceback.print_exc()
        sys.stderr.flush()
        channel.send({"type": "init_error", "error": _error(e, "Runtime.ImportModuleError")})
        return 1
    sys.stdout.flush()
    channel.send({"type": "ready", "init_seconds": time.monotonic() - started})
    while True:
        message = channel.receive()
        if message is None:
            return 0
        context = LambdaContext(message["context"])
        try:
            payload = handler(message["event"], context)
            text = json.dumps(payload)  # Lambda serialises the answer as JSON; what cannot be is an error
        except Exception as e:
            traceback.print_exc()
            reply: dict[str, Any] = {"type": "error", "error": _error(e)}
        else:
            reply = {"type": "result", "payload": json.loads(text)}
        sys.stdout.flush()
        sys.stderr.flush()
        reply["max_rss_mb"] = _peak_rss_mb()
        channel.send(reply)


if __name__ == "__main__":
    sys.exit(main())
