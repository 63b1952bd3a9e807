"""Benchmark 2: memory and speed of keeping a large result, through the pipeline's own code path.

Three processes, so the measured one holds nothing it would not hold in a function:

- a **moto server** (``python -m moto.server``) stands in for S3;
- a **byte server** (``python bench/result_memory.py serve <port>``, werkzeug) generates the result's bytes in
  1 MiB chunks on request (``GET /blob/<bytes>``: a PNG signature, then a repeated pseudo-random block);
- the **collector**, a fresh process per size (``python bench/result_memory.py collect <spec>``), runs
  ``faceswap.fetch.ResultFetcher.open`` + ``faceswap.aws.s3.S3ObjectStore.store_result`` as ``collect`` does.

The collector warms up (one 9 MiB result: a two-part multipart upload), returns freed memory to the OS
(``malloc_trim``), resets its peak RSS (``/proc/self/clear_refs``), then stores the result; the figure is
the peak RSS (``VmHWM``) minus the RSS before. Throughput is bytes / seconds of the whole copy (download and
upload), median of the repeats. The baseline is another fresh process with the same bytes in memory,
uploaded with boto3's ``upload_fileobj`` (default ``TransferConfig``); only the upload is timed. A third
process per size only downloads (``ResultFetcher``, hashing, no upload), to tell the download's share of the
memory from the upload's.

Video results (:func:`measure_video_copy`) are kept from a file (the poller checks a video in ``/tmp`` first): mode
``file`` stores a file written beforehand with ``S3ObjectStore.store_result_file`` (parts in flight), against the same
``upload_fileobj`` baseline; only the upload is timed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
CHUNK_BYTES = MIB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACCESS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret", "region_name": "us-east-1"}
BUCKET = "bench-results"
WARMUP_BYTES = 9 * MIB


def blob_chunks(size: int) -> Iterator[bytes]:
    """The benchmark's result of ``size`` bytes, in 1 MiB chunks: PNG signature, then a repeated block."""
    block = random.Random(0).randbytes(CHUNK_BYTES)
    sent = 0
    while sent < size:
        chunk = block[: min(CHUNK_BYTES, size - sent)]
        if sent == 0:
            chunk = PNG_SIGNATURE + chunk[len(PNG_SIGNATURE) :]
        sent += len(chunk)
        yield chunk


# ----------------------------------------------------------------------------------------- measured process


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs``); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _settle() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def race(spec: dict[str, Any]) -> dict[str, Any]:
    """In one process, ``repeats`` times each and taking turns (so both meet the S3 server in the same state): keep a
    file of ``size`` bytes with ``store_result_file`` (hashed beforehand, as the collector hashes a result as it
    arrives) and upload the same bytes from memory with ``upload_fileobj``; MiB/s of each, median."""
    import boto3

    from faceswap.aws.s3 import S3ObjectStore

    s3 = boto3.client("s3", endpoint_url=spec["s3"], **ACCESS)
    store = S3ObjectStore(s3)
    size, repeats = spec["size"], spec["repeats"]
    data = b"".join(blob_chunks(size))
    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(data)
        file.flush()
        sha256 = hashlib.sha256(data).hexdigest()
        speeds: dict[str, list[float]] = {"file": [], "boto3": []}
        for i in range(repeats + 1):  # the first round warms both up and is not counted
            for mode in ("boto3", "file") if i % 2 else ("file", "boto3"):
                started = time.perf_counter()
                if mode == "file":
                    store.store_result_file(
                        BUCKET, f"race/{i}", file.name, content_type="video/mp4", job_id=f"race-{i}", sha256=sha256
                    )
                else:
                    s3.upload_fileobj(io.BytesIO(data), BUCKET, f"race-boto3/{i}")
                if i:
                    speeds[mode].append(size / MIB / (time.perf_counter() - started))
                s3.delete_object(Bucket=BUCKET, Key=f"race/{i}" if mode == "file" else f"race-boto3/{i}")
    return {mode: round(statistics.median(values), 1) for mode, values in speeds.items()}


