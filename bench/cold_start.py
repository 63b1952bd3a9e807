"""Benchmark 3: cold start of each function, what its handler imports, and its deployment size.

- **Size.** ``sam build`` into a temporary directory (run from there, so nothing is written into the
  repository); the unzipped size of each function's directory plus the shared layer's.
- **Import and first invocation, as Lambda loads the code.** A copy of the layer as ``sam build`` makes it
  (the same top-level packages, taken from this environment's site-packages and ``layers/shared``, built for
  this machine) goes first on the path, as ``/opt/python`` does; then the packages the Lambda runtime itself
  provides (boto3 and its dependencies, with bytecode); nothing else (``python -S``: no site-packages of the
  development environment, whose extra packages would change what gets imported). Lambda's file systems
  are read only, so what is not shipped compiled is compiled on every cold start: the main figures import the
  layer as it is shipped (compiled, as ``layers/shared/Makefile`` builds it, when the built layer holds
  ``.pyc`` files) and the function's own code **without bytecode caches**; ``*_with_pyc_*`` figures are the
  same with every cache present.
- For each function of ``template.yaml``, ``runs`` fresh processes (``python bench/cold_start.py child``)
  import the handler module (``app`` from the function's directory) and invoke it once with a sample event
  from ``events/``; the figures are medians. The environment is the function's own from the template,
  resolved against resources created in a moto server (``faceswap_local.stack.create_stack``), the local
  stack's configuration, and what Lambda adds (:func:`lambda_environment`: ``LAMBDA_TASK_ROOT``, a trace
  header; tracing on, as ``Tracing: Active`` has it). The events' bucket and table names do not match the
  created ones; they are chosen so that does not matter (an S3 test event, a callback with a wrong secret, a
  check of an unknown job, a stream record whose end is published on the real bus, the sweeper's scheduled run
  over the created, empty jobs table).
- **What is imported.** One more process per function and variant runs with ``-X importtime``; its tree gives
  each third-party package's import time and the chain that first imported it. A package neither the
  function nor its dependencies need (:data:`USES`, closed over installed package metadata) is flagged.

This module's top level imports only a few standard modules: the child must not pre-import what it measures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]

EVENTS = {
    "SubmitFunction": "sqs_s3_test_event.json",
    "CallbackFunction": "http_webhook_bad_secret.json",
    "PollerFunction": "sqs_check.json",
    "PublisherFunction": "ddb_stream_job_succeeded.json",
    "MediaFunction": "sqs_check.json",
    "SweeperFunction": "scheduler_sweep.json",
}
"""Sample event (in ``events/``) for each function's first invocation; other functions with an HTTP API route
get a ``GET`` of an unknown job (see :func:`http_event`)."""

USES = {
    "SubmitFunction": {"boto3", "aws_lambda_powertools", "aws_xray_sdk", "httpx", "PIL"},
    "CallbackFunction": {"boto3", "aws_lambda_powertools", "aws_xray_sdk", "httpx"},
    "PollerFunction": {"boto3", "aws_lambda_powertools", "aws_xray_sdk", "httpx"},
    "PublisherFunction": {"boto3", "certifi", "aws_lambda_powertools", "aws_xray_sdk"},
    "ApiFunction": {"boto3", "certifi", "aws_lambda_powertools", "aws_xray_sdk", "pydantic", "PIL"},
    "MediaFunction": {"boto3", "aws_lambda_powertools", "aws_xray_sdk", "httpx", "PIL", "av"},
    "SweeperFunction": {"boto3", "certifi", "aws_lambda_powertools", "aws_xray_sdk"},
}
"""Third-party packages each function's code path needs (their dependencies are needed too): the AWS SDK (boto3;
its TLS connections use certifi's CA bundle when certifi is installed, ``botocore.httpsession``) and Powertools
everywhere (the X-Ray SDK is the Tracer's, and the template turns ``Tracing: Active`` on); httpx where a provider is
called or a result downloaded (submit, callback, poller); Pillow only where input images are checked (submit; the API
when an upload is given inline). The API records jobs and queues them (no provider, no download: no httpx); the
publisher reads stream records and puts events, and the sweeper queries the jobs table and queues checks: no
provider, no images."""

RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
"""What the Lambda Python runtime provides besides the standard library (boto3 and its dependencies)."""

HEAVY_MS = 3.0
"""A package is listed when its modules took at least this long to import (self time, summed)."""

UNKNOWN_JOB_ID = "0123456789abcdef0123456789abcdef"
MIB = 1024 * 1024
IMPORT_MARKER = "bench: handler import starts"
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


class Context:
    """The parts of Lambda's context object Powertools reads (kept here so the child imports nothing more)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = os.urandom(16).hex()
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "bench"
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left of a 60 s timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ---------------------------------------------------------------------------------------------------- child


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: import the handler (timed), then invoke it once with the event (timed)."""
    event = json.loads(Path(spec["event"]).read_text()) if spec.get("event") else None
    code_dir = Path(spec["code_dir"])
    module_name, attribute = spec["handler"].rsplit(".", 1)
    sys.path.insert(0, str(code_dir))
    print(IMPORT_MARKER, file=sys.stderr, flush=True)
    started = time.perf_counter()
    module_spec = importlib.util.spec_from_file_location(module_name, code_dir / f"{module_name}.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    imported = time.perf_counter()
    result: dict[str, Any] = {"import_ms": round((imported - started) * 1000, 1)}
    if event is not None:
        answer = getattr(module, attribute)(event, Context(spec["function"]))
        result["first_invocation_ms"] = round((time.perf_counter() - imported) * 1000, 1)
        result["answer"] = _describe(answer)
    result["packages"] = sorted(
        {name.split(".")[0] for name in sys.modules}
        - set(sys.stdlib_module_names)
        - {"__main__", module_name, "cold_start"}
    )
    return result


def _describe(answer: Any) -> str:
    if isinstance(answer, dict) and "statusCode" in answer:
        return f"HTTP {answer['statusCode']}"
    if isinstance(answer, dict) and "batchItemFailures" in answer:
        return f"{len(answer['batchItemFailures'])} batch item failures"
    if isinstance(answer, dict) and "swept" in answer:
        return f"{answer['swept']} jobs swept"
    return type(answer).__name__


# ----------------------------------------------------------------------------------------- importtime tree


def parse_importtime(text: str) -> list[dict[str, Any]]:
    """Parse ``python -X importtime`` output into entries ``{name, self_us, cumulative_us, chain}``.

    ``chain`` lists the modules whose import caused this one, outermost first (the tree is printed in
    post-order, children before their parent, one indentation level of two spaces per depth).
    """
    if IMPORT_MARKER in text:
        text = text.split(IMPORT_MARKER, 1)[1]
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "| imported package" in line:
            continue
        _, self_us, cumulative_us, name_field = (part for part in ["", *line[len("import time:") :].split("|")])
        name_field = name_field[1:] if name_field.startswith(" ") else name_field
        depth = (len(name_field) - len(name_field.lstrip(" "))) // 2
        rows.append(
            {"name": name_field.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative_us), "depth": depth}
        )
    # Post-order: a row's children are the rows just before it with depth + 1 not yet claimed.
    parents: list[int | None] = [None] * len(rows)
    pending: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        for child_index in pending.pop(row["depth"] + 1, []):
            parents[child_index] = index
        pending.setdefault(row["depth"], []).append(index)
    entries = []
    for index, row in enumerate(rows):
        chain = []
        parent = parents[index]
        while parent is not None:
            chain.append(rows[parent]["name"])
            parent = parents[parent]
        entries.append(
            {
                "name": row["name"],
                "self_us": row["self_us"],
                "cumulative_us": row["cumulative_us"],
                "chain": chain[::-1],
            }
        )
    return entries


def dependency_closure(packages: set[str] | frozenset[str]) -> set[str]:
    """``packages`` (import names) and every package they require, transitively, per installed metadata.

    Requirements behind an extra are left out (a package's optional features are not its needs).
    """
    import re
    from importlib import metadata

    dist_of = _distributions()
    todo = [d for name in packages for d in dist_of.get(name, set())]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requirements = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            name, _, marker = requirement.partition(";")
            if "extra" not in marker:
                todo.append(re.split(r"[\s<>=!~\[(;]", name.strip(), maxsplit=1)[0].lower().replace("_", "-"))
    return set(packages) | {name for name, dists in dist_of.items() if dists & seen}


_DISTRIBUTIONS: dict[str, set[str]] = {}


def _distributions() -> dict[str, set[str]]:
    """Installed distributions (normalised names) by the top-level import names they provide; cached."""
    if not _DISTRIBUTIONS:
        from importlib import metadata

        for name, dists in metadata.packages_distributions().items():
            _DISTRIBUTIONS[name] = {d.lower().replace("_", "-") for d in dists}
    return _DISTRIBUTIONS


def import_report(
    entries: list[dict[str, Any]],
    needed: set[str],
    requires: Callable[[str], frozenset[str] | set[str]],
    present: set[str] | None = None,
) -> dict[str, Any]:
    """Third-party packages by import time, and the ones the function does not need.

    Parameters
    ----------
    entries
        The parsed ``-X importtime`` tree of the handler's import (:func:`parse_importtime`).
    needed
        Import names the function needs, dependencies included (:func:`dependency_closure`).
    requires
        ``requires(package)``: the packages ``package`` depends on (to fold an unneeded package's own
        dependencies into it).
    present
        Top-level packages actually loaded (``-X importtime`` also lists optional imports that failed, such
        as ``brotli`` when it is not installed); ``None`` keeps every entry.

    Returns
    -------
    dict
        ``heavy``: ``[{package, self_ms, imported_by}]`` for packages whose modules took at least
        :data:`HEAVY_MS` (self time summed), slowest first. ``unused``: ``[{package, cumulative_ms,
        imported_by, with}]`` for each package imported but not needed, its own unneeded dependencies folded
        in (``with``), and the time their imports took (cumulative, so stdlib modules they pulled in count).
    """
    stdlib = set(sys.stdlib_module_names)

    def package_of(name: str) -> str:
        return name.split(".")[0]

    third_party = [
        e
        for e in entries
        if (p := package_of(e["name"])) not in stdlib
        and not p.startswith("_")
        and p != "app"
        and (present is None or p in present)
    ]
    totals: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for entry in third_party:
        package = package_of(entry["name"])
        totals[package] = totals.get(package, 0.0) + entry["self_us"] / 1000
        # The package's own module says who imported it; failing that, its first module.
        if package not in first or (entry["name"] == package and first[package]["name"] != package):
            first[package] = entry

    def chain_text(entry: dict[str, Any]) -> str:
        return " > ".join(["app", *entry["chain"], entry["name"]])

    heavy = [
        {"package": p, "self_ms": round(ms, 1), "imported_by": chain_text(first[p])}
        for p, ms in sorted(totals.items(), key=lambda kv: -kv[1])
        if ms >= HEAVY_MS
    ]
    extra = {p for p in first if p not in needed and p != "faceswap"}
    roots = {p for p in extra if not any(p in requires(q) for q in extra - {p})}
    unused = []
    for root in roots:
        group = {root} | {p for p in extra if p in requires(root)}
        topmost = [
            e
            for e in third_party
            if package_of(e["name"]) in group and not any(package_of(c) in group for c in e["chain"])
        ]
        unused.append(
            {
                "package": root,
                "cumulative_ms": round(sum(e["cumulative_us"] for e in topmost) / 1000, 1),
                "imported_by": chain_text(first[root]),
                "with": sorted(group - {root}),
            }
        )
    unused.sort(key=lambda u: -u["cumulative_ms"])
    return {"heavy": heavy, "unused": unused}


# --------------------------------------------------------------------------------------------------- parent


def http_event(route: str, path: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``GET path`` on ``route``."""
    return {
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "local", "content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "local",
            "domainPrefix": "local",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "b"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route,
            "stage": "$default",
            "time": "25/Nov/2026:13:51:44 +0000",
            "timeEpoch": 1795614704000,
        },
        "pathParameters": {"job_id": UNKNOWN_JOB_ID},
        "isBase64Encoded": False,
    }


def _event_file(logical_id: str, spec: Any, workdir: Path) -> Path | None:
    if logical_id in EVENTS:
        return REPO / "events" / EVENTS[logical_id]
    for event in spec.events.values():
        if event.get("Type") == "HttpApi" and event.get("Method", "").upper() == "GET" and "{job_id}" in event["Path"]:
            route = f"GET {event['Path']}"
            path = event["Path"].replace("{job_id}", UNKNOWN_JOB_ID)
            target = workdir / f"{logical_id}.json"
            target.write_text(json.dumps(http_event(route, path)))
            return target
    return None


def lambda_environment(function: str, handler: str) -> dict[str, str]:
    """What Lambda's runtime adds to a function's environment, with tracing on as the template has it.

    ``LAMBDA_TASK_ROOT`` (set per layout) makes the X-Ray SDK and Powertools behave as in Lambda (the SDK then
    samples locally instead of creating X-Ray clients); the trace header stands for the one Lambda sets per
    invocation; segments go by UDP to a daemon address where nothing listens.
    """
    return {
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "_HANDLER": handler,
        "_X_AMZN_TRACE_ID": TRACE_HEADER,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "POWERTOOLS_TRACE_DISABLED": "false",
    }


def _run_child(
    spec: dict[str, Any], env: dict[str, str], *, isolated: bool, importtime: bool = False
) -> tuple[dict[str, Any], str]:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        flags = [*(["-S"] if isolated else []), *(["-X", "importtime"] if importtime else [])]
        done = subprocess.run(
            [sys.executable, *flags, str(Path(__file__)), "child", json.dumps({**spec, "out": out.name})],
            env=env,
            cwd=spec["code_dir"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{spec['function']} child failed ({done.returncode}): {done.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text()), done.stderr


def build_layout(
    target: Path, layer_entries: list[str], function_dirs: dict[str, Path], *, compile_layer: bool = False
) -> dict[str, Any]:
    """Lay out the code as Lambda sees it under ``target`` (see the module docstring).

    ``target/opt`` holds the layer's top-level entries without bytecode caches (compiled as the layer's
    Makefile does when ``compile_layer``), ``target/runtime`` the runtime's packages (:data:`RUNTIME_PACKAGES`,
    with their caches) and ``target/task/<function>`` each function's code without caches. Entries missing
    from this environment are listed in ``missing``.

    Returns
    -------
    dict
        ``path`` (the ``PYTHONPATH``), ``functions`` (copied code directory per function) and ``missing``.
    """
    import shutil
    import sysconfig

    site = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])]
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    opt, runtime = target / "opt", target / "runtime"
    opt.mkdir(parents=True)
    runtime.mkdir(parents=True)

    def copy(name: str, sources: list[Path], into: Path, ignore: Any) -> bool:
        for source in sources:
            path = source / name
            if path.is_dir():
                shutil.copytree(path, into / name, ignore=ignore)
                return True
            if path.is_file():
                shutil.copy2(path, into / name)
                return True
        return False

    missing = [name for name in layer_entries if not copy(name, [REPO / "layers" / "shared", *site], opt, no_cache)]
    if compile_layer:
        import compileall
        import py_compile

        compileall.compile_dir(opt, quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    for name in RUNTIME_PACKAGES:
        if not copy(name, site, runtime, None):
            copy(f"{name}.py", site, runtime, None)
        for dist_info in site[0].glob(f"{name}-*.dist-info"):
            copy(dist_info.name, site, runtime, None)
    functions = {}
    for logical_id, code_dir in function_dirs.items():
        functions[logical_id] = target / "task" / logical_id
        shutil.copytree(code_dir, functions[logical_id], ignore=no_cache)
    return {"path": f"{opt}{os.pathsep}{runtime}", "functions": functions, "missing": missing}


def _samples(
    spec: dict[str, Any], env: dict[str, str], runs: int, needed: set[str], *, isolated: bool
) -> dict[str, Any]:
    import functools
    import statistics

    _run_child(spec, env, isolated=isolated)  # warms the file cache (and writes bytecode where allowed)
    samples = [_run_child(spec, env, isolated=isolated)[0] for _ in range(runs)]
    _, trace = _run_child({**spec, "event": None}, env, isolated=isolated, importtime=True)
    requires = functools.cache(lambda package: frozenset(dependency_closure({package})))
    present = set(samples[0]["packages"])
    report = import_report(parse_importtime(trace), needed, requires, present)
    return {
        "samples": samples,
        "import_ms": round(statistics.median(s["import_ms"] for s in samples), 1),
        "first_invocation_ms": (
            round(statistics.median(s["first_invocation_ms"] for s in samples), 1) if spec.get("event") else None
        ),
        **report,
    }


def measure_cold_starts(
    runs: int, layer_entries: list[str] | None, *, layer_pyc: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Import and first-invocation medians, and import reports, for every function of the template.

    ``layer_entries`` are the top-level names in the layer ``sam build`` made. Without them (the build
    failed), the functions run against this development environment instead (``cold_start_layout`` says
    which), where packages the layer does not ship can change what gets imported. ``layer_pyc``: the built
    layer ships compiled bytecode, so the "shipped" layout has it too.
    """
    import tempfile
    import uuid

    from faceswap_local import stack as aws
    from faceswap_local.app import LOCAL_CONFIG
    from report import say

    moto = aws.MotoServer()
    moto.start()
    try:
        created = aws.create_stack(
            REPO / "template.yaml",
            moto.endpoint_url,
            parameters={"DefaultProvider": "piapi"},
            stack_name=f"bench-cold-{uuid.uuid4().hex[:6]}",
        )
        isolated = layer_entries is not None
        figures: dict[str, Any] = {"cold_start_layout": "sam build layer" if isolated else "development environment"}
        details: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as workdir:
            entries = layer_entries if isolated else ["faceswap"]
            code_dirs = {k: v.code_dir for k, v in created.functions.items()}
            # One copy stays as shipped (never written to); the other gets bytecode caches.
            shipped_layout = build_layout(Path(workdir) / "shipped", entries, code_dirs, compile_layer=layer_pyc)
            cached_layout = build_layout(Path(workdir) / "cached", entries, code_dirs)
            details["layout_missing"] = shipped_layout["missing"]
            inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON"))}
            for logical_id, spec in sorted(created.functions.items()):
                event = _event_file(logical_id, spec, Path(workdir))
                env = {
                    **inherited,
                    **spec.environment,
                    **LOCAL_CONFIG,
                    "AWS_ENDPOINT_URL": moto.endpoint_url,
                    "AWS_ACCESS_KEY_ID": aws.ACCESS_KEY_ID,
                    "AWS_SECRET_ACCESS_KEY": aws.SECRET_ACCESS_KEY,
                    "AWS_DEFAULT_REGION": aws.REGION,
                    "AWS_REGION": aws.REGION,
                    **lambda_environment(logical_id, spec.handler),
                }
                needed = dependency_closure(USES.get(logical_id, set()))
                variants = {}
                for variant, layout, extra in (
                    ("shipped", shipped_layout, {"PYTHONDONTWRITEBYTECODE": "1"}),
                    ("cached", cached_layout, {}),
                ):
                    child_spec = {
                        "function": logical_id,
                        "code_dir": str(layout["functions"][logical_id]),
                        "handler": spec.handler,
                        "event": str(event) if event else None,
                    }
                    variant_env = {
                        **env,
                        **extra,
                        "PYTHONPATH": layout["path"],
                        "LAMBDA_TASK_ROOT": str(layout["functions"][logical_id]),
                    }
                    variants[variant] = _samples(child_spec, variant_env, runs, needed, isolated=isolated)
                shipped, cached = variants["shipped"], variants["cached"]
                name = logical_id.removesuffix("Function").lower()
                figures[f"cold_start_{name}_import_ms"] = shipped["import_ms"]
                figures[f"cold_start_{name}_import_with_pyc_ms"] = cached["import_ms"]
                if event is not None:
                    figures[f"cold_start_{name}_first_invocation_ms"] = shipped["first_invocation_ms"]
                    figures[f"cold_start_{name}_first_invocation_with_pyc_ms"] = cached["first_invocation_ms"]
                figures[f"cold_start_{name}_heavy_imports"] = [
                    f"{h['package']} {h['self_ms']:g} ms" for h in shipped["heavy"]
                ]
                figures[f"cold_start_{name}_unused_imports"] = [
                    f"{u['package']}{' (+' + ', '.join(u['with']) + ')' if u['with'] else ''} "
                    f"{u['cumulative_ms']:g} ms via {u['imported_by']}"
                    for u in shipped["unused"]
                ]
                figures[f"cold_start_{name}_unused_imports_count"] = len(shipped["unused"])
                details[logical_id] = {
                    "answer": shipped["samples"][0].get("answer"),
                    "packages": shipped["samples"][0]["packages"],
                    "as_shipped": shipped,
                    "with_pyc": cached,
                }
                say(
                    f"  {logical_id}: import {shipped['import_ms']:.0f} ms ({cached['import_ms']:.0f} ms with .pyc), "
                    f"first invocation {shipped['first_invocation_ms']} ms ({shipped['samples'][0].get('answer')}), "
                    f"unused: {', '.join(u['package'] for u in shipped['unused']) or 'none'}"
                )
        return figures, details
    finally:
        moto.stop()


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure_package_sizes() -> tuple[dict[str, Any], dict[str, Any]]:
    """``sam build`` into a temporary directory; unzipped MiB of each function plus the shared layer."""
    import subprocess
    import tempfile

    from report import say

    sam = REPO / ".venv-sam" / "bin" / "sam"
    python313 = _python313()
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    if python313:
        env["PATH"] = f"{Path(python313).parent}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="bench-sam-") as workdir:
        build = Path(workdir) / "build"
        started = time.perf_counter()
        done = subprocess.run(
            [
                str(sam),
                "build",
                "--template-file",
                str(REPO / "template.yaml"),
                "--base-dir",
                str(REPO),
                "--build-dir",
                str(build),
                "--cache-dir",
                str(Path(workdir) / "cache"),
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sam build failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        say(f"  sam build: {time.perf_counter() - started:.0f} s")
        layer_bytes = {p.name: _tree_bytes(p) for p in build.iterdir() if p.is_dir() and p.name.endswith("Layer")}
        layers = [build / "SharedLayer"]  # what the cold-start step lays out, as every function has it
        figures: dict[str, Any] = {
            f"package_{name.removesuffix('Layer').lower()}_layer_unzipped_mib": round(size / MIB, 2)
            for name, size in layer_bytes.items()
        }
        function_layers = _function_layers()
        for function_dir in sorted(p for p in build.iterdir() if p.is_dir() and p.name.endswith("Function")):
            name = function_dir.name.removesuffix("Function").lower()
            attached = sum(layer_bytes[layer] for layer in function_layers[function_dir.name])
            figures[f"package_{name}_unzipped_mib"] = round((_tree_bytes(function_dir) + attached) / MIB, 2)
        sizes: dict[str, float] = {}
        entries: list[str] = []
        for layer in layers:
            root = layer / "python" if (layer / "python").is_dir() else layer
            for entry in root.iterdir():
                if entry.name == "__pycache__":  # bytecode of top-level modules; compiled again in the layout
                    continue
                entries.append(entry.name)
                if not entry.name.endswith((".dist-info", ".data")):
                    sizes[entry.name] = round((_tree_bytes(entry) if entry.is_dir() else entry.stat().st_size) / MIB, 2)
            figures["package_shared_layer_py_files"] = sum(1 for _ in root.rglob("*.py"))
            figures["package_shared_layer_pyc_files"] = sum(1 for _ in root.rglob("*.pyc"))
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])
        figures["package_shared_layer_largest"] = [f"{name} {mib:g} MiB" for name, mib in largest[:10]]
        return figures, {
            "layer_contents_mib": dict(largest),
            "layer_entries": sorted(entries),
            "layer_ships_pyc": figures.get("package_shared_layer_pyc_files", 0) > 0,
        }


def _function_layers() -> dict[str, list[str]]:
    """Each function's layers by logical id, as the template gives them: the Globals' then its own (SAM appends
    lists)."""
    from faceswap_local.template import load_template

    template = load_template(REPO / "template.yaml")
    shared = [layer["Ref"] for layer in template.get("Globals", {}).get("Function", {}).get("Layers", [])]
    return {
        name: shared + [layer["Ref"] for layer in resource["Properties"].get("Layers", [])]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _python313() -> str | None:
    """A Python 3.13 interpreter for ``sam build`` (on PATH or from pyenv), as the Makefile finds one."""
    import subprocess

    candidates = [
        "python3.13",
        *sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.13*/bin/python3.13")),
        "/usr/local/bin/python3.13",
        "/usr/bin/python3.13",
    ]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=False
            )
        except OSError:
            continue
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def main(argv: list[str]) -> int:
    """Child entry point: ``child <json spec>`` writes its measurements to ``spec["out"]``."""
    if argv[:1] == ["child"]:
        spec = json.loads(argv[1])
        Path(spec["out"]).write_text(json.dumps(child(spec)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
