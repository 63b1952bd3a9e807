"""``python -m faceswap_local.redrive --queue submit|check|media [--stack-name NAME]``: dead-letter queue → its queue.

After the cause of a failure is fixed (a deploy, a provider back up, a key replaced), the messages that landed
in a dead-letter queue are moved back to the queue they came from and are processed again; failed work is
never stranded. ``make redrive QUEUE=submit|check|media [STACK=name]`` runs this.

- Against a deployed stack (``--stack-name``): the queue URLs come from the stack's Outputs
  (``SubmitQueueUrl`` / ``SubmitDeadLetterQueueUrl``, ``CheckQueueUrl`` / ``CheckDeadLetterQueueUrl``);
  credentials and region come from the environment, as for the AWS CLI (``AWS_PROFILE``, ``AWS_REGION``).
- Against the local stack (no ``--stack-name``): from ``.local/stack.json``, written by ``make up``.

Before moving anything, the source queue's redrive policy must name the dead-letter queue, so messages can
only go back where they came from. Messages are moved in batches of up to 10: received from the dead-letter
queue, sent to the source queue with the same body and message attributes, and only then deleted from the
dead-letter queue. A message is never lost; if the move stops half-way, a message may be delivered twice,
which the pipeline absorbs (a job id is derived from its input, and every state change is conditional).
(SQS's own ``StartMessageMoveTask`` would do the same on AWS, but moto, which the local stack runs on,
does not implement it; one tested path serves both.)

The publisher's dead-letter queue is not redriven: its messages describe DynamoDB stream batches (shard and
sequence numbers), not work to queue again; see the README ("Deploy to AWS", alarms).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

QUEUES = {
    "submit": ("SubmitQueueUrl", "SubmitDeadLetterQueueUrl", "submit_queue_url", "submit_dead_letter_queue_url"),
    "check": ("CheckQueueUrl", "CheckDeadLetterQueueUrl", "check_queue_url", "check_dead_letter_queue_url"),
    "media": ("MediaQueueUrl", "MediaDeadLetterQueueUrl", "media_queue_url", "media_dead_letter_queue_url"),
}
"""For each queue: its stack Output names (source, dead-letter) and its keys in ``.local/stack.json``."""

BATCH = 10
"""SQS's largest receive and send batch."""


class RedriveError(Exception):
    """The queues could not be found or do not belong together, or SQS refused to take a message back."""


@dataclass(frozen=True)
class Queues:
    """A queue (``source_url``) and the dead-letter queue its redrive policy names (``dead_letter_url``)."""

    source_url: str
    dead_letter_url: str


def stack_queues(cloudformation: Any, stack_name: str, queue: str) -> Queues:
    """The queue and dead-letter queue of a deployed stack, from its Outputs.

    Raises
    ------
    RedriveError
        The stack does not exist or lacks the outputs.
    """
    source_output, dead_letter_output, _, _ = QUEUES[queue]
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError) as e:  # "does not exist", no credentials, no region
        raise RedriveError(f"Stack {stack_name!r} could not be read: {e}") from e
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [name for name in (source_output, dead_letter_output) if name not in outputs]
    if missing:
        raise RedriveError(f"Stack {stack_name!r} has no output {missing[0]}; is it a faceswap stack?")
    return Queues(outputs[source_output], outputs[dead_letter_output])


def local_queues(info: dict[str, str], queue: str) -> Queues:
    """The queue and dead-letter queue of the local stack, from ``.local/stack.json``."""
    _, _, source_key, dead_letter_key = QUEUES[queue]
    return Queues(info[source_key], info[dead_letter_key])


def check_pairing(sqs: Any, queues: Queues) -> None:
    """Refuse to move messages unless the source queue's redrive policy names the dead-letter queue.

    Raises
    ------
    RedriveError
        The source queue has no redrive policy, or it names another queue.
    """
    attributes = sqs.get_queue_attributes(QueueUrl=queues.source_url, AttributeNames=["RedrivePolicy"]).get(
        "Attributes", {}
    )
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=queues.dead_letter_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    if policy.get("deadLetterTargetArn") != dead_letter_arn:
        raise RedriveError(f"{queues.source_url} does not send its failures to {queues.dead_letter_url}.")


