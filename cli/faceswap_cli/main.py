"""``faceswap``: the jobs API from a terminal, against the local stack or a deployed stack.

Examples::

    faceswap submit --target party.jpg --swap face.jpg --wait --download out/
    faceswap submit --target party.jpg --swap face.jpg --reference bob.jpg --wait
    faceswap status 3f2a…            faceswap wait 3f2a…          faceswap list --status FAILED
    faceswap retry 3f2a… --wait      faceswap download 3f2a… --out result.jpg
    faceswap console                 (the jobs console in your browser; see faceswap_cli.console)
    faceswap --stack-name faceswap-prod --region eu-west-1 list

Without ``--stack-name`` it talks to the local stack (``make up``), reading ``.local/stack.json``. With it, it finds
the API in the stack's Outputs (``HttpApiUrl``) and signs requests with your AWS credentials (SigV4).
Exit status: 0 done (or succeeded, for ``--wait``), 1 the job failed or timed out, 2 a usage or API error.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from faceswap import media
from faceswap_cli.sigv4 import SigV4

TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
HEARTBEAT_SECONDS = 15.0
"""How often ``--wait`` says a job is still running (a video task runs for minutes)."""
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class CliError(Exception):
    """An error to show the user (the API's ``code`` and ``message`` when it answered)."""


class ApiError(CliError):
    """The jobs API answered an error (or a body that is not a JSON object): its ``status``, ``code``, ``message``."""

    def __init__(self, method: str, path: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {path} → {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class ApiClient:
    """A signed client of the jobs API.

    Parameters
    ----------
    base_url
        The API's base URL (``HttpApiUrl``).
    auth
        SigV4 signing for the API's region.
    """

    def __init__(self, base_url: str, auth: httpx.Auth) -> None:
        self.base_url = base_url.rstrip("/")
        self._api = httpx.Client(base_url=self.base_url, auth=auth, timeout=TIMEOUT)
        self.unsigned = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0))
        """For presigned URLs (they carry their own authorisation) and URL inputs."""

    @classmethod
    def for_local_stack(cls, state_file: Path) -> ApiClient:
        """The local stack's API, with its credentials, from ``.local/stack.json``."""
        if not state_file.exists():
            raise CliError(f"No local stack ({state_file} is missing): start one with `make up`, or give --stack-name.")
        from botocore.credentials import Credentials

        info = json.loads(state_file.read_text())
        credentials = Credentials(info["aws_access_key_id"], info["aws_secret_access_key"])
        return cls(info["api_url"], SigV4(credentials, info["region"]))

    @classmethod
    def for_stack(cls, stack_name: str, region: str | None) -> ApiClient:
        """A deployed stack's API (its ``HttpApiUrl`` output), signed with the caller's AWS credentials."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        session = boto3.Session(region_name=region)
        try:
            stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
        except (BotoCoreError, ClientError) as e:
            raise CliError(f"Cannot read stack {stack_name!r}: {e}") from e
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        credentials = session.get_credentials()
        if "HttpApiUrl" not in outputs or credentials is None:
            raise CliError(f"Stack {stack_name!r} has no HttpApiUrl output, or no AWS credentials are configured.")
        return cls(outputs["HttpApiUrl"], SigV4(credentials, session.region_name or "us-east-1"))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One signed API call, answered as it came (any status). Raises ``CliError`` when no answer came."""
        try:
            return self._api.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise CliError(f"{method} {path} failed: {e}") from e

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; returns the JSON body. Raises ``ApiError`` with the API's status, code and message (or
        ``CliError`` when no answer came)."""
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            shown = body if isinstance(body, dict) else {}
            raise ApiError(
                method,
                path,
                response.status_code,
                str(shown.get("code", response.status_code if response.status_code >= 400 else "api_error")),
                str(shown.get("message", response.text)),
            )
        return body

    def image(self, value: str) -> dict[str, str]:
        """An image (or video) argument as the API takes it: URLs as ``url``, local files uploaded (``POST
        /uploads``, streamed from the file)."""
        if value.startswith(("https://", "http://")):
            return {"url": value}
        path = Path(value)
        if not path.is_file():
            raise CliError(f"No such file: {value}")
        container = is_video(value)
        content_type = (
            media.CONTENT_TYPES[container] if container else mimetypes.guess_type(path.name)[0] or "image/jpeg"
        )
        upload = self.call("POST", "/uploads", json={"content_type": content_type})
        with path.open("rb") as body:
            response = self.unsigned.put(upload["upload_url"], content=body, headers=upload["headers"])
        if response.status_code >= 300:
            raise CliError(f"Uploading {value} failed: {response.status_code}")
        return {"s3_key": upload["s3_key"]}

    def download(self, job_id: str, out: Path) -> Path:
        """Save a succeeded job's result to ``out`` (a directory, or a file path); returns the file written."""
        job = self.call("GET", f"/jobs/{job_id}")
        result = job.get("result")
        if job["status"] != "SUCCEEDED" or not result:
            raise CliError(f"Job {job_id} has no result (status {job['status']}).")
        extension = {"image/png": ".png", "image/webp": ".webp", "video/mp4": ".mp4"}.get(
            result["content_type"], ".jpg"
        )
        target = out / f"{job_id}{extension}" if out.is_dir() or not out.suffix else out
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.unsigned.stream("GET", result["download_url"]) as response, target.open("wb") as file:
            if response.status_code != 200:
                raise CliError(f"Downloading the result failed: {response.status_code}")
            for chunk in response.iter_bytes():
                file.write(chunk)
        return target

    def wait(self, job_id: str, *, timeout: float, interval: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends, showing each state as it changes, what a video job sent once it is known, and
        every :data:`HEARTBEAT_SECONDS` that it is still running; returns the final job."""
        started, last, told, said_at = time.monotonic(), None, False, 0.0
        while True:
            job = self.call("GET", f"/jobs/{job_id}")
            elapsed = time.monotonic() - started
            if job["status"] != last:
                last, said_at = job["status"], elapsed
                print(f"[{elapsed:6.1f} s] {job_id}  {last}", file=sys.stderr, flush=True)
            elif elapsed - said_at >= HEARTBEAT_SECONDS:
                said_at = elapsed
                print(f"[{elapsed:6.1f} s] {job_id}  still {last} at {job['provider']}", file=sys.stderr, flush=True)
            if not told and (job.get("media") or {}).get("sent"):
                told = True
                print(f"[{elapsed:6.1f} s] {job_id}  {describe_video(job['media'])}", file=sys.stderr, flush=True)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() - started > timeout:
                raise CliError(f"Job {job_id} did not end within {timeout:.0f} s (still {last}).")
            time.sleep(interval)


def is_video(value: str) -> str | None:
    """The container of a local video file by its content (``mp4``, ``mov``, ``webm``), of a URL by its name, or
    ``None`` for an image."""
    if value.startswith(("https://", "http://")):
        return "mp4" if value.split("?", 1)[0].lower().endswith(VIDEO_SUFFIXES) else None
    with Path(value).open("rb") as file:
        return media.sniff(file.read(media.SNIFF_BYTES))


def describe_video(info: dict[str, Any]) -> str:
    """One line on a video job's ``media``: what was sent, and what it was made from when that differs."""
    sent, source = info["sent"], info.get("source") or info["sent"]
    line = f"video sent: {sent['frames']} frames, {sent['width']}x{sent['height']}, {sent['duration']:.1f} s"
    if (sent["width"], sent["height"], sent["frames"]) != (source["width"], source["height"], source["frames"]):
        line += f" (fitted from {source['frames']} frames, {source['width']}x{source['height']})"
    if info.get("trimmed_to"):
        line += f", trimmed to {info['trimmed_to']:.1f} s"
    return line + (", with audio" if sent.get("audio_codec") else ", no audio")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceswap", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack-name", help="a deployed stack (default: the local stack)")
    parser.add_argument("--region", help="the deployed stack's region (default: your AWS configuration)")
    parser.add_argument(
        "--local-state",
        type=Path,
        default=Path(os.environ.get("FACESWAP_LOCAL_STATE_DIR", ".local")) / "stack.json",
        help=argparse.SUPPRESS,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="submit a job (local files are uploaded)")
    submit.add_argument(
        "--target",
        required=True,
        help="image or video (MP4, MOV, WebM) whose face is replaced: a file or an https URL",
    )
    submit.add_argument("--trim", action="store_true", help="a video too long for the provider is cut to fit")
    submit.add_argument("--swap", help="image that supplies the face: a file or an https URL")
    submit.add_argument(
        "--reference",
        help="choose the face to replace by this photo of the person (a file or an https URL; with --swap)",
    )
    submit.add_argument(
        "--face-map",
        nargs=2,
        action="append",
        metavar=("REFERENCE", "SWAP"),
        help="one pair of a face map (repeat for up to 4): the person in REFERENCE gets SWAP's face",
    )
    submit.add_argument("--provider")
    submit.add_argument("--task", choices=("face-swap", "multi-face-swap"))
    submit.add_argument("--swap-faces-index", help='multi-face-swap: e.g. "0"')
    submit.add_argument("--target-faces-index", help='multi-face-swap: e.g. "1" or "0,1"')
    submit.add_argument("--result-key", help="key under results/ in the results bucket")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    submit.add_argument("--download", type=Path, metavar="DIR_OR_FILE", help="with --wait: save the result here")
    submit.add_argument("--timeout", type=float, default=900)

    status = commands.add_parser("status", help="show a job")
    status.add_argument("job_id")
    wait = commands.add_parser("wait", help="show progress until a job ends")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, default=900)
    wait.add_argument("--download", type=Path, metavar="DIR_OR_FILE")
    listing = commands.add_parser("list", help="list jobs")
    listing.add_argument("--status", choices=("RECEIVED", "SUBMITTED", "SUCCEEDED", "FAILED", "TIMED_OUT"))
    listing.add_argument("--provider", help="only this provider's jobs")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--all", action="store_true", help="follow next_token through every page")
    retry = commands.add_parser("retry", help="re-run a failed job whose error is retryable")
    retry.add_argument("job_id")
    retry.add_argument("--wait", action="store_true")
    retry.add_argument("--timeout", type=float, default=900)
    console = commands.add_parser("console", help="the jobs console in your browser (served on 127.0.0.1)")
    console.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    console.add_argument("--no-browser", action="store_true", help="print the console's link, do not open it")
    download = commands.add_parser("download", help="save a succeeded job's result")
    download.add_argument("job_id")
    download.add_argument("--out", type=Path, default=Path("."))
    return parser