def collect(spec: dict[str, Any]) -> dict[str, Any]:
    """In the measured process: warm up, then copy the result ``repeats`` times; returns the measurements."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=spec["s3"], **ACCESS)
    size, mode, repeats = spec["size"], spec["mode"], spec["repeats"]
    if mode == "race":
        return race(spec)
    if mode == "pipeline":
        import httpx

        from faceswap.aws.s3 import S3ObjectStore
        from faceswap.fetch import ResultFetcher

        store = S3ObjectStore(s3)
        fetcher = ResultFetcher(httpx.Client(timeout=60.0), max_bytes=size + WARMUP_BYTES, allow_loopback=True)

        def copy(key: str, nbytes: int) -> int:
            with fetcher.open(f"{spec['source']}/blob/{nbytes}", allowed_hosts=("127.0.0.1",)) as stream:
                stored = store.store_result(
                    BUCKET, key, stream.chunks(), content_type=stream.content_type, job_id=f"bench-{key}"
                )
            return stored.size

    elif mode == "fetch":
        import httpx

        from faceswap.fetch import ResultFetcher

        fetcher = ResultFetcher(httpx.Client(timeout=60.0), max_bytes=size + WARMUP_BYTES, allow_loopback=True)

        def copy(key: str, nbytes: int) -> int:
            digest = hashlib.sha256()
            with fetcher.open(f"{spec['source']}/blob/{nbytes}", allowed_hosts=("127.0.0.1",)) as stream:
                for chunk in stream.chunks():
                    digest.update(chunk)
            return stream.size

    elif mode == "file":
        from faceswap.aws.s3 import S3ObjectStore

        store = S3ObjectStore(s3)
        folder = Path(tempfile.mkdtemp(prefix="bench-video-"))
        files = {nbytes: folder / f"{nbytes}.mp4" for nbytes in (WARMUP_BYTES, size)}
        hashes = {}
        for nbytes, path in files.items():
            # Written (and hashed) before anything is measured: a result downloaded and checked in /tmp, hashed as it
            # arrived, as the collector does; what is measured is keeping it.
            digest = hashlib.sha256()
            with path.open("wb") as out:
                for chunk in blob_chunks(nbytes):
                    out.write(chunk)
                    digest.update(chunk)
            hashes[nbytes] = digest.hexdigest()

        def copy(key: str, nbytes: int) -> int:
            return store.store_result_file(
                BUCKET,
                key,
                str(files[nbytes]),
                content_type="video/mp4",
                job_id=f"bench-{key}",
                sha256=hashes[nbytes],
            ).size

    else:
        data = b"".join(blob_chunks(size))

        def copy(key: str, nbytes: int) -> int:
            s3.upload_fileobj(io.BytesIO(data[:nbytes]), BUCKET, key)
            return nbytes

    keys = [f"{mode}/{size}/warmup"]
    copy(keys[0], WARMUP_BYTES)
    _settle()
    reset = _reset_peak()
    rss_before = _status_kib("VmRSS")
    peak_before = _status_kib("VmHWM")
    seconds = []
    for i in range(repeats):
        keys.append(f"{mode}/{size}/{i}")
        started = time.perf_counter()
        stored = copy(keys[-1], size)
        seconds.append(time.perf_counter() - started)
        if stored != size:
            raise RuntimeError(f"stored {stored} bytes, expected {size}")
    peak = _status_kib("VmHWM")
    if mode == "file":
        for path in files.values():
            path.unlink()
        folder.rmdir()
    if mode != "fetch":
        for key in keys:
            s3.delete_object(Bucket=BUCKET, Key=key)
    baseline = rss_before if reset else max(rss_before, peak_before)
    return {
        "mode": mode,
        "size": size,
        "rss_before_kib": rss_before,
        "peak_kib": peak,
        "peak_reset": reset,
        "increase_mib": round(max(0, peak - baseline) / 1024, 1),
        "seconds": [round(s, 4) for s in seconds],
        "mib_per_second": round(size / MIB / statistics.median(seconds), 1),
    }


# --------------------------------------------------------------------------------------------- byte server


def serve(port: int) -> None:
    """Serve ``GET /blob/<bytes>`` on ``127.0.0.1:<port>`` until killed."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        match = re.fullmatch(r"/blob/(\d+)", request.path)
        if not match:
            return Response("not found", status=404)(environ, start_response)
        size = int(match.group(1))
        response = Response(blob_chunks(size), content_type="image/png", direct_passthrough=True)
        response.headers["Content-Length"] = str(size)
        return response(environ, start_response)

    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


