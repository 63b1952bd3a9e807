"""``python -m faceswap_local up | env | demo | stress``: run the local stack.

- ``up``: start the stack and keep it running until interrupted (Ctrl-C, or ``make down`` from another
  terminal); prints and writes ``.local/stack.json`` (endpoint, credentials, bucket, table, API and bus names).
- ``env``: print ``export`` lines for a shell, from ``.local/stack.json`` (``eval "$(… env)"``).
- ``demo``: see :mod:`faceswap_local.demo`.
- ``stress``: N uploads at once under injected provider faults, checked for lost or duplicated work; see
  :mod:`faceswap_local.stress` (``make stress N=100``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from faceswap_local.app import ROOT, LocalStack

STATE_DIR = Path(os.environ.get("FACESWAP_LOCAL_STATE_DIR") or ROOT / ".local")
"""Where ``up`` writes ``stack.json`` and its pid (``make down`` reads the pid)."""
STACK_FILE = STATE_DIR / "stack.json"
PID_FILE = STATE_DIR / "stack.pid"


def up() -> int:
    """Start the stack, write ``.local/stack.json`` and wait for SIGINT/SIGTERM; then stop everything."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    stack = LocalStack().start()
    try:
        info = stack.info()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        _write_whole(PID_FILE, str(os.getpid()))
        _write_whole(STACK_FILE, json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))
        print(
            f"\nLocal stack running; details in {STACK_FILE}. In another terminal:\n"
            f'  eval "$(.venv/bin/python -m faceswap_local env)"\n'
            f"  aws s3 cp ../shared/faces/obama.jpg s3://$INPUT_BUCKET/faces/obama.jpg\n"
            f"  aws s3 cp ../shared/faces/biden.jpg s3://$INPUT_BUCKET/incoming/obama/biden.jpg\n"
            f"and watch the jobs in your browser: .venv/bin/faceswap console\n"
            f"Stop with Ctrl-C or `make down`.",
            flush=True,
        )
        stopping.wait()
    finally:
        stack.stop()
        PID_FILE.unlink(missing_ok=True)
        STACK_FILE.unlink(missing_ok=True)
        print("local stack stopped", flush=True)
    return 0


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` so that a reader sees it absent or whole, never empty or half-written.

    Readers (``env``, ``make down``, the CLI, tests) wait for the file to exist; ``write_text`` creates it empty
    before writing, so it is written beside and renamed into place (``os.replace`` is atomic on POSIX).
    """
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def env() -> int:
    """Print shell exports for the running stack (AWS CLI endpoint and credentials, resource names)."""
    if not STACK_FILE.exists():
        print("the local stack is not running (start it with `make up`)", file=sys.stderr)
        return 1
    info = json.loads(STACK_FILE.read_text())
    exports = {
        "AWS_ENDPOINT_URL": info["aws_endpoint_url"],
        "AWS_REGION": info["region"],
        "AWS_DEFAULT_REGION": info["region"],
        "AWS_ACCESS_KEY_ID": info["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": info["aws_secret_access_key"],
        "INPUT_BUCKET": info["input_bucket"],
        "RESULTS_BUCKET": info["results_bucket"],
        "JOBS_TABLE": info["jobs_table"],
        "API_URL": info["api_url"],
        "EVENT_BUS": info["event_bus"],
    }
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``up``, ``env``, ``demo`` or ``stress``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("up", "env", "demo", "stress"):
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "up":
        return up()
    if args[0] == "env":
        return env()
    if args[0] == "stress":
        from faceswap_local.stress import main as stress

        return stress(args[1:])
    from faceswap_local.demo import main as demo

    return demo(args[1:])


if __name__ == "__main__":
    sys.exit(main())
