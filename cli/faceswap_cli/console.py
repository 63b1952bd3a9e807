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
  ``403 forbidden_origin``: a page on another site, or on another port of this host, cannot make the browser send
  requests to it (the browser adds both headers itself; a page cannot forge them);
- every ``/api/`` request carries the console's session secret in its ``X-Console-Session`` header, else ``401
  console_session_required``. The page gets the secret with the token of the link ``faceswap console`` opens or
  prints (``/?token=…``): the page takes the token out of the address and sends it, in a header, to ``POST
  /api/session``; a token works once. The page keeps the secret in its own origin's storage (unlike a cookie, not
  shared with other ports of the host). Its images, players and downloads, which cannot send a header, use the
  addresses the console gives each job (``files``): each carries a signature for that one file, valid while this
  console runs. Another local user or process that can reach the port has neither.

What the page shows of a job's files: only S3 objects, through the API's presigned URLs, as the image and video
types the pipeline takes (anything else is sent as ``application/octet-stream`` to download), each answer under
``Content-Security-Policy: sandbox``. A URL input is not fetched (it names someone else's server, perhaps one on
your network): the page names it.

Routes (JSON unless said otherwise; errors are ``{"code", "message"}``, the API's own passed through):

- ``GET /``: the page; ``GET /static/<file>``: its script and style; ``POST /api/session``: the session secret, for a
  link's token (header ``X-Console-Token``).
- ``GET /api/jobs?status=&provider=&limit=``: ``{"jobs", "more"}``, newest first (every state when none is given;
  ``more``: older jobs may match); each failed job's ``error`` gains ``what_to_do``
  (:mod:`faceswap_cli.guidance`), each job ``files`` (the page's signed address of each S3 file).
- ``GET /api/jobs/<job_id>``: the job the same way, with no presigned URL.
- ``GET /api/jobs/<job_id>/files/<name>``: an S3 input or the result (``target``, ``swap_image``, ``result``,
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
import re
import secrets
import sys
import tempfile
import threading
import time
import webbrowser
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from faceswap.api import UPLOAD_EXTENSIONS, URL_EXPIRY_SECONDS
from faceswap_cli.guidance import WHAT_TO_DO
from faceswap_cli.main import ApiClient, ApiError, CliError

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
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a job id in the console's routes may be (the pipeline's are 32 hex digits)."""
URL_MARGIN_SECONDS = 60
"""A presigned URL closer than this to its end is fetched anew (the API's last 15 minutes)."""
UPLOAD_TYPES = frozenset(UPLOAD_EXTENSIONS)
SHOWN_TYPES = UPLOAD_TYPES | {"image/gif"}
"""The file types the page shows as they are (everything else is served to download, as octet-stream)."""
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
    """The console's state: the API client, its login tokens and session secret, the presigned URLs and thumbnails
    it has.

    Parameters
    ----------
    client
        The signed jobs API client (:class:`faceswap_cli.main.ApiClient`).
    port
        Port on 127.0.0.1 (0: any free one).
    """

    def __init__(self, client: ApiClient, *, port: int = 0) -> None:
        self.client = client
        self.session = secrets.token_urlsafe(32)
        """The secret every ``/api/`` request carries (module docstring)."""
        self._file_key = secrets.token_bytes(32)
        self.refused: deque[tuple[str, str, str]] = deque(maxlen=1000)
        """``(method, path, code)`` of each request refused by the checks above, newest last (also logged)."""
        self._tokens: set[str] = set()
        self._urls: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._thumbs: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._making: dict[tuple[str, ...], tuple[threading.Lock, int]] = {}
        """What is being made, one thread at a time per key (:meth:`_alone`): its lock and how many want it."""
        self._lock = threading.Lock()
        self._thumb_slots = threading.BoundedSemaphore(2)
        handler = type("Handler", (_Handler,), {"console": self})
        self.server = _Server((LOOPBACK, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origins = frozenset({f"http://{LOOPBACK}:{self.port}", f"http://localhost:{self.port}"})
        self.hosts = frozenset(origin.removeprefix("http://") for origin in self.origins)

    def link(self) -> str:
        """A new link to open the console with: its token works once (the page then keeps the session secret)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return f"http://{LOOPBACK}:{self.port}/?token={token}"

    def redeem(self, token: str) -> bool:
        """Whether ``token`` is a link's token not used before (it is then used up)."""
        with self._lock:
            for known in self._tokens:
                if hmac.compare_digest(known.encode(), token.encode()):
                    self._tokens.discard(known)
                    return True
        return False

    def signature(self, job_id: str, name: str) -> str:
        """The capability of the page's images, players and downloads for one file: HMAC-SHA256 of ``job_id/name``
        under a key of this console's run (a URL kept in the browser's history opens that file only, and only
        while this console runs)."""
        return hmac.new(self._file_key, f"{job_id}/{name}".encode(), "sha256").hexdigest()[:40]

    def signed(self, job_id: str, name: str, signature: str) -> bool:
        """Whether ``signature`` is :meth:`signature` of that file."""
        return hmac.compare_digest(self.signature(job_id, name).encode(), signature.encode())

    def start(self) -> Console:
        """Serve in a background thread; returns self."""
        threading.Thread(target=self.server.serve_forever, args=(0.1,), name="console", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------------ jobs

    def list_jobs(self, *, status: str | None, provider: str | None, limit: int) -> dict[str, Any]:
        """``{"jobs", "more"}``: up to ``limit`` jobs, newest first: each state's newest (with ``provider``, pages
        read until ``limit`` match, three at most), merged; ``more`` when older ones may match. Raises
        ``ConsoleError`` for an unknown state or an API error."""
        if status is not None and status not in STATES:
            raise ConsoleError(400, "invalid_request", f"Parameter 'status' must be one of {', '.join(STATES)}.")
        jobs: list[dict[str, Any]] = []
        more = False
        for state in [status] if status else STATES:
            params: dict[str, Any] = {"status": state, "limit": limit, **({"provider": provider} if provider else {})}
            found: list[dict[str, Any]] = []
            for _ in range(3):
                page = self._api("GET", "/jobs", params=params)
                found += page["jobs"]
                if len(found) >= limit or not page.get("next_token"):
                    break
                params["next_token"] = page["next_token"]
            more = more or len(found) > limit or bool(page.get("next_token"))
            jobs += found[:limit]
        jobs.sort(key=lambda job: job["created_at"], reverse=True)
        return {"jobs": [self.shown(job) for job in jobs[:limit]], "more": more or len(jobs) > limit}

    def job(self, job_id: str) -> dict[str, Any]:
        """The job without presigned URLs (kept for :meth:`source`), its error with ``what_to_do``."""
        job = self._api("GET", f"/jobs/{quote(job_id, safe='')}")
        expires = time.time() + URL_EXPIRY_SECONDS
        with self._lock:
            for name, shown in _files(job).items():
                presigned = shown.pop("download_url", None)
                if presigned:
                    self._urls[(job_id, name)] = (presigned, expires)
                    self._urls.move_to_end((job_id, name))
            while len(self._urls) > 4096:
                self._urls.popitem(last=False)
        return self.shown(job)

    def source(self, job_id: str, name: str, *, fresh: bool = False) -> str:
        """The presigned URL of file ``name`` of a job, not near its end (``fresh``: asked of the API anew).

        Raises ``ConsoleError`` 404 ``file_not_found`` when the job has no such S3 file (URL inputs are not
        fetched: module docstring)."""
        if not fresh and (url := self._cached_url(job_id, name)):
            return url
        with self._alone(("job", job_id)):  # a page asks for a job's three thumbnails at once: one GET /jobs
            if fresh or not (url := self._cached_url(job_id, name)):
                self.job(job_id)
                url = self._cached_url(job_id, name, margin=0.0)
        if not url:
            raise ConsoleError(404, "file_not_found", f"Job {job_id} has no {name} the console can show.")
        return url

    def _cached_url(self, job_id: str, name: str, *, margin: float = URL_MARGIN_SECONDS) -> str:
        with self._lock:
            url, expires = self._urls.get((job_id, name), ("", 0.0))
        return url if expires - time.time() > margin else ""

    @contextmanager
    def _alone(self, key: tuple[str, ...]) -> Iterator[None]:
        """Hold ``key``'s lock (others with the same key wait); the lock is dropped once no one wants it."""
        with self._lock:
            lock, wanted = self._making.get(key, (threading.Lock(), 0))
            self._making[key] = (lock, wanted + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, wanted = self._making[key]
                if wanted == 1:
                    del self._making[key]
                else:
                    self._making[key] = (lock, wanted - 1)

    @contextmanager
    def reading(self, job_id: str, name: str, *, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """The streamed answer of S3 for file ``name`` of a job (a ``Range`` in ``headers`` passed on), from its
        presigned URL, asked of the API anew once if S3 refuses it (a URL can end before its 15 minutes when the
        API's role session does). Raises ``ConsoleError``."""
        asked = {"accept-encoding": "identity", **(headers or {})}  # the bytes as stored: lengths and ranges hold
        with ExitStack() as stack:
            for fresh in (False, True):
                url = self.source(job_id, name, fresh=fresh)
                try:
                    response = stack.enter_context(self.client.unsigned.stream("GET", url, headers=asked))
                except httpx.HTTPError as e:
                    raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({type(e).__name__}).") from e
                if response.status_code != 403 or fresh:
                    break
                response.close()
            yield response

    def thumbnail(self, job_id: str, name: str) -> tuple[bytes, str]:
        """``(JPEG bytes, "image/jpeg")`` at most :data:`THUMB_PX` a side: the image, or a video's first frame.

        Made once per file (a second request for it waits for the first), two at a time."""
        key = (job_id, name)
        with self._alone(("thumbnail", job_id, name)):
            with self._lock:
                if key in self._thumbs:
                    self._thumbs.move_to_end(key)
                    return self._thumbs[key]
            with self._thumb_slots, self.reading(job_id, name) as response:
                thumb = _thumbnail(response)
            with self._lock:
                self._thumbs[key] = thumb
                while len(self._thumbs) > 512:
                    self._thumbs.popitem(last=False)
        return thumb

    def upload(self, body: Iterator[bytes], *, content_type: str, length: int) -> dict[str, str]:
        """Pass an upload on to a ``POST /uploads`` presigned URL piece by piece; returns ``{"s3_key"}``."""
        grant = self._api("POST", "/uploads", json={"content_type": content_type})
        headers = {**grant["headers"], "content-length": str(length)}
        try:
            response = self.client.unsigned.request(grant["method"], grant["upload_url"], content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ConsoleError(502, "upload_failed", f"The upload failed ({type(e).__name__}).") from e
        if response.status_code >= 300:
            raise ConsoleError(502, "upload_failed", f"The upload was refused ({response.status_code}).")
        return {"s3_key": grant["s3_key"]}

    def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.client.call(method, path, **kwargs)
        except ApiError as e:
            raise ConsoleError(e.status if e.status >= 400 else 502, e.code, e.message) from e
        except CliError as e:
            raise ConsoleError(502, "api_unreachable", str(e)) from e

    def shown(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as the page gets it: its error with ``what_to_do``, and ``files``: the page's address of each S3
        file (signed: :meth:`signature`); a URL input has none."""
        if job.get("error") and job["error"].get("code") in WHAT_TO_DO:
            job["error"] = {**job["error"], "what_to_do": WHAT_TO_DO[job["error"]["code"]]}
        job_id = str(job["job_id"])
        job["files"] = {
            name: f"/api/jobs/{quote(job_id, safe='')}/files/{name}?sig={self.signature(job_id, name)}"
            for name, view in _files(job).items()
            if view.get("s3_uri")
        }
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


def _thumbnail(response: httpx.Response) -> tuple[bytes, str]:
    """A JPEG thumbnail of the image or video ``response`` streams, read into a temporary file (never into memory
    whole). Raises ``ConsoleError``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from faceswap import media

    if response.status_code != 200:
        raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({response.status_code}).")
    with tempfile.NamedTemporaryFile(suffix=".input") as file:
        size = 0
        try:
            for chunk in response.iter_raw(CHUNK):
                size += len(chunk)
                if size > MAX_THUMB_SOURCE_BYTES:
                    raise ConsoleError(413, "file_too_large", "The file is too large to show a thumbnail of.")
                file.write(chunk)
        except httpx.HTTPError as e:
            raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({type(e).__name__}).") from e
        file.flush()
        file.seek(0)
        head = file.read(media.SNIFF_BYTES)
        file.seek(0)
        try:
            if media.sniff(head):
                image = Image.open(io.BytesIO(media.first_frame(file.name).data))
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

    timeout = 30
    """Seconds a connection may wait for a request or its body (a client that stalls gives its thread back)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines without the query string (it may hold a link's token or a file's signature), control
        characters escaped (as ``http.server`` does) so a request cannot write to the terminal."""
        message = re.sub(r"\?\S*", "?…", format % args).translate(self._control_char_table)  # type: ignore[attr-defined]
        sys.stderr.write(f"console: {message}\n")

    # ------------------------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_OPTIONS(self) -> None:  # a CORS preflight from another origin: refused by the same checks
        self._serve("OPTIONS")

    def _serve(self, method: str) -> None:
        self._unread = self._declared_length()
        try:
            try:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            except ValueError as e:
                raise ConsoleError(400, "invalid_request", "The request's address does not parse.") from e
            self._admitted(method, parts.path, query)
            self._route(method, parts.path, query)
        except ConsoleError as e:
            self._json(e.status, {"code": e.code, "message": e.message})
        except ConnectionError:
            self.close_connection = True
        finally:
            if self._unread:  # a body not read (whole): what follows on the connection is not a request
                self.close_connection = True

    def _declared_length(self) -> int:
        """The body's length, or -1 for one whose length is unknown (chunked) or malformed."""
        if self.headers.get("Transfer-Encoding"):
            return -1
        length = self.headers.get("Content-Length", "0").strip() or "0"
        return int(length) if re.fullmatch(r"[0-9]{1,12}", length) else -1

    def _admitted(self, method: str, path: str, query: dict[str, str]) -> None:
        """The checks in the module's docstring; raises ``ConsoleError`` for a request that fails them."""
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
            self.log_message("refused %s %s: %s (Origin %r)", method, path, code, origin)
            self._drain()
            raise ConsoleError(403, code, "This console answers only its own page, on loopback.")
        if not path.startswith("/api/") or (method == "POST" and path == "/api/session"):
            return  # the page itself holds no data; a session is asked for with a link's token (_route)
        given = self.headers.get("X-Console-Session", "")
        if hmac.compare_digest(given.encode(), console.session.encode()):
            return
        segments = path.split("/")
        if (
            method == "GET"
            and len(segments) == 6
            and segments[4] == "files"
            and console.signed(segments[3], segments[5], query.get("sig", ""))
        ):
            return  # an image, player or download of the page: a capability for that one file
        console.refused.append((method, path, "console_session_required"))
        self._drain()
        raise ConsoleError(
            401, "console_session_required", "Open the link `faceswap console` printed (each link works once)."
        )

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        console = self.console
        segments = [s for s in path.split("/") if s]
        if method == "GET" and path == "/":
            return self._static("index.html")
        if method == "GET" and len(segments) == 2 and segments[0] == "static":
            return self._static(segments[1])
        if segments[:1] != ["api"]:
            self._drain()
            raise ConsoleError(404, "not_found", "No such page.")
        route = segments[1:]
        if route[:1] == ["jobs"] and len(route) > 1 and not JOB_ID.fullmatch(route[1]):
            self._drain()  # e.g. ".." would name another route of the API once the client normalised the path
            raise ConsoleError(404, "job_not_found", "No such job.")
        if method == "POST" and route == ["session"]:
            self._drain()
            if not console.redeem(self.headers.get("X-Console-Token", "")):
                console.refused.append((method, path, "console_session_required"))
                raise ConsoleError(
                    401, "console_session_required", "That console link was used already, or is not this console's."
                )
            return self._json(200, {"session": console.session})
        if method == "GET" and route == ["jobs"]:
            limit = _int(query.get("limit", "30"), "limit", 1, 100)
            status, provider = query.get("status") or None, query.get("provider") or None
            return self._json(200, console.list_jobs(status=status, provider=provider, limit=limit))
        if method == "GET" and len(route) == 2 and route[0] == "jobs":
            return self._json(200, console.job(route[1]))
        if method == "GET" and len(route) == 4 and route[0] == "jobs" and route[2] == "files":
            return self._file(route[1], route[3], query)
        if method == "POST" and route == ["jobs"]:
            body = self._json_body()
            return self._json(202, console._api("POST", "/jobs", json=body))
        if method == "POST" and len(route) == 3 and route[0] == "jobs" and route[2] == "retry":
            self._drain()
            return self._json(202, console._api("POST", f"/jobs/{quote(route[1], safe='')}/retry"))
        if method == "PUT" and route == ["uploads"]:
            return self._upload()
        if method == "GET" and route == ["providers"]:
            from faceswap.providers.registry import PROVIDERS

            offered = [
                {"name": p.name, "tasks": list(p.tasks), "video_tasks": list(p.video_tasks)} for p in PROVIDERS.values()
            ]
            return self._json(200, {"providers": offered, "upload_types": sorted(UPLOAD_TYPES)})
        if method == "GET" and route == ["error-codes"]:
            return self._json(200, {"what_to_do": WHAT_TO_DO})
        self._drain()
        raise ConsoleError(404, "not_found", "No such route.")

    # ------------------------------------------------------------------------------------------- answers

    def _file(self, job_id: str, name: str, query: dict[str, str]) -> None:
        if query.get("view") == "thumb":
            data, content_type = self.console.thumbnail(job_id, name)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "private, max-age=3600")
            self._common_headers(sandbox=True)
            self.end_headers()
            self.wfile.write(data)
            return
        asked = {"range": self.headers["Range"]} if self.headers.get("Range") else {}
        with self.console.reading(job_id, name, headers=asked) as response:
            if response.status_code not in (200, 206, 416):
                raise ConsoleError(502, "file_unavailable", f"Reading the file failed ({response.status_code}).")
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            shown = content_type in SHOWN_TYPES
            self.send_response(response.status_code)
            self.send_header("Content-Type", content_type if shown else "application/octet-stream")
            for header in ("Content-Length", "Content-Range", "Accept-Ranges", "ETag"):
                if header in response.headers:
                    self.send_header(header, response.headers[header])
            if "Content-Length" not in response.headers:
                self.close_connection = True  # the end of the body is the end of the connection
            if query.get("download") == "1" or not shown:
                self.send_header("Content-Disposition", f'attachment; filename="{job_id}-{name}"')
            self.send_header("Cache-Control", "private, max-age=600")
            self._common_headers(sandbox=True)
            self.end_headers()
            try:
                for chunk in response.iter_raw(CHUNK):
                    self.wfile.write(chunk)
            except httpx.HTTPError:
                self.close_connection = True  # the answer was already begun: cut it short

    def _upload(self) -> None:
        length = self._unread
        if length < 0:
            raise ConsoleError(411, "length_required", "An upload needs its Content-Length (no chunked bodies).")
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in UPLOAD_TYPES or not 0 < length <= MAX_UPLOAD_BYTES:
            self._drain()
        if content_type not in UPLOAD_TYPES:
            raise ConsoleError(
                400, "invalid_request", f"Content-Type must be one of {', '.join(sorted(UPLOAD_TYPES))}."
            )
        if not 0 < length <= MAX_UPLOAD_BYTES:
            raise ConsoleError(400, "invalid_request", f"An upload must be 1 byte to {MAX_UPLOAD_BYTES} bytes.")
        self._json(201, self.console.upload(self._body(length), content_type=content_type, length=length))

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
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(no_store=True)
        self.end_headers()
        self.wfile.write(data)

    def _common_headers(self, *, no_store: bool = False, sandbox: bool = False) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        if sandbox:  # a file opened on its own runs nothing in the console's origin
            self.send_header("Content-Security-Policy", "sandbox; default-src 'none'")
        if no_store:
            self.send_header("Cache-Control", "no-store")

    # --------------------------------------------------------------------------------------------- bodies

    def _json_body(self) -> Any:
        length = self._unread
        if not 0 <= length <= MAX_JSON_BYTES:
            raise ConsoleError(400, "invalid_request", f"A request body must be at most {MAX_JSON_BYTES} bytes.")
        if self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() != "application/json":
            self._drain()
            raise ConsoleError(415, "unsupported_media_type", "The body must be application/json.")
        data = self.rfile.read(length)
        self._unread = 0
        try:
            return json.loads(data)
        except ValueError as e:
            raise ConsoleError(400, "invalid_request", "Field 'body': the body is not valid JSON.") from e

    def _body(self, length: int) -> Iterator[bytes]:
        while self._unread > 0:
            chunk = self.rfile.read(min(CHUNK, self._unread))
            if not chunk:
                raise ConsoleError(400, "invalid_request", "The upload ended before its Content-Length.")
            self._unread -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        """Read and drop a small body not used (so the answer reaches the browser whole); a larger or unknown one
        is left unread and the connection closed after the answer (:meth:`_serve`)."""
        if 0 < self._unread <= MAX_JSON_BYTES:
            self.rfile.read(self._unread)
            self._unread = 0


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ConsoleError(400, "invalid_request", f"Parameter {name!r} must be a whole number from {low} to {high}.")
    return number


def serve(client: ApiClient, *, port: int, open_browser: bool) -> int:
    """Run the console until Ctrl-C: open a link to it in the default browser (or, with ``open_browser`` false or
    no browser to open, print one: each link works once)."""
    console = Console(client, port=port).start()
    print(f"faceswap console on http://{LOOPBACK}:{console.port}/ (jobs API {client.base_url}; Ctrl-C stops it)")
    if open_browser and webbrowser.open(console.link()):
        print("opened in your browser; for another browser, run --no-browser and open the link it prints", flush=True)
    else:
        print(f"open (once): {console.link()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        console.stop()
    return 0
