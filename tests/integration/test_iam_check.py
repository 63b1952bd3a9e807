"""The IAM check itself (``iam.py``): S3's rule for absent keys, and requests it cannot map fail it."""

from __future__ import annotations

import json
from pathlib import Path

from iam import Policies, RequestLog, needs

from faceswap_local.app import ROOT
from faceswap_local.environments import AwsCall
from faceswap_local.stack import AwsStack

BUCKET = "faceswap-results-test"


def _log(tmp_path: Path, statements: list[dict[str, object]]) -> RequestLog:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps({"CallbackFunction": statements}), encoding="utf-8")
    log = RequestLog(Policies(ROOT / "template.yaml", path))
    log.stacks.append(AwsStack(endpoint_url="http://127.0.0.1:1"))
    return log


def _head(error_code: str | None) -> AwsCall:
    return AwsCall(
        function="CallbackFunction",
        service="s3",
        operation="HeadObject",
        params={"Bucket": BUCKET, "Key": "results/a.jpg"},
        error_code=error_code,
        presigned=False,
        started=0.0,
        ended=0.0,
    )


def test_a_read_of_an_absent_key_needs_list_bucket_on_the_bucket() -> None:
    assert needs("s3", "HeadObject", {"Bucket": BUCKET, "Key": "k"}, error_code="404") == (
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/k"),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
    )
    assert needs("s3", "GetObject", {"Bucket": BUCKET, "Key": "k"}, error_code="NoSuchKey")[1] == (
        "s3:ListBucket",
        f"arn:aws:s3:::{BUCKET}",
    )
    assert needs("s3", "HeadObject", {"Bucket": BUCKET, "Key": "k"}) == (("s3:GetObject", f"arn:aws:s3:::{BUCKET}/k"),)


def test_head_of_an_absent_key_without_list_bucket_fails_naming_function_action_and_bucket(tmp_path: Path) -> None:
    log = _log(tmp_path, [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}])
    log.aws_call(_head("404"))
    assert log.refused() == [f"CallbackFunction s3:HeadObject needs s3:ListBucket on arn:aws:s3:::{BUCKET}"]
    log.aws_call(_head(None))  # the key exists: GetObject is enough
    assert log.refused() == []


def test_head_of_an_absent_key_with_list_bucket_passes(tmp_path: Path) -> None:
    log = _log(
        tmp_path,
        [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"},
        ],
    )
    log.aws_call(_head("404"))
    assert log.refused() == []


def test_a_request_the_check_cannot_map_fails_it(tmp_path: Path) -> None:
    log = _log(tmp_path, [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    log.aws_call(
        AwsCall(
            function="CallbackFunction",
            service="rekognition",
            operation="DetectLabels",
            params={},
            error_code=None,
            presigned=False,
            started=0.0,
            ended=0.0,
        )
    )
    (problem,) = log.refused()
    assert problem.startswith("CallbackFunction rekognition:DetectLabels") and "not mapped" in problem