# -------------------------------------------------------------------------------------------------- parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        spec = {**spec, "out": out.name}
        done = subprocess.run(
            [sys.executable, str(Path(__file__)), "collect", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"collector failed ({done.returncode}): {done.stderr[-2000:]}")
        return json.loads(Path(out.name).read_text())


def measure_result_memory(sizes_mib: tuple[int, ...], repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run benchmark 2 for each size (MiB); returns the figures and every child's raw measurements."""
    from report import say

    raw: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    with _servers() as (endpoint, source):
        for size_mib in sizes_mib:
            for mode in ("pipeline", "fetch", "boto3"):
                spec = {"mode": mode, "size": size_mib * MIB, "repeats": repeats, "s3": endpoint, "source": source}
                raw[f"{mode}_{size_mib}mib"] = result = _run_child(spec)
                say(
                    f"  {size_mib} MiB via {mode}: +{result['increase_mib']} MiB peak RSS, "
                    f"{result['mib_per_second']} MiB/s"
                )
            pipeline, boto = raw[f"pipeline_{size_mib}mib"], raw[f"boto3_{size_mib}mib"]
            figures[f"memory_peak_rss_increase_mib_at_{size_mib}mib"] = pipeline["increase_mib"]
            figures[f"memory_pipeline_mib_per_second_at_{size_mib}mib"] = pipeline["mib_per_second"]
            figures[f"memory_fetch_only_peak_rss_increase_mib_at_{size_mib}mib"] = raw[f"fetch_{size_mib}mib"][
                "increase_mib"
            ]
            figures[f"memory_boto3_upload_fileobj_mib_per_second_at_{size_mib}mib"] = boto["mib_per_second"]
            figures[f"memory_boto3_upload_fileobj_peak_rss_increase_mib_at_{size_mib}mib"] = boto["increase_mib"]
            figures[f"memory_throughput_ratio_pipeline_over_boto3_at_{size_mib}mib"] = round(
                pipeline["mib_per_second"] / boto["mib_per_second"], 2
            )
    increases = [raw[f"pipeline_{s}mib"]["increase_mib"] for s in sizes_mib]
    figures["memory_peak_rss_increase_spread_mib"] = round(max(increases) - min(increases), 1)
    return figures, raw


def measure_video_copy(sizes_mib: tuple[int, ...], repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keep a video result of each size (MiB) from a file (``store_result_file``, parts in flight) against boto3's
    ``upload_fileobj`` from memory: peak RSS of each in a fresh process, and their speeds taking turns in one process
    (:func:`race`); returns the figures and the raw measurements."""
    from report import say

    raw: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    with _servers() as (endpoint, source):
        for size_mib in sizes_mib:
            for mode in ("file", "boto3"):
                spec = {"mode": mode, "size": size_mib * MIB, "repeats": 1, "s3": endpoint, "source": source}
                raw[f"{mode}_{size_mib}mib"] = result = _run_child(spec)
                say(f"  {size_mib} MiB via {mode}: +{result['increase_mib']} MiB peak RSS")
            spec = {"mode": "race", "size": size_mib * MIB, "repeats": repeats, "s3": endpoint, "source": source}
            raw[f"race_{size_mib}mib"] = speeds = _run_child(spec)
            say(f"  {size_mib} MiB, taking turns: store_result_file {speeds['file']}, boto3 {speeds['boto3']} MiB/s")
            figures[f"video_copy_peak_rss_increase_mib_at_{size_mib}mib"] = raw[f"file_{size_mib}mib"]["increase_mib"]
            figures[f"video_copy_boto3_upload_fileobj_peak_rss_increase_mib_at_{size_mib}mib"] = raw[
                f"boto3_{size_mib}mib"
            ]["increase_mib"]
            figures[f"video_copy_mib_per_second_at_{size_mib}mib"] = speeds["file"]
            figures[f"video_copy_boto3_upload_fileobj_mib_per_second_at_{size_mib}mib"] = speeds["boto3"]
            figures[f"video_copy_throughput_ratio_over_boto3_at_{size_mib}mib"] = round(
                speeds["file"] / speeds["boto3"], 2
            )
    increases = [raw[f"file_{s}mib"]["increase_mib"] for s in sizes_mib]
    figures["video_copy_peak_rss_increase_spread_mib"] = round(max(increases) - min(increases), 1)
    return figures, raw


@contextlib.contextmanager
def _servers() -> Iterator[tuple[str, str]]:
    """A moto server (S3, with the benchmark's bucket) and the byte server: ``(s3 endpoint, byte source URL)``."""
    import boto3

    moto_port, blob_port = _free_port(), _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS["aws_access_key_id"]}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        ),
        subprocess.Popen(
            [sys.executable, str(Path(__file__)), "serve", str(blob_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        ),
    ]
    try:
        _wait_port(moto_port, processes[0])
        _wait_port(blob_port, processes[1])
        endpoint = f"http://127.0.0.1:{moto_port}"
        boto3.client("s3", endpoint_url=endpoint, **ACCESS).create_bucket(Bucket=BUCKET)
        yield endpoint, f"http://127.0.0.1:{blob_port}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str]) -> int:
    """Child entry points: ``serve <port>`` and ``collect <json spec>``."""
    if argv[:1] == ["serve"]:
        serve(int(argv[1]))
        return 0
    if argv[:1] == ["collect"]:
        spec = json.loads(argv[1])
        Path(spec["out"]).write_text(json.dumps(collect(spec)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