def _finish(client: ApiClient, job_id: str, args: argparse.Namespace) -> int:
    job = client.wait(job_id, timeout=args.timeout)
    print(json.dumps(job, indent=2))
    if job["status"] != "SUCCEEDED":
        return 1
    if getattr(args, "download", None):
        print(f"saved {client.download(job_id, args.download)}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Carry out one parsed command; returns the exit status."""
    client = (
        ApiClient.for_stack(args.stack_name, args.region)
        if args.stack_name
        else ApiClient.for_local_stack(args.local_state)
    )
    if args.command == "console":
        from faceswap_cli.console import serve

        return serve(client, port=args.port, open_browser=not args.no_browser)
    if args.command == "submit":
        if (args.swap is None) == (args.face_map is None):
            print("give --swap (optionally with --reference) or --face-map, not both", file=sys.stderr)
            return 2
        video = is_video(args.target) if Path(args.target).is_file() or "://" in args.target else None
        body: dict[str, Any] = {"target_video" if video else "target_image": client.image(args.target)}
        if args.swap is not None:
            body["swap_image"] = client.image(args.swap)
        if args.reference is not None:
            body["reference"] = client.image(args.reference)
        if args.face_map:
            body["face_map"] = [
                {"reference": client.image(reference), "swap_image": client.image(swap)}
                for reference, swap in args.face_map
            ]
        options = {
            k: v
            for k, v in (("swap_faces_index", args.swap_faces_index), ("target_faces_index", args.target_faces_index))
            if v is not None
        }
        if args.trim:
            options["trim"] = "true"
        body.update(
            {
                k: v
                for k, v in (
                    ("provider", args.provider),
                    ("task", args.task),
                    ("options", options or None),
                    ("result_key", args.result_key),
                    ("idempotency_key", args.idempotency_key),
                )
                if v is not None
            }
        )
        accepted = client.call("POST", "/jobs", json=body)
        print(json.dumps(accepted, indent=2))
        return _finish(client, accepted["job_id"], args) if args.wait else 0
    if args.command == "status":
        print(json.dumps(client.call("GET", f"/jobs/{args.job_id}"), indent=2))
        return 0
    if args.command == "wait":
        return _finish(client, args.job_id, args)
    if args.command == "list":
        params: dict[str, Any] = {
            "limit": args.limit,
            **({"status": args.status} if args.status else {}),
            **({"provider": args.provider} if args.provider else {}),
        }
        while True:
            page = client.call("GET", "/jobs", params=params)
            for job in page["jobs"]:
                print(
                    f"{job['job_id']}  {job['status']:<10} {job['provider']:<11} {job['created_at']}  "
                    f"{(job.get('error') or {}).get('code', '')}"
                )
            if not (args.all and page.get("next_token")):
                if page.get("next_token"):
                    print(f"more: --all, or next_token {page['next_token']}", file=sys.stderr)
                return 0
            params["next_token"] = page["next_token"]
    if args.command == "retry":
        accepted = client.call("POST", f"/jobs/{args.job_id}/retry")
        print(json.dumps(accepted, indent=2))
        return _finish(client, accepted["job_id"], args) if args.wait else 0
    print(f"saved {client.download(args.job_id, args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faceswap`` command."""
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except CliError as e:
        print(f"faceswap: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
