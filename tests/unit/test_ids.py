"""Deterministic job ids and per-job webhook secrets."""

from __future__ import annotations

import pytest

from faceswap.ids import JOB_ID_LENGTH, is_job_id, job_id_for, verify_webhook_secret, webhook_secret

KEY = b"unit-test-signing-key"
JOB = job_id_for("s3", "inputs", "incoming/obama/party.jpg", "v1")


def test_same_parts_give_same_job_id() -> None:
    assert job_id_for("s3", "inputs", "incoming/obama/party.jpg", "v1") == JOB


@pytest.mark.parametrize(
    "parts",
    [
        ("s3", "inputs", "incoming/obama/party.jpg", "v2"),
        ("s3", "other", "incoming/obama/party.jpg", "v1"),
        ("s3", "inputs", "incoming/obama/party.png", "v1"),
        ("api", "inputs", "incoming/obama/party.jpg", "v1"),
    ],
)
def test_any_changed_part_gives_different_job_id(parts: tuple[str, ...]) -> None:
    assert job_id_for(*parts) != JOB


def test_part_boundaries_matter() -> None:
    assert job_id_for("ab", "c") != job_id_for("a", "bc")
    assert job_id_for("abc") != job_id_for("ab", "c")


def test_job_id_is_32_lowercase_hex_characters() -> None:
    assert JOB_ID_LENGTH == 32
    assert len(JOB) == 32
    assert is_job_id(JOB)


def test_non_ascii_parts_give_a_valid_job_id() -> None:
    assert is_job_id(job_id_for("s3", "inputs", "incoming/zoë/fête 🎉.jpg", ""))


@pytest.mark.parametrize("text", ["", "a" * 31, "a" * 33, "A" * 32, "g" * 32, "../" + "a" * 29, "a" * 31 + "\n"])
def test_is_job_id_refuses_other_shapes(text: str) -> None:
    assert not is_job_id(text)


def test_webhook_secret_is_deterministic_64_hex_characters() -> None:
    secret = webhook_secret(KEY, JOB)
    assert secret == webhook_secret(KEY, JOB)
    assert len(secret) == 64
    assert all(c in "0123456789abcdef" for c in secret)


def test_webhook_secret_depends_on_signing_key_and_job() -> None:
    other_job = job_id_for("s3", "inputs", "incoming/obama/other.jpg", "v1")
    assert webhook_secret(KEY, JOB) != webhook_secret(b"another-key", JOB)
    assert webhook_secret(KEY, JOB) != webhook_secret(KEY, other_job)


def test_verify_accepts_the_jobs_own_secret() -> None:
    assert verify_webhook_secret(KEY, JOB, webhook_secret(KEY, JOB))


@pytest.mark.parametrize(
    "presented",
    [
        "0" * 64,
        "wrong",
        "secret\u00e9",  # non-ASCII must be a plain refusal, not an exception
    ],
)
def test_verify_refuses_wrong_secret(presented: str) -> None:
    assert not verify_webhook_secret(KEY, JOB, presented)


def test_verify_refuses_truncated_or_case_changed_secret() -> None:
    secret = webhook_secret(KEY, JOB)
    assert not verify_webhook_secret(KEY, JOB, secret[:-1])
    assert not verify_webhook_secret(KEY, JOB, secret.upper())
    assert not verify_webhook_secret(KEY, JOB, secret + "0")


@pytest.mark.parametrize("presented", [None, ""])
def test_verify_refuses_missing_secret(presented: str | None) -> None:
    assert not verify_webhook_secret(KEY, JOB, presented)


def test_verify_refuses_another_jobs_secret() -> None:
    other_job = job_id_for("s3", "inputs", "incoming/obama/other.jpg", "v1")
    assert not verify_webhook_secret(KEY, JOB, webhook_secret(KEY, other_job))


def test_verify_refuses_secret_made_with_another_signing_key() -> None:
    assert not verify_webhook_secret(KEY, JOB, webhook_secret(b"another-key", JOB))