def redrive(sqs: Any, queues: Queues, *, max_messages: int | None = None, visibility_timeout: int = 60) -> int:
    """Move messages from the dead-letter queue back to the source queue until it is empty.

    Parameters
    ----------
    sqs
        A boto3 SQS client.
    queues
        Where from and where to.
    max_messages
        Stop after this many (default: all).
    visibility_timeout
        Seconds a received message stays hidden while it is being moved (it reappears in the dead-letter
        queue if the move is interrupted).

    Returns
    -------
    int
        How many messages were moved.

    Raises
    ------
    RedriveError
        SQS refused to take some messages back; they stay in the dead-letter queue (the others were moved).
    """
    moved = 0
    while max_messages is None or moved < max_messages:
        wanted = BATCH if max_messages is None else min(BATCH, max_messages - moved)
        messages = sqs.receive_message(
            QueueUrl=queues.dead_letter_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=1,
            VisibilityTimeout=visibility_timeout,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            attributes = _message_attributes(message)
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=queues.source_url, Entries=entries)
        sent = [messages[int(ok["Id"])] for ok in response.get("Successful", [])]
        if sent:
            sqs.delete_message_batch(
                QueueUrl=queues.dead_letter_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)],
            )
        moved += len(sent)
        if response.get("Failed"):
            first = response["Failed"][0]
            raise RedriveError(
                f"SQS refused {len(response['Failed'])} message(s) ({first.get('Code')}: {first.get('Message')}); "
                f"they stay in the dead-letter queue. {moved} moved before that."
            )
    return moved


def _message_attributes(message: dict[str, Any]) -> dict[str, Any]:
    """The message's own attributes as ``SendMessage`` takes them (data type and value only)."""
    return {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in (message.get("MessageAttributes") or {}).items()
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, find the queues, check they belong together and move the messages."""
    parser = argparse.ArgumentParser(
        prog="python -m faceswap_local.redrive",
        description="Move messages from a dead-letter queue back to its queue (after the cause is fixed).",
    )
    parser.add_argument("--queue", required=True, choices=sorted(QUEUES), help="which queue's dead-letter queue")
    parser.add_argument("--stack-name", help="a deployed stack; without it, the local stack (make up)")
    parser.add_argument("--region", help="the deployed stack's region (default: from the environment)")
    parser.add_argument("--stack-file", type=Path, help="the local stack's details (default: .local/stack.json)")
    parser.add_argument("--max-messages", type=int, help="move at most this many (default: all)")
    args = parser.parse_args(argv)

    if args.stack_name:
        session = boto3.session.Session(region_name=args.region)
        sqs = session.client("sqs")
        where = f"stack {args.stack_name}"
        try:
            queues = stack_queues(session.client("cloudformation"), args.stack_name, args.queue)
        except RedriveError as e:
            print(f"redrive: {e}", file=sys.stderr)
            return 1
    else:
        stack_file = args.stack_file
        if stack_file is None:
            from faceswap_local.__main__ import STACK_FILE as stack_file
        if not stack_file.exists():
            print("redrive: the local stack is not running (make up), and no --stack-name was given", file=sys.stderr)
            return 1
        info = json.loads(stack_file.read_text())
        sqs = boto3.client(
            "sqs",
            endpoint_url=info["aws_endpoint_url"],
            region_name=info["region"],
            aws_access_key_id=info["aws_access_key_id"],
            aws_secret_access_key=info["aws_secret_access_key"],
        )
        where = "the local stack"
        queues = local_queues(info, args.queue)
    try:
        check_pairing(sqs, queues)
        moved = redrive(sqs, queues, max_messages=args.max_messages)
    except RedriveError as e:
        print(f"redrive: {e}", file=sys.stderr)
        return 1
    print(f"moved {moved} message(s) from the {args.queue} dead-letter queue back to the {args.queue} queue ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
