"""``python -m faceswap_local.smoke [--stack-name NAME]``: one real job end to end on a stack, after every deploy.

``make smoke [STACK=name]`` runs this. It checks what a deploy can break and the local stack cannot show:

1. uploads the shared face pair (``faces/smoke.jpg``, then a target under ``incoming/smoke/``);
2. waits for the job to be SUCCEEDED, reading it through the jobs API signed with SigV4 (``GET /jobs/{job_id}``),
   as the CLI does;
3. downloads the result and checks its sha256 against the job row;
4. sends one alarm (``<stack>-jobs-swept``) to ALARM with ``set-alarm-state`` and back to OK, and reads its history
   (CloudWatch ``DescribeAlarmHistory``; locally, where moto does not keep alarm history, the alarm's state);

and prints what it found. Exit status 0 when every step passed, 1 otherwise.

- Against a deployed stack (``--stack-name``): names from the stack's Outputs; credentials and region from the
  environment, as for the AWS CLI. The job is a real one on the stack's ``DefaultProvider`` (it is paid for).
- Against the local stack (no ``--stack-name``): from ``.local/stack.json``, written by ``make up``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.credentials import Credentials

from faceswap.ids import job_id_for
from faceswap_cli.sigv4 import SigV4
from faceswap_local.app import ROOT

FACES = ROOT.parent / "shared" / "faces"
STACK_FILE = Path(os.environ.get("FACESWAP_LOCAL_STATE_DIR") or ROOT / ".local") / "stack.json"
"""Written by ``make up`` (as in :mod:`faceswap_local.__main__`)."""
SMOKE_ALARM = "jobs-swept"
"""The alarm the smoke test sends to ALARM and back (``<stack>-jobs-swept``): nothing else reads its state."""


class SmokeError(Exception):
    """A step of the smoke test failed; the message says which and what was seen."""


@dataclass
class Target:
    """Where the smoke test acts: names, the jobs API's URL, a boto3 session, and how to sign API calls."""

    stack_name: str
    input_bucket: str
    results_bucket: str
    api_url: str
    session: boto3.session.Session
    endpoint_url: str | None = None

    def client(self, service: str) -> Any:
        """A boto3 client for the target (the moto server's endpoint, locally)."""
        return self.session.client(service, endpoint_url=self.endpoint_url)


def deployed(stack_name: str) -> Target:
    """The target of a deployed stack, from its Outputs. Raises ``SmokeError`` if it cannot be read."""
    session = boto3.session.Session()
    try:
        stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    except Exception as e:  # no credentials, no region, no such stack
        raise SmokeError(f"stack {stack_name!r} could not be read: {e}") from e
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    try:
        return Target(
            stack_name=stack_name,
            input_bucket=outputs["InputBucketName"],
            results_bucket=outputs["ResultsBucketName"],
            api_url=outputs["HttpApiUrl"].rstrip("/"),
            session=session,
        )
    except KeyError as e:
        raise SmokeError(f"stack {stack_name!r} has no output {e}; is it a faceswap stack?") from e


def local(stack_file: Path = STACK_FILE) -> Target:
    """The target of ``make up``, from ``.local/stack.json``. Raises ``SmokeError`` if it is not running."""
    if not stack_file.is_file():
        raise SmokeError("the local stack is not running (start it with `make up`)")
    info = json.loads(stack_file.read_text())
    session = boto3.session.Session(
        aws_access_key_id=info["aws_access_key_id"],
        aws_secret_access_key=info["aws_secret_access_key"],
        region_name=info["region"],
    )
    return Target(
        stack_name=info["stack_name"],
        input_bucket=info["input_bucket"],
        results_bucket=info["results_bucket"],
        api_url=info["api_url"],
        session=session,
        endpoint_url=info["aws_endpoint_url"],
    )


