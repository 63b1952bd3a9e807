"""``faceswap_local.redrive`` under moto: dead-letter queue → its queue, in batches, attributes kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from faceswap_local.redrive import Queues, RedriveError, check_pairing, redrive, stack_queues


@pytest.fixture
def sqs(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs")


def queues(sqs: Any) -> Queues:
    dead_letter = sqs.create_queue(QueueName="submit-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead_letter, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(
        QueueName="submit",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})},
    )["QueueUrl"]
    return Queues(source, dead_letter)


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
        "Messages", []
    ):
        messages.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def test_redrive_moves_every_message_back_with_its_body_and_attributes(sqs: Any) -> None:
    pair = queues(sqs)
    for i in range(23):
        sqs.send_message(
            QueueUrl=pair.dead_letter_url,
            MessageBody=json.dumps({"job_id": f"{i:032x}", "check": 3}),
            MessageAttributes={"origin": {"DataType": "String", "StringValue": f"test-{i}"}},
        )

    check_pairing(sqs, pair)
    moved = redrive(sqs, pair)

    back = drain(sqs, pair.source_url)
    assert moved == 23
    assert sorted(json.loads(m["Body"])["job_id"] for m in back) == [f"{i:032x}" for i in range(23)]
    assert {m["MessageAttributes"]["origin"]["StringValue"] for m in back} == {f"test-{i}" for i in range(23)}
    assert drain(sqs, pair.dead_letter_url) == []


def test_redrive_stops_after_max_messages(sqs: Any) -> None:
    pair = queues(sqs)
    for i in range(5):
        sqs.send_message(QueueUrl=pair.dead_letter_url, MessageBody=str(i))

    assert redrive(sqs, pair, max_messages=3, visibility_timeout=0) == 3
    assert len(drain(sqs, pair.dead_letter_url)) == 2


def test_redrive_refuses_a_queue_that_does_not_dead_letter_there(sqs: Any) -> None:
    pair = queues(sqs)
    other = sqs.create_queue(QueueName="other")["QueueUrl"]

    with pytest.raises(RedriveError, match="does not send its failures"):
        check_pairing(sqs, Queues(other, pair.dead_letter_url))


def test_stack_queues_come_from_the_stack_outputs() -> None:
    class CloudFormation:
        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            assert StackName == "faceswap-prod"
            return {
                "Stacks": [
                    {
                        "Outputs": [
                            {"OutputKey": "CheckQueueUrl", "OutputValue": "https://sqs/check"},
                            {"OutputKey": "CheckDeadLetterQueueUrl", "OutputValue": "https://sqs/check-dlq"},
                        ]
                    }
                ]
            }

    expected = Queues("https://sqs/check", "https://sqs/check-dlq")
    assert stack_queues(CloudFormation(), "faceswap-prod", "check") == expected
    with pytest.raises(RedriveError, match="no output SubmitQueueUrl"):
        stack_queues(CloudFormation(), "faceswap-prod", "submit")
