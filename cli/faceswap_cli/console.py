"""``faceswap console``: the jobs console, a page in your browser served on loopback.

The console process is the only thing that talks to AWS: it calls the jobs API signed with your own AWS credentials
(SigV4, as the CLI does; against the local stack with its credentials), and it fetches what the page shows (inputs,
results, thumbnails, video frames) through the API's presigned URLs. The page itself reaches its own origin only:
no CDN, fonts or scripts from elsewhere (its Content-Security-Policy says ``'self'``), and it works offline.

Who may drive it (each request, before anything else):

- it listens on 127.0.0.1 only;
- the ``Host`` header must be this console's own (``127.0.0.1:<port>`` or ``localhost:<port>``): a foreign name
  that resolves to 127.0.0.1 (DNS rebinding) is refused ``403 forbidden_host``;
- an ``Origin`` other than the console's own, or a ``Sec-Fetch-Site`` of ``cross-site`` or ``same-site``, is refused
  ``403 forbidden_origin``: a page on another site cannot make the browser send requests with your credentials
  (the browser adds both headers itself; a page cannot forge them);
- every request carries the console's cookie, set when the URL ``faceswap console`` prints (with its one-time
  ``token``) is opened: another local user or process that can reach the port cannot use it (``401
  console_token_required``).

Routes (JSON unless said otherwise; errors are ``{"code", "message"}``, the API's own passed through):

- ``GET /``: the page; ``GET /static/<file>``: its script and style.
- ``GET /api/jobs?status=&provider=&limit=``: newest first (every state when none is given); each failed job's
  ``error`` gains ``what_to_do`` (:mod:`faceswap_cli.guidance`).
- ``GET /api/jobs/<job_id>``: the job, with no presigned URL (the page uses ``/api/jobs/<job_id>/files/…``).
- ``GET /api/jobs/<job_id>/files/<name>``: an input or the result (``target``, ``swap_image``, ``result``,
  ``reference-<i>``, ``swap-<i>`` for face map pairs), streamed with ``Range`` passed on (a video player seeks);
  ``?view=thumb``: a JPEG at most 320 px a side (a video's first frame); ``?download=1``: as an attachment.
- ``POST /api/jobs``: submit (the jobs API's ``POST /jobs`` body); ``POST /api/jobs/<job_id>/retry``: retry.
- ``PUT /api/uploads``: the body, with its ``Content-Type``, is streamed to a ``POST /uploads`` presigned URL in
  1 MiB pieces (never held whole); answers ``{"s3_key"}``.
- ``GET /api/providers``, ``GET /api/error-codes``: what the submit form and the job pages offer and say.
"""

from __future__ import annotations

import hmac
import io
import json
import math
import secrets
import sys
import tempfile
import threading
import time
import webbrowser
from collections import OrderedDict
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from faceswap_cli.guidance import WHAT_TO_DO
from faceswap_cli.main import ApiClient, CliError

