"""The jobs console (``faceswap console``) in a real headless Chromium (the system's, installed by ``make browser``),
against the local stack: the page drives the console over HTTP on loopback, the console the signed jobs API."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from conftest import FACES, Stack
from playwright.sync_api import Browser, Page, sync_playwright

from faceswap.aws.ratelimit import DynamoRateLimiter
from faceswap_cli.console import Console
from faceswap_cli.guidance import WHAT_TO_DO
from faceswap_cli.main import ApiClient
from faceswap_cli.sigv4 import SigV4
from faceswap_local.clips import make_clip
from faceswap_local.stack import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "console.png"
"""The jobs page as the README shows it, written by this module's last test."""
CHROMIUM_FLAGS = [
    # Root in CI needs no sandbox; the rest keep Chromium off the network it would otherwise try at start.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = int((60 + DynamoRateLimiter.LEASE_SECONDS) * 1000)
"""The longest wait for anything the page shows: a PiAPI job can wait for a share of the call ceiling that an earlier
test's execution environment holds, idle, until its lease ends (faceswap.aws.ratelimit, "What it costs in time")."""


@pytest.fixture(scope="module")
def client(stack: Stack) -> ApiClient:
    return ApiClient(stack.api_url, SigV4(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), REGION))


@pytest.fixture(scope="module")
def console(client: ApiClient) -> Iterator[Console]:
    console = Console(client).start()
    yield console
    console.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make browser` installs it from the system's packages"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A page that opened a link of the console (as `faceswap console` opens one), failing the test on a script
    error."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(console.link())
    page.wait_for_selector("body[data-loaded=jobs]", timeout=WAIT_MS)
    assert "token" not in page.url and console.session not in page.url, "the address holds no secret"
    yield page
    context.close()
    assert not errors, errors


def base(console: Console) -> str:
    return f"http://127.0.0.1:{console.port}/"


def open_view(page: Page, console: Console, hash_path: str, loaded: str) -> None:
    page.goto(f"{base(console)}#{hash_path}")
    page.wait_for_selector(f"body[data-loaded={loaded}]", timeout=WAIT_MS)


def submit_from_the_page(
    page: Page, console: Console, *, provider: str, target: Path, swap: Path, reference: Path | None = None
) -> str:
    """Fill the submit form and send it; returns the job id the page then shows."""
    open_view(page, console, "/submit", "submit")
    page.set_input_files("#target", target)
    page.set_input_files("#swap", swap)
    if reference is not None:
        page.set_input_files("#reference", reference)
    page.select_option("#provider", provider)
    page.click("#submit-button")
    page.wait_for_selector("body[data-loaded=job] #job-id", timeout=WAIT_MS)
    return page.inner_text("#job-id")


def images_loaded(page: Page, selector: str) -> None:
    """Wait until every image under ``selector`` has decoded (an image the console could not serve never does)."""
    page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
        timeout=WAIT_MS,
    )


def rows(page: Page) -> list[dict[str, str]]:
    return page.eval_on_selector_all("tr.job", "rows => rows.map((r) => ({...r.dataset}))")


def api_job(client: ApiClient, job_id: str) -> dict[str, Any]:
    return client.call("GET", f"/jobs/{job_id}")


def until(check: Callable[[], bool], timeout: float = WAIT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


class _Host(BaseHTTPRequestHandler):
    """Another server on loopback: answers whole bodies, logs nothing."""

    def answer(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PhotoHost(_Host):
    """Serves the shared photos over HTTP on loopback (the local stack takes loopback URL inputs), counting requests."""

    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.answer((FACES / Path(self.path).name).read_bytes(), "image/jpeg")


def test_a_url_input_is_named_on_the_page_and_never_fetched_by_the_console(
    page: Page, console: Console, client: ApiClient
) -> None:
    host = ThreadingHTTPServer(("127.0.0.1", 0), type("Host", (_PhotoHost,), {"requests": []}))
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{host.server_address[1]}/biden.jpg"
        body = {"target_image": {"url": url}, "swap_image": {"url": url.replace("biden", "obama")}}
        job_id = client.call("POST", "/jobs", json={**body, "provider": "selfhosted"})["job_id"]
        until(lambda: client.call("GET", f"/jobs/{job_id}")["status"] == "SUCCEEDED")
        fetched_by_the_pipeline = len(host.RequestHandlerClass.requests)  # type: ignore[attr-defined]

        open_view(page, console, f"/jobs/{job_id}", "job")
        images_loaded(page, "figure.big img")  # the result: the page has drawn every file it shows

        assert page.inner_text(".url-input").endswith(url)
        assert len(host.RequestHandlerClass.requests) == fetched_by_the_pipeline  # type: ignore[attr-defined]
    finally:
        host.shutdown()
        host.server_close()


def test_a_job_submitted_from_the_page_shows_its_result_thumbnail(
    page: Page, console: Console, client: ApiClient, stack: Stack
) -> None:
    job_id = submit_from_the_page(
        page, console, provider="selfhosted", target=FACES / "biden.jpg", swap=FACES / "obama.jpg"
    )

    page.wait_for_selector(".badge[data-status=SUCCEEDED]", timeout=WAIT_MS)
    images_loaded(page, "figure.big img")
    job = api_job(client, job_id)
    assert job["status"] == "SUCCEEDED" and job["source"] == "api"
    uploaded = stack.s3.get_object(Bucket=stack.input_bucket, Key=job["inputs"]["target"]["s3_uri"].split("/", 3)[3])
    assert uploaded["Body"].read() == (FACES / "biden.jpg").read_bytes(), "the upload went through whole"
    timeline = page.inner_text("ol.timeline")
    assert job["history"][0]["provider_task_id"] in timeline and "SUCCEEDED" in timeline
    with page.expect_download() as download:
        page.click("#download")
    saved = download.value.path()
    assert saved.stat().st_size == job["result"]["size"], "the download is the whole result"

    open_view(page, console, "/", "jobs")
    row = f'tr.job[data-job-id="{job_id}"]'
    page.wait_for_selector(row, timeout=WAIT_MS)
    images_loaded(page, f"{row} img")
    assert [img.get_attribute("data-file") for img in page.query_selector_all(f"{row} img")] == [
        "target",
        "swap_image",
        "result",
    ]


def test_a_failed_job_shows_its_code_and_what_to_do_and_its_retry_succeeds(
    page: Page, console: Console, client: ApiClient, stack: Stack
) -> None:
    stack.piapi.faults.result_expired = True
    failed_id = submit_from_the_page(
        page, console, provider="piapi", target=FACES / "obama.jpg", swap=FACES / "biden.jpg"
    )
    page.wait_for_selector(".badge[data-status=FAILED]", timeout=WAIT_MS)
    stack.piapi.faults.result_expired = False

    assert page.inner_text(".error .error-code") == "result_expired"
    assert WHAT_TO_DO["result_expired"] in page.inner_text(".error .what-to-do")
    page.click("#retry")
    page.wait_for_function(
        "(failed) => document.querySelector('#job-id') && document.querySelector('#job-id').textContent !== failed",
        arg=failed_id,
        timeout=WAIT_MS,
    )
    page.wait_for_selector(".badge[data-status=SUCCEEDED]", timeout=WAIT_MS)
    retried = api_job(client, page.inner_text("#job-id"))
    assert retried["retry_of"] == failed_id and retried["status"] == "SUCCEEDED"
    assert failed_id in page.inner_text("body"), "the retry links the job it re-ran"

    open_view(page, console, "/?status=FAILED", "jobs")
    row = f'tr.job[data-job-id="{failed_id}"]'
    page.wait_for_selector(row, timeout=WAIT_MS)
    assert page.inner_text(f"{row} .error-code") == "result_expired"


def test_a_job_with_a_reference_shows_the_chosen_face_boxed_on_the_target(
    page: Page, console: Console, client: ApiClient
) -> None:
    job_id = submit_from_the_page(
        page,
        console,
        provider="selfhosted",
        target=FACES / "obama_and_biden_side_by_side.jpg",
        swap=FACES / "obama.jpg",
        reference=FACES / "biden.jpg",
    )

    page.wait_for_selector(".badge[data-status=SUCCEEDED]", timeout=WAIT_MS)
    images_loaded(page, ".boxed img")
    (chosen,) = api_job(client, job_id)["chosen_faces"]
    width, height = chosen["image_size"]
    left, top, right, bottom = chosen["box"]
    drawn = page.eval_on_selector(
        ".boxed",
        """(frame) => {
            const outer = frame.getBoundingClientRect();
            const box = frame.querySelector('.box.chosen').getBoundingClientRect();
            return [(box.left - outer.left) / outer.width, (box.top - outer.top) / outer.height,
                    (box.right - outer.left) / outer.width, (box.bottom - outer.top) / outer.height];
        }""",
    )
    expected = [left / width, top / height, right / width, bottom / height]
    assert drawn == pytest.approx(expected, abs=0.01), "the box is drawn where the matcher chose the face"
    assert len(page.query_selector_all(".box.other")) == len(chosen["others"]) == 1
    captions = page.eval_on_selector_all(".figures figcaption", "captions => captions.map((c) => c.textContent)")
    assert captions == ["target", "pair 0: reference", "pair 0: swap face", "result"], "each file once"


def test_a_video_job_shows_its_player_and_before_and_after_frames(page: Page, console: Console, tmp_path: Path) -> None:
    video = make_clip(tmp_path / "clip.mp4", photo=(FACES / "biden.jpg").read_bytes(), width=480, height=360, fps=8)

    job_id = submit_from_the_page(page, console, provider="selfhosted", target=video, swap=FACES / "obama.jpg")

    page.wait_for_selector(".badge[data-status=SUCCEEDED]", timeout=WAIT_MS)
    images_loaded(page, "section.frames img")
    players = page.eval_on_selector_all("video", "videos => videos.map((v) => v.getAttribute('src').split('?')[0])")
    assert players == [f"/api/jobs/{job_id}/files/target", f"/api/jobs/{job_id}/files/result"]
    page.wait_for_function(
        "() => [...document.querySelectorAll('video')].every((v) => v.readyState >= 1 && v.duration > 0.5)",
        timeout=WAIT_MS,
    )


def test_the_job_list_filters_by_state_and_by_provider(
    page: Page, console: Console, client: ApiClient, stack: Stack
) -> None:
    # Its own jobs (besides any other test's): a selfhosted one SUCCEEDED, a piapi one FAILED.
    inputs = {"target_image": {"s3_key": "faces/biden.jpg"}, "swap_image": {"s3_key": "faces/obama.jpg"}}
    stack.upload("faces/biden.jpg", (FACES / "biden.jpg").read_bytes())
    stack.upload("faces/obama.jpg", (FACES / "obama.jpg").read_bytes())
    stack.piapi.faults.result_expired = True
    ended = {}
    for provider in ("selfhosted", "piapi"):
        job_id = client.call(
            "POST", "/jobs", json={**inputs, "provider": provider, "idempotency_key": f"filters-{provider}"}
        )["job_id"]
        until(lambda job_id=job_id: client.call("GET", f"/jobs/{job_id}")["status"] in ("SUCCEEDED", "FAILED"))
        ended[provider] = client.call("GET", f"/jobs/{job_id}")["status"]
    stack.piapi.faults.result_expired = False
    assert ended == {"selfhosted": "SUCCEEDED", "piapi": "FAILED"}
    open_view(page, console, "/", "jobs")

    def shown_after(choose: Callable[[], None]) -> list[dict[str, str]]:
        page.evaluate("delete document.body.dataset.loaded")
        choose()
        page.wait_for_selector("body[data-loaded=jobs]", timeout=WAIT_MS)
        return rows(page)

    failed = shown_after(lambda: page.select_option("#filter-status", "FAILED"))
    assert failed and {row["status"] for row in failed} == {"FAILED"}
    piapi_failed = shown_after(lambda: page.select_option("#filter-provider", "piapi"))
    assert piapi_failed and {(row["status"], row["provider"]) for row in piapi_failed} == {("FAILED", "piapi")}
    selfhosted = shown_after(lambda: page.select_option("#filter-provider", "selfhosted"))
    assert all(row["provider"] == "selfhosted" and row["status"] == "FAILED" for row in selfhosted)
    every_state = shown_after(lambda: page.select_option("#filter-status", ""))
    assert {row["provider"] for row in every_state} == {"selfhosted"}
    assert "SUCCEEDED" in {row["status"] for row in every_state}
    assert page.url.endswith("#/?provider=selfhosted"), "a filtered list has its own address"


class _ForeignSite(_Host):
    """Another site's page (another origin on loopback) that tries to drive the console from the user's browser."""

    console_origin = ""

    def do_GET(self) -> None:
        page = f"""<!doctype html><body><script>
            const target = {self.console_origin!r};
            fetch(target + "/api/jobs", {{method: "POST", mode: "no-cors",
                headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{target_image: {{s3_key: "x"}}}})}})
              .catch(() => null)
              .finally(() => {{
                const image = new Image();
                image.src = target + "/api/jobs?from=img";
                document.body.append(image);
              }});
        </script></body>"""
        self.answer(page.encode(), "text/html")


def test_requests_from_another_origin_or_host_are_refused(page: Page, console: Console) -> None:
    own = f"127.0.0.1:{console.port}"
    with httpx.Client(base_url=f"http://{own}", headers={"X-Console-Session": console.session}) as http:
        assert http.get("/api/jobs", params={"limit": 1}).status_code == 200, "its own page's request is served"
        foreign_origin = http.post("/api/jobs", json={}, headers={"Origin": "https://attacker.example"})
        assert (foreign_origin.status_code, foreign_origin.json()["code"]) == (403, "forbidden_origin")
        cross_site = http.get("/api/jobs", headers={"Sec-Fetch-Site": "cross-site"})
        assert (cross_site.status_code, cross_site.json()["code"]) == (403, "forbidden_origin")
        rebound = http.get("/api/jobs", headers={"Host": f"attacker.example:{console.port}"})
        assert (rebound.status_code, rebound.json()["code"]) == (403, "forbidden_host")
    without_session = httpx.get(f"http://{own}/api/jobs")
    assert (without_session.status_code, without_session.json()["code"]) == (401, "console_session_required")

    # In the browser where the console is open, a page from another origin (another port of the same host).
    handler = type("Foreign", (_ForeignSite,), {"console_origin": f"http://{own}"})
    foreign = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        refused_before = len(console.refused)
        page.goto(f"http://127.0.0.1:{foreign.server_address[1]}/")
        until(lambda: len(console.refused) >= refused_before + 2)
        assert set(list(console.refused)[refused_before:]) >= {
            ("POST", "/api/jobs", "forbidden_origin"),
            ("GET", "/api/jobs", "forbidden_origin"),
        }
    finally:
        foreign.shutdown()
        foreign.server_close()


def test_the_jobs_page_is_captured_for_the_readme(page: Page, console: Console) -> None:
    """Writes docs/console.png (the README's picture): the jobs this module ran, every state."""
    page.wait_for_selector("tr.job", timeout=WAIT_MS)
    page.wait_for_function(  # other modules' jobs name inputs that were never uploaded: "no preview" for those
        "() => [...document.querySelectorAll('tr.job img')].every((i) => i.complete)", timeout=WAIT_MS
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
