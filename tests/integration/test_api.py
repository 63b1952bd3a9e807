"""The jobs API, EventBridge integration and the CLI, over real HTTP against the local stack."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from conftest import FACES, Stack
from openapi_spec_validator import validate as validate_openapi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from faceswap.lifecycle import JobState
from faceswap_cli.sigv4 import SigV4
from faceswap_local.stack import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "events" / "schemas"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client signing with the local stack's credentials, as the CLI does."""
    auth = SigV4(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), REGION)
    with httpx.Client(base_url=stack.api_url, auth=auth, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """Serves the shared photos over HTTP on loopback (the local stack allows loopback image URLs)."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = FACES / Path(Request(environ).path).name
        response = Response(path.read_bytes(), content_type="image/jpeg") if path.is_file() else Response(status=404)
        return response(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def wait_job(api: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("SUCCEEDED", "FAILED", "TIMED_OUT"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


def b64(name: str) -> str:
    return base64.b64encode((FACES / name).read_bytes()).decode()


def test_submit_by_url_succeeds(api: httpx.Client, image_server: str) -> None:
    response = api.post(
        "/jobs",
        json={
            "target_image": {"url": f"{image_server}/biden.jpg"},
            "swap_image": {"url": f"{image_server}/obama.jpg"},
            "provider": "selfhosted",
        },
    )

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status_url"].endswith(f"/jobs/{accepted['job_id']}")
    job = wait_job(api, accepted["job_id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["source"] == "api" and job["result"]["size"] > 0
    downloaded = httpx.get(job["result"]["download_url"]).content
    assert len(downloaded) == job["result"]["size"]


def test_submit_by_base64_succeeds_and_repeats_are_one_job(api: httpx.Client) -> None:
    body = {
        "target_image": {"base64": b64("obama.jpg")},
        "swap_image": {"base64": b64("biden.jpg")},
        "provider": "piapi",
    }

    first = api.post("/jobs", json=body).json()
    second = api.post("/jobs", json=body).json()

    assert first["job_id"] == second["job_id"]
    job = wait_job(api, first["job_id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["provider"] == "piapi"


def test_submit_by_presigned_upload_succeeds(api: httpx.Client) -> None:
    keys = []
    for name in ("biden.jpg", "obama.jpg"):
        upload = api.post("/uploads", json={"content_type": "image/jpeg"})
        assert upload.status_code == 201, upload.text
        grant = upload.json()
        put = httpx.put(grant["upload_url"], content=(FACES / name).read_bytes(), headers=grant["headers"])
        assert put.status_code == 200
        keys.append(grant["s3_key"])

    accepted = api.post("/jobs", json={"target_image": {"s3_key": keys[0]}, "swap_image": {"s3_key": keys[1]}})

    assert accepted.status_code == 202
    job = wait_job(api, accepted.json()["job_id"])
    assert job["status"] == "SUCCEEDED"
    # What went in, as the API shows it: each input's own bytes behind its presigned URL; the task made, and what
    # brought the provider's answer.
    for name, shown in (("biden.jpg", job["inputs"]["target"]), ("obama.jpg", job["inputs"]["swap_image"])):
        assert httpx.get(shown["download_url"]).content == (FACES / name).read_bytes()
    assert [attempt["provider"] for attempt in job["history"]] == [job["provider"]]
    assert job["history"][0]["provider_task_id"] and job["finished_by"] in ("webhook", "check")
    listed = api.get("/jobs", params={"status": "SUCCEEDED", "limit": 100}).json()["jobs"]
    assert all(not (j["inputs"]["target"] or {}).get("download_url") for j in listed), "a list presigns nothing"


def test_unsigned_and_wrongly_signed_requests_are_refused(stack: Stack) -> None:
    unsigned = httpx.get(f"{stack.api_url}/jobs")
    wrong_key = httpx.get(f"{stack.api_url}/jobs", auth=SigV4(Credentials(ACCESS_KEY_ID, "not-the-secret"), REGION))
    other_user = httpx.get(f"{stack.api_url}/jobs", auth=SigV4(Credentials("AKIAOTHER", SECRET_ACCESS_KEY), REGION))

    assert [r.status_code for r in (unsigned, wrong_key, other_user)] == [403, 403, 403]
    assert unsigned.json() == {"message": "Forbidden"}


def test_tampered_body_breaks_the_signature(stack: Stack) -> None:
    signed = httpx.Request("POST", f"{stack.api_url}/jobs", json={"target_image": {"s3_key": "a.jpg"}})
    flow = SigV4(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), REGION).auth_flow(signed)
    request = next(flow)
    tampered = httpx.post(
        str(request.url),
        content=b'{"target_image": {"s3_key": "b.jpg"}}',
        headers={k: v for k, v in request.headers.items() if k.lower() != "content-length"},
    )
    assert tampered.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ({"swap_image": {"s3_key": "faces/obama.jpg"}}, "target_image"),
        (
            {"target_image": {"s3_key": "x.jpg"}, "swap_image": {"s3_key": "faces/obama.jpg"}, "colour": "blue"},
            "colour",
        ),
        ({"target_image": {"s3_key": "../secrets.jpg"}, "swap_image": {"s3_key": "faces/obama.jpg"}}, "target_image"),
        ({"target_image": {"base64": "!!!"}, "swap_image": {"s3_key": "faces/obama.jpg"}}, "target_image"),
        ({"target_image": {"s3_key": "x.jpg"}, "swap_image": {"s3_key": "y.jpg"}, "provider": "nobody"}, "provider"),
        ("[" * 40_000, "body"),
        ({"target_image": {"s3_key": "x.jpg"}, "task": "face-swap"}, "swap_image"),
        (
            {"target_image": {"s3_key": "x.jpg"}, "swap_image": {"s3_key": "y.jpg"}, "task": "same-image-swap"},
            "swap_image",
        ),
    ],
    ids=[
        "malformed-json",
        "missing-image",
        "unknown-field",
        "path-traversal",
        "bad-base64",
        "unknown-provider",
        "nested-too-deeply",
        "face-swap-without-swap-image",
        "same-image-swap-with-swap-image",
    ],
)
def test_bad_request_is_400_with_code_naming_the_field(api: httpx.Client, body: Any, field: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = api.post("/jobs", content=content, headers={"content-type": "application/json"})

    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    assert field in error["message"]


def test_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get(f"/jobs/{'f' * 32}")

    assert response.status_code == 404
    assert response.json()["code"] == "job_not_found"


def test_listing_pages_through_every_job_once(api: httpx.Client, stack: Stack) -> None:
    created: set[str] = set()
    for i in range(5):
        response = api.post(
            "/jobs",
            json={
                "target_image": {"s3_key": f"listing/{i}.jpg"},
                "swap_image": {"s3_key": "faces/obama.jpg"},
                "idempotency_key": f"listing-{i}",
            },
        )
        assert response.status_code == 202, response.text
        created.add(response.json()["job_id"])
    # POST /jobs records each job before it answers 202: every row is in the table now.
    all_ids = {i["job_id"]["S"] for i in stack.ddb.scan(TableName=stack.jobs_table, ConsistentRead=True)["Items"]}
    assert created <= all_ids

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = api.get("/jobs", params=params).json()
        pages += 1
        assert len(page["jobs"]) <= 2
        seen += [job["job_id"] for job in page["jobs"]]
        if not page["next_token"]:
            break
        params["next_token"] = page["next_token"]

    assert sorted(seen) == sorted(all_ids) and len(seen) == len(set(seen))
    assert pages >= 3

    def providers(**params: Any) -> set[str]:
        found: set[str] = set()
        params["limit"] = 100
        while True:
            page = api.get("/jobs", params=params).json()
            found |= {job["provider"] for job in page["jobs"]}
            if not page["next_token"]:
                return found
            params["next_token"] = page["next_token"]

    everyone = providers()
    assert len(everyone) > 1, everyone
    for name in everyone:
        assert providers(provider=name) == {name}
    assert providers(provider="no-such-provider") == set()
    failed = api.get("/jobs", params={"status": "FAILED", "limit": 100}).json()["jobs"]
    assert failed and all(job["status"] == "FAILED" for job in failed)
    assert api.get("/jobs", params={"next_token": "bm90LWEtdG9rZW4"}).status_code == 400


def test_retry_reruns_a_failed_retryable_job(api: httpx.Client, stack: Stack) -> None:
    stack.piapi.faults.result_expired = True
    body = {
        "target_image": {"base64": b64("biden.jpg")},
        "swap_image": {"base64": b64("obama.jpg")},
        "provider": "piapi",
        "idempotency_key": "retry-me",
    }
    failed = wait_job(api, api.post("/jobs", json=body).json()["job_id"])
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "result_expired"
    assert failed["error"]["retryable"] is True
    stack.piapi.faults.result_expired = False

    retried = api.post(f"/jobs/{failed['job_id']}/retry")

    assert retried.status_code == 202
    job = wait_job(api, retried.json()["job_id"])
    assert job["status"] == "SUCCEEDED" and job["retry_of"] == failed["job_id"]
    again = api.post(f"/jobs/{job['job_id']}/retry")
    assert again.status_code == 409 and again.json()["code"] == "job_not_retryable"


def test_job_requested_event_leads_to_a_result(stack: Stack) -> None:
    stack.upload("photos/event/biden.jpg", (FACES / "biden.jpg").read_bytes())
    detail = {
        "target_image": {"s3_key": "photos/event/biden.jpg"},
        "swap_image": {"s3_key": "faces/obama.jpg"},
        "provider": "selfhosted",
        "idempotency_key": "event-job-1",
    }
    jsonschema.validate(
        {
            "version": "0",
            "id": "1",
            "detail-type": "Job Requested",
            "source": "tests",
            "account": "1",
            "time": "t",
            "region": REGION,
            "resources": [],
            "detail": detail,
        },
        json.loads((SCHEMAS / "job_requested.schema.json").read_text()),
    )
    events = stack.local.client("events")

    events.put_events(
        Entries=[
            {
                "Source": "tests",
                "DetailType": "Job Requested",
                "Detail": json.dumps(detail),
                "EventBusName": stack.local.info()["event_bus"],
            }
        ]
    )

    job = stack.wait_for("photos/event/biden.jpg")
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.source == "event"


def test_job_succeeded_event_matches_its_schema(api: httpx.Client, stack: Stack) -> None:
    body = {
        "target_image": {"base64": b64("biden.jpg")},
        "swap_image": {"base64": b64("obama.jpg")},
        "idempotency_key": "schema-check",
    }
    job = wait_job(api, api.post("/jobs", json=body).json()["job_id"])
    assert job["status"] == "SUCCEEDED"

    delivered = [e for e in stack.events() if e["detail"]["job_id"] == job["job_id"]]

    assert len(delivered) == 1
    jsonschema.validate(delivered[0], json.loads((SCHEMAS / "job_succeeded.schema.json").read_text()))
    failures = [e for e in stack.events() if e["detail-type"] == "Job Failed"]
    assert failures, "earlier tests ended jobs FAILED"
    for event in failures:
        jsonschema.validate(event, json.loads((SCHEMAS / "job_failed.schema.json").read_text()))


class _RequestsSigV4(requests.auth.AuthBase):
    """SigV4 for ``requests`` (schemathesis's HTTP client), with botocore's signer."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        aws = AWSRequest(
            method=request.method,
            url=request.url,
            data=body.encode() if isinstance(body, str) else body,
            headers={k: v for k, v in request.headers.items() if k.lower() == "content-type"},
        )
        SigV4Auth(ReadOnlyCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None), "execute-api", REGION).add_auth(aws)
        request.headers.update({k: aws.headers[k] for k in ("Authorization", "X-Amz-Date")})
        return request