def run(target: Target, *, timeout: float = 180.0, say: Any = print) -> dict[str, Any]:
    """Run the smoke test's steps on ``target``; returns what was found. Raises ``SmokeError`` at the first step
    that fails."""
    s3 = target.client("s3")
    credentials = target.session.get_credentials()
    if credentials is None:
        raise SmokeError("no AWS credentials to sign the jobs API's requests with")
    frozen = credentials.get_frozen_credentials()
    auth = SigV4(Credentials(frozen.access_key, frozen.secret_key, frozen.token), target.session.region_name)
    found: dict[str, Any] = {"stack": target.stack_name}

    key = f"incoming/smoke/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.jpg"
    s3.put_object(Bucket=target.input_bucket, Key="faces/smoke.jpg", Body=(FACES / "obama.jpg").read_bytes())
    put = s3.put_object(Bucket=target.input_bucket, Key=key, Body=(FACES / "biden.jpg").read_bytes())
    say(f"1. uploaded s3://{target.input_bucket}/{key}")
    # S3 events name the object's version on a versioned bucket (moto's name its ETag only): try both ids.
    candidates = [
        job_id_for("s3", target.input_bucket, key, marker)
        for marker in (put.get("VersionId"), put["ETag"].strip('"'))
        if marker
    ]

    started, job = time.monotonic(), None
    with httpx.Client(base_url=target.api_url, auth=auth, timeout=30) as api:
        while time.monotonic() - started < timeout:
            for job_id in candidates:
                answer = api.get(f"/jobs/{job_id}")
                if answer.status_code == 200:
                    job = answer.json()
                elif answer.status_code != 404:
                    raise SmokeError(f"GET /jobs/{job_id} answered {answer.status_code}: {answer.text[:200]}")
            if job is not None and job["status"] in ("SUCCEEDED", "FAILED", "TIMED_OUT"):
                break
            time.sleep(2)
    if job is None or job["status"] != "SUCCEEDED":
        raise SmokeError(f"the job did not succeed in {timeout:.0f} s: {job}")
    found.update(job_id=job["job_id"], provider=job["provider"], seconds=round(time.monotonic() - started, 1))
    say(f"2. job {job['job_id']} SUCCEEDED on {job['provider']} in {found['seconds']} s (jobs API, SigV4)")

    result = job["result"]
    bucket, result_key = result["s3_uri"].removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=result_key)["Body"].read()
    digest = hashlib.sha256(body).hexdigest()
    if digest != result["sha256"]:
        raise SmokeError(f"the result's sha256 {digest} is not the job's {result['sha256']}")
    found.update(result=result["s3_uri"], result_bytes=len(body), sha256=digest)
    say(f"3. result {result['s3_uri']}: {len(body):,} bytes, sha256 as recorded")

    found["alarm"] = alarm_round_trip(
        target.client("cloudwatch"),
        f"{target.stack_name}-{SMOKE_ALARM}",
        history=target.endpoint_url is None,  # moto keeps no alarm history
    )
    say(f"4. alarm {found['alarm']['name']}: {found['alarm']['seen']}")
    return found


def alarm_round_trip(cloudwatch: Any, name: str, *, history: bool) -> dict[str, Any]:
    """Set alarm ``name`` to ALARM and back to OK; what its history (``history``; else its state) showed."""
    reason = f"make smoke {uuid.uuid4().hex[:8]}"
    try:
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason=reason)
        state = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        if not state or state[0]["StateValue"] != "ALARM":
            raise SmokeError(f"alarm {name} did not go to ALARM: {state}")
        observed = "state ALARM (the local stack keeps no alarm history)"
        if history:
            seen: list[str] = []
            for _ in range(10):  # the history is written shortly after the change
                items = cloudwatch.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate", MaxRecords=10)
                seen = [item["HistorySummary"] for item in items.get("AlarmHistoryItems", [])]
                if any("to ALARM" in summary for summary in seen):
                    break
                time.sleep(2)
            else:
                raise SmokeError(f"alarm {name}'s history shows no move to ALARM: {seen}")
            observed = f"history: {seen[0]}"
    finally:
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason=f"{reason}: done")
    return {"name": name, "seen": observed}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="make smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-name", help="a deployed stack (default: the local stack of `make up`)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the job")
    args = parser.parse_args(argv)
    try:
        target = deployed(args.stack_name) if args.stack_name else local()
        found = run(target, timeout=args.timeout)
    except SmokeError as e:
        print(f"make smoke: FAILED: {e}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2))
    print("make smoke: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