LOOPBACK = "127.0.0.1"
STATIC = Path(__file__).with_name("console_static")
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
STATES = ("RECEIVED", "SUBMITTED", "SUCCEEDED", "FAILED", "TIMED_OUT")
THUMB_PX = 320
"""Longest side of a thumbnail, in pixels."""
MAX_JSON_BYTES = 64 * 1024
"""A request body the console reads whole (a submission names uploads; its images never travel inline)."""
MAX_UPLOAD_BYTES = 500 * 1024 * 1024
"""The largest upload passed on: the pipeline's own largest input (``VideoMaxBytes``, 500 MiB)."""
MAX_THUMB_SOURCE_BYTES = 600 * 1024 * 1024
"""The largest input or result read to make a thumbnail (a video is read to a temporary file, not to memory)."""
CHUNK = 1024 * 1024
URL_MARGIN_SECONDS = 60
"""A presigned URL closer than this to its end is fetched anew (the API's last 15 minutes)."""
PRESIGNED_SECONDS = 900
UPLOAD_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "video/mp4", "video/quicktime", "video/webm"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class ConsoleError(Exception):
    """A request the console answers with ``status`` and ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Console:
    """The console's state: the API client, its login token, the presigned URLs and thumbnails it has.

    Parameters
    ----------
    client
        The signed jobs API client (:class:`faceswap_cli.main.ApiClient`).
    port
        Port on 127.0.0.1 (0: any free one).
    """

    def __init__(self, client: ApiClient, *, port: int = 0) -> None:
        self.client = client
        self.token = secrets.token_urlsafe(32)
        self.refused: list[tuple[str, str, str]] = []
        """``(method, path, code)`` of each request refused by the checks above, newest last (also logged)."""
        self._urls: dict[tuple[str, str], tuple[str, float]] = {}
        self._thumbs: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"console": self})
        self.server = _Server((LOOPBACK, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origins = frozenset({f"http://{LOOPBACK}:{self.port}", f"http://localhost:{self.port}"})
        self.hosts = frozenset(origin.removeprefix("http://") for origin in self.origins)
        self.cookie = f"faceswap_console_{self.port}"

    @property
    def url(self) -> str:
        """The URL to open: it carries the one-time token that sets the console's cookie."""
        return f"http://{LOOPBACK}:{self.port}/?token={self.token}"

    def start(self) -> Console:
        """Serve in a background thread; returns self."""
        threading.Thread(target=self.server.serve_forever, args=(0.1,), name="console", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------------ jobs

    def list_jobs(self, *, status: str | None, provider: str | None, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` jobs, newest first: each state's newest (pages read until ``limit`` match ``provider``,
        ten at most), merged. Raises ``ConsoleError`` for an unknown state or an API error."""
        if status is not None and status not in STATES:
            raise ConsoleError(400, "invalid_request", f"Parameter 'status' must be one of {', '.join(STATES)}.")
        jobs: list[dict[str, Any]] = []
        for state in [status] if status else STATES:
            params: dict[str, Any] = {"status": state, "limit": limit, **({"provider": provider} if provider else {})}
            found: list[dict[str, Any]] = []
            for _ in range(10):
                page = self._api("GET", "/jobs", params=params)
                found += page["jobs"]
                if len(found) >= limit or not page.get("next_token"):
                    break
                params["next_token"] = page["next_token"]
            jobs += found[:limit]
        jobs.sort(key=lambda job: job["created_at"], reverse=True)
        return [_with_guidance(job) for job in jobs[:limit]]

    def job(self, job_id: str) -> dict[str, Any]:
        """The job without presigned URLs (kept for ``files``), its error with ``what_to_do``."""
        job = self._api("GET", f"/jobs/{quote(job_id, safe='')}")
        expires = time.time() + PRESIGNED_SECONDS
        with self._lock:
            for name, shown in _files(job).items():
                presigned = shown.pop("download_url", None)
                if presigned:
                    self._urls[(job_id, name)] = (presigned, expires)
                elif shown.get("url"):  # a URL input: the console fetches it itself, the page never does
                    self._urls[(job_id, name)] = (shown["url"], math.inf)
        return _with_guidance(job)

    def source(self, job_id: str, name: str) -> str:
        """The URL to read file ``name`` of a job from: a presigned URL not near its end, or a URL input.

        Raises ``ConsoleError`` 404 ``file_not_found`` when the job has no such file."""
        for attempt in range(2):
            with self._lock:
                url, expires = self._urls.get((job_id, name), ("", 0.0))
            if url and expires - time.time() > URL_MARGIN_SECONDS:
                return url
            if attempt == 0:
                self.job(job_id)
        raise ConsoleError(404, "file_not_found", f"Job {job_id} has no {name}.")

    def thumbnail(self, job_id: str, name: str) -> tuple[bytes, str]:
        """``(JPEG bytes, "image/jpeg")`` at most :data:`THUMB_PX` a side: the image, or a video's first frame."""
        key = (job_id, name)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        thumb = _thumbnail(self.client, self.source(job_id, name))
        with self._lock:
            self._thumbs[key] = thumb
            while len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return thumb

    def upload(self, body: Iterator[bytes], *, content_type: str, length: int) -> dict[str, str]:
        """Pass an upload on to a ``POST /uploads`` presigned URL piece by piece; returns ``{"s3_key"}``."""
        if content_type not in UPLOAD_TYPES:
            raise ConsoleError(
                400, "invalid_request", f"Content-Type must be one of {', '.join(sorted(UPLOAD_TYPES))}."
            )
        if not 0 < length <= MAX_UPLOAD_BYTES:
            raise ConsoleError(400, "invalid_request", f"An upload must be 1 byte to {MAX_UPLOAD_BYTES} bytes.")
        grant = self._api("POST", "/uploads", json={"content_type": content_type})
        headers = {**grant["headers"], "content-length": str(length)}
        response = self.client.unsigned.request(grant["method"], grant["upload_url"], content=body, headers=headers)
        if response.status_code >= 300:
            raise ConsoleError(502, "upload_failed", f"The upload was refused ({response.status_code}).")
        return {"s3_key": grant["s3_key"]}

    def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except CliError as e:
            raise ConsoleError(502, "api_unreachable", str(e)) from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            body = body if isinstance(body, dict) else {}
            raise ConsoleError(
                response.status_code if response.status_code >= 400 else 502,
                str(body.get("code", "api_error")),
                str(body.get("message", f"The jobs API answered {response.status_code}.")),
            )
        return body


def _with_guidance(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("error") and job["error"].get("code") in WHAT_TO_DO:
        job["error"] = {**job["error"], "what_to_do": WHAT_TO_DO[job["error"]["code"]]}
    return job


def _files(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A job's files by the names ``/api/jobs/<job_id>/files/<name>`` takes (the views themselves, to edit)."""
    inputs = job.get("inputs") or {}
    files = {name: inputs.get(name) for name in ("target", "swap_image")}
    for i, pair in enumerate(inputs.get("face_map") or ()):
        files[f"reference-{i}"] = pair.get("reference")
        files[f"swap-{i}"] = pair.get("swap_image")
    files["result"] = job.get("result")
    return {name: shown for name, shown in files.items() if shown}


def _thumbnail(client: ApiClient, url: str) -> tuple[bytes, str]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from faceswap import media

    with client.unsigned.stream("GET", url) as response, tempfile.TemporaryFile() as file:
        if response.status_code != 200:
            raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({response.status_code}).")
        size = 0
        for chunk in response.iter_bytes(CHUNK):
            size += len(chunk)
            if size > MAX_THUMB_SOURCE_BYTES:
                raise ConsoleError(413, "file_too_large", "The file is too large to show a thumbnail of.")
            file.write(chunk)
        file.seek(0)
        head = file.read(media.SNIFF_BYTES)
        file.seek(0)
        try:
            if media.sniff(head):
                with tempfile.NamedTemporaryFile(suffix=".video") as named:
                    named.write(file.read())
                    named.flush()
                    frame = media.first_frame(named.name)
                image = Image.open(io.BytesIO(frame.data))
            else:
                image = ImageOps.exif_transpose(Image.open(file))
            image.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=82)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ConsoleError(415, "not_an_image", "The file is neither an image nor a video that decodes.") from e
        except Exception as e:  # PyAV's errors and InvalidVideo
            raise ConsoleError(415, "not_an_image", f"The file does not decode ({type(e).__name__}).") from e
    return out.getvalue(), "image/jpeg"


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that closes a connection (a page left, a video seeked) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    console: Console
    server_version = "faceswap-console"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the token is in a query string once: not logged
        message = format % args
        if "token=" in message:
            message = message.split("?", 1)[0] + "?token=…"
        sys.stderr.write(f"console: {message}\n")

    # ------------------------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_OPTIONS(self) -> None:  # a CORS preflight from another origin: refused by the same checks
        self._serve("OPTIONS")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if self._admitted(method, parts.path, query):
                self._route(method, parts.path, query)
        except ConsoleError as e:
            self._json(e.status, {"code": e.code, "message": e.message})
        except ConnectionError:
            self.close_connection = True

    def _admitted(self, method: str, path: str, query: dict[str, str]) -> bool:
        """The checks in the module's docstring; answers and returns ``False`` for a request that fails them."""
        console = self.console
        host = self.headers.get("Host", "")
        origin = self.headers.get("Origin")
        fetch_site = self.headers.get("Sec-Fetch-Site")
        code = None
        if host not in console.hosts:
            code = "forbidden_host"
        elif (origin is not None and origin not in console.origins) or fetch_site in ("cross-site", "same-site"):
            code = "forbidden_origin"
        if code is not None:
            console.refused.append((method, path, code))
            self.log_message("refused %s %s: %s (Host %r, Origin %r)", method, path, code, host, origin)
            self._drain()
            raise ConsoleError(403, code, "This console answers only its own page, on loopback.")
        if method == "GET" and path == "/" and "token" in query:
            if not hmac.compare_digest(query["token"], console.token):
                raise ConsoleError(401, "console_token_required", "That console link is not this console's.")
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header(
                "Set-Cookie", f"{console.cookie}={console.token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400"
            )
            self._common_headers(no_store=True)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        cookies = dict(part.strip().split("=", 1) for part in self.headers.get("Cookie", "").split(";") if "=" in part)
        if not hmac.compare_digest(cookies.get(console.cookie, ""), console.token):
            self._drain()
            console.refused.append((method, path, "console_token_required"))
            raise ConsoleError(
                401, "console_token_required", "Open the link `faceswap console` printed (it carries its token)."
            )
        return True

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        console = self.console
        segments = [s for s in path.split("/") if s]
        if method in ("GET", "HEAD") and path == "/":
            return self._static("index.html")
        if method in ("GET", "HEAD") and len(segments) == 2 and segments[0] == "static":
            return self._static(segments[1])
        if segments[:1] != ["api"]:
            raise ConsoleError(404, "not_found", "No such page.")
        route = segments[1:]
        if method == "GET" and route == ["jobs"]:
            limit = _int(query.get("limit", "30"), "limit", 1, 100)
            jobs = console.list_jobs(
                status=query.get("status") or None, provider=query.get("provider") or None, limit=limit
            )
            return self._json(200, {"jobs": jobs})
        if method == "GET" and len(route) == 2 and route[0] == "jobs":
            return self._json(200, console.job(route[1]))
        if method in ("GET", "HEAD") and len(route) == 4 and route[0] == "jobs" and route[2] == "files":
            return self._file(method, route[1], route[3], query)
        if method == "POST" and route == ["jobs"]:
            body = self._json_body()
            return self._json(202, console._api("POST", "/jobs", json=body))
        if method == "POST" and len(route) == 3 and route[0] == "jobs" and route[2] == "retry":
            return self._json(202, console._api("POST", f"/jobs/{quote(route[1], safe='')}/retry"))
        if method == "PUT" and route == ["uploads"]:
            length = _int(self.headers.get("Content-Length", "0"), "Content-Length", 0, MAX_UPLOAD_BYTES)
            content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            return self._json(201, console.upload(self._body(length), content_type=content_type, length=length))
        if method == "GET" and route == ["providers"]:
            from faceswap.providers.registry import PROVIDERS

            offered = [
                {"name": p.name, "tasks": list(p.tasks), "video_tasks": list(p.video_tasks)} for p in PROVIDERS.values()
            ]
            return self._json(200, {"providers": offered})
        if method == "GET" and route == ["error-codes"]:
            return self._json(200, {"what_to_do": WHAT_TO_DO})
        raise ConsoleError(404, "not_found", "No such route.")

    # ------------------------------------------------------------------------------------------- answers

    def _file(self, method: str, job_id: str, name: str, query: dict[str, str]) -> None:
        if query.get("view") == "thumb":
            data, content_type = self.console.thumbnail(job_id, name)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "private, max-age=3600")
            self._common_headers()
            self.end_headers()
            if method == "GET":
                self.wfile.write(data)
            return
        url = self.console.source(job_id, name)
        headers = {"Range": self.headers["Range"]} if self.headers.get("Range") else {}
        with self.console.client.unsigned.stream(method, url, headers=headers) as response:
            if response.status_code not in (200, 206):
                raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({response.status_code}).")
            self.send_response(response.status_code)
            for header in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag"):
                if header in response.headers:
                    self.send_header(header, response.headers[header])
            if query.get("download") == "1":
                self.send_header("Content-Disposition", f'attachment; filename="{job_id}-{name}"')
            self.send_header("Cache-Control", "private, max-age=600")
            self._common_headers()
            self.end_headers()
            if method == "GET":
                for chunk in response.iter_raw(CHUNK):
                    self.wfile.write(chunk)

    def _static(self, name: str) -> None:
        path = STATIC / name
        if path.suffix not in STATIC_TYPES or not path.is_file() or path.parent != STATIC:
            raise ConsoleError(404, "not_found", "No such file.")
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", STATIC_TYPES[path.suffix])
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(no_store=True)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(no_store=True)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _common_headers(self, *, no_store: bool = False) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        if no_store:
            self.send_header("Cache-Control", "no-store")

    # --------------------------------------------------------------------------------------------- bodies

    def _json_body(self) -> Any:
        length = _int(self.headers.get("Content-Length", "0"), "Content-Length", 0, MAX_JSON_BYTES)
        if self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() != "application/json":
            self._drain()
            raise ConsoleError(415, "unsupported_media_type", "The body must be application/json.")
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as e:
            raise ConsoleError(400, "invalid_request", "Field 'body': the body is not valid JSON.") from e

    def _body(self, length: int) -> Iterator[bytes]:
        left = length
        while left > 0:
            chunk = self.rfile.read(min(CHUNK, left))
            if not chunk:
                raise ConsoleError(400, "invalid_request", "The upload ended before its Content-Length.")
            left -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        """Read and drop a refused request's small body (the answer then reaches the browser whole); close the
        connection after the answer to one with a larger or unknown body, unread."""
        length = self.headers.get("Content-Length", "0")
        if self.headers.get("Transfer-Encoding") or not length.isdigit() or int(length) > MAX_JSON_BYTES:
            self.close_connection = True
        elif int(length):
            self.rfile.read(int(length))


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ConsoleError(400, "invalid_request", f"Parameter {name!r} must be a whole number from {low} to {high}.")
    return number


def serve(client: ApiClient, *, port: int, open_browser: bool) -> int:
    """Run the console until Ctrl-C: print its URL (with its token) and open it in the default browser."""
    console = Console(client, port=port).start()
    print(f"faceswap console on {console.url}\n(API {client.base_url}; Ctrl-C stops it)", flush=True)
    if open_browser:
        webbrowser.open(console.url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        console.stop()
    return 0