def test_openapi_document_is_valid_and_the_api_conforms_to_it(api: httpx.Client, stack: Stack) -> None:
    document = api.get("/openapi.json").json()
    validate_openapi(document)
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/retry", "/uploads"} <= set(document["paths"])
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    session.auth = _RequestsSigV4()
    ran: list[str] = []
    failures: list[str] = []

    _run_schemathesis(schema, session, stack.api_url, ran, failures)
    print(f"schemathesis ran {len(ran)} cases over {len(set(ran))} operations")
    assert len(set(ran)) >= 5
    assert not failures, "\n".join(failures[:5])


def _run_schemathesis(
    schema: Any, session: requests.Session, base_url: str, ran: list[str], failures: list[str]
) -> None:
    """Generate cases for every operation with schemathesis and validate each response against the spec."""
    from hypothesis import HealthCheck, given, settings

    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            ran.append(case.operation.label)
            response = case.call(base_url=base_url, session=session)
            try:
                # Every check except "schema-valid data is accepted": next_token is opaque, so a string the API
                # did not issue is schema-valid yet rightly refused (400 invalid_request).
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            except Exception as error:
                failures.append(f"{case.operation.label}: {str(error)[:500]}")

        run()


def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``faceswap <args>`` against the local stack (its state written for the CLI to read)."""
    state = tmp_path / "stack.json"
    state.write_text(json.dumps(stack.local.info()))
    return subprocess.run(
        [sys.executable, "-m", "faceswap_cli.main", "--local-state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_submit_wait_downloads_the_result(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"

    run = cli(
        stack,
        tmp_path,
        "submit",
        "--target",
        str(FACES / "biden.jpg"),
        "--swap",
        str(FACES / "obama.jpg"),
        "--wait",
        "--download",
        str(out),
    )

    assert run.returncode == 0, run.stderr
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].stat().st_size > 10_000
    assert "SUCCEEDED" in run.stderr


def test_cli_submit_with_a_face_map_swaps_the_people_it_names(stack: Stack, tmp_path: Path) -> None:
    run = cli(
        stack,
        tmp_path,
        "submit",
        "--target",
        str(FACES / "obama_and_biden_side_by_side.jpg"),
        "--face-map",
        str(FACES / "biden.jpg"),
        str(FACES / "obama.jpg"),
        "--provider",
        "selfhosted",
        "--wait",
    )
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout[run.stdout.rindex('{\n  "job_id"') :])
    (chosen,) = job["chosen_faces"]
    assert chosen["box"][0] > 1126 / 2 and chosen["method"] == "native"  # Biden, on the right


def test_inline_images_over_what_one_request_carries_are_refused_413_with_a_pointer_to_uploads(
    api: httpx.Client,
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * (2150 * 1024 // 256)  # 2.1 MiB each, 4.2 MiB together
    body = {
        "target_image": {"base64": base64.b64encode(jpeg).decode()},
        "swap_image": {"base64": base64.b64encode(jpeg[::-1]).decode()},
    }
    answer = api.post("/jobs", json=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "payload_too_large" and "POST /uploads" in answer.json()["message"]

    far_over = {"target_image": {"base64": base64.b64encode(jpeg * 3).decode()}, "swap_image": body["swap_image"]}
    answer = api.post("/jobs", json=far_over)  # an event over Lambda's 6 MB: refused before the function
    assert answer.status_code == 413


def test_a_face_map_through_the_jobs_api_shows_the_chosen_face_and_its_event_follows_the_schema(
    api: httpx.Client, stack: Stack
) -> None:
    body = {
        "target_image": {"base64": b64("obama_and_biden_side_by_side.jpg")},
        "swap_image": {"base64": b64("obama.jpg")},
        "reference": {"base64": b64("biden.jpg")},
        "provider": "selfhosted",
    }
    job = wait_job(api, api.post("/jobs", json=body).json()["job_id"])
    assert job["status"] == "SUCCEEDED", job
    (chosen,) = job["chosen_faces"]
    assert chosen["box"][0] > 1126 / 2 and chosen["similarity"] >= 80  # Biden is the right-hand face
    assert [sorted(pair) for pair in job["face_map"]] == [["reference", "swap_image"]]
    (event,) = [e for e in stack.events() if e["detail"]["job_id"] == job["job_id"]]
    jsonschema.validate(event, json.loads((SCHEMAS / "job_succeeded.schema.json").read_text()))
    assert event["detail"]["chosen_faces"] == job["chosen_faces"]
