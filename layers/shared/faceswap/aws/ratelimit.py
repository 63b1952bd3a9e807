"""The call ceilings' shared state on DynamoDB: :class:`DynamoRateLimiter`, used through
:class:`faceswap.gate.CallGate`, which holds a turn for each provider call.

Design
------
Every function that calls a provider shares the provider's ceilings (calls per second and per hour, as the provider
counts them) through one DynamoDB table (key ``window``, TTL ``expires_at``):

- Per second: each provider has ``per_second`` call slots, the attributes ``s0``, ``s1``, … of the item
  ``<provider>#slots``, each holding the time (epoch seconds) it is next free. A call takes a free slot with a
  conditional write that marks it busy for ``LEASE_SECONDS``; when the call is answered (or fails), ``release``
  marks the slot free ``WINDOW_SECONDS`` after that moment. A request reaches the provider before its answer comes
  back, so two calls through one slot reach the provider more than a second apart however long the network held
  either of them, and no one-second window, as the provider counts, ever holds more than ``per_second`` calls. A
  function that dies holding a slot loses it only until the lease runs out.
- Per hour: a counter per clock hour, incremented under the condition ``calls < per_hour``.
- Each container remembers when it last saw each slot free, so a busy provider is usually answered "wait" without
  a read; a refused write returns the item as it is (``ReturnValuesOnConditionCheckFailure``), so contention costs
  no extra read.

Conditional writes make concurrent functions share the ceilings; a refused write changes nothing. The proof that
no second ever holds more than the ceiling is ``tests/unit/test_aws.py``'s simulation and the local stack's
call-ceiling load test. Its cost per call (a take and a give-back) is what the cold start and cost issue revisits.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from faceswap.aws import error_code, translated
from faceswap.ports import Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoRateLimiter:
    """:class:`faceswap.ports.RateLimiter` on a DynamoDB table (key ``window``, TTL ``expires_at``); the
    algorithm is the module's "Design"."""

    #: How long a taken slot stays busy if it is never released: longer than any provider call may take.
    LEASE_SECONDS = 60.0
    #: How long after a call is answered its slot stays busy: one second, plus 50 ms for clock differences
    #: between hosts.
    WINDOW_SECONDS = 1.05
    #: Conditional writes tried on slots seen free before the answer is "wait".
    TRIES = 3

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        clock: Callable[[], float] = time.time,
        choice: Callable[[Sequence[str]], str] = random.choice,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._choice = choice
        self._seen: dict[str, dict[str, float]] = {}  # provider -> slot -> free at, as last read

    @translated("dynamodb:UpdateItem")
    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        """See :meth:`faceswap.ports.RateLimiter.acquire`. Waits it answers are at most :attr:`WINDOW_SECONDS`."""
        turn = Turn(provider=provider)
        if per_second > 0:
            turn = self._take_slot(provider, per_second)
            if turn.wait > 0:
                return turn
        if per_hour > 0:
            now = self._clock()
            hour = int(now // 3600)
            if not self._count(f"{provider}#hour#{hour}", per_hour, expires_at=(hour + 2) * 3600):
                self._set_slot(turn, free_at=now)  # no call was made
                return Turn(wait=round((hour + 1) * 3600 - now + 0.01, 3), provider=provider)
        return turn

    def release(self, turn: Turn) -> None:
        """See :meth:`faceswap.ports.RateLimiter.release`. If the write fails, the slot frees when its lease ends."""
        self._set_slot(turn, free_at=self._clock() + self.WINDOW_SECONDS)

    def _take_slot(self, provider: str, per_second: int) -> Turn:
        slots = [f"s{i}" for i in range(per_second)]
        key = _slots_key(provider)
        seen = self._seen.setdefault(provider, {})
        fresh, tries = False, 0
        while True:
            now = self._clock()
            free = [slot for slot in slots if seen.get(slot, 0.0) <= now]
            if not free and not fresh:  # what this container saw last may be stale: read the slots
                item = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
                self._saw(seen, slots, item)
                fresh = True
                continue
            if not free:
                # Busy slots free a window after their calls are answered; one still in flight, later than that.
                soonest = min(min(seen.get(slot, 0.0) for slot in slots), now + self.WINDOW_SECONDS)
                return Turn(wait=max(0.001, round(soonest - now, 3)), provider=provider)
            if tries == self.TRIES:
                return Turn(wait=0.05, provider=provider)  # other functions keep taking the free slots first
            tries += 1
            slot, lease = self._choice(free), now + self.LEASE_SECONDS
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET #slot = :lease, expires_at = :expires",
                    ConditionExpression="attribute_not_exists(#slot) OR #slot <= :now",
                    ExpressionAttributeNames={"#slot": slot},
                    ExpressionAttributeValues={
                        ":now": {"N": repr(now)},
                        ":lease": {"N": repr(lease)},
                        ":expires": {"N": str(int(lease) + 3600)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
                self._saw(seen, slots, cast(Mapping[str, Any], e.response.get("Item") or {}))
                seen.setdefault(slot, now + self.WINDOW_SECONDS)  # taken meanwhile, whatever the answer held
                fresh = True
                continue
            seen[slot] = lease
            return Turn(provider=provider, slot=slot, lease=lease)

    @staticmethod
    def _saw(seen: dict[str, float], slots: Sequence[str], item: Mapping[str, Any]) -> None:
        seen.clear()
        seen.update({slot: float(item[slot]["N"]) for slot in slots if "N" in item.get(slot, {})})

    def _set_slot(self, turn: Turn, *, free_at: float) -> None:
        if not turn.slot:
            return
        self._seen.setdefault(turn.provider, {})[turn.slot] = free_at
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.update_item(
                TableName=self._table,
                Key=_slots_key(turn.provider),
                UpdateExpression="SET #slot = :free",
                ConditionExpression="#slot = :lease",
                ExpressionAttributeNames={"#slot": turn.slot},
                ExpressionAttributeValues={":free": {"N": repr(free_at)}, ":lease": {"N": repr(turn.lease)}},
            )

    def _count(self, window: str, limit: int, *, expires_at: int) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"window": {"S": window}},
                UpdateExpression="ADD calls :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(calls) OR calls < :limit",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":expires": {"N": str(expires_at)},
                },
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _slots_key(provider: str) -> dict[str, Any]:
    """The rate-limit table's item holding ``provider``'s call slots."""
    return {"window": {"S": f"{provider}#slots"}}
