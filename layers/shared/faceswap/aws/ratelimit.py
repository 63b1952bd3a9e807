"""The call ceilings' shared state on DynamoDB: :class:`DynamoRateLimiter`, used through
:class:`faceswap.gate.CallGate`, which holds a turn for each provider call.

Design
------
Every function that calls a provider shares the provider's ceilings (calls per second and per hour, as the provider
counts them) through one DynamoDB table (key ``window``, TTL ``expires_at``). The per-second ceiling is split into
**shares**, leased by execution environments (containers), so that a container making many calls writes once per
lease instead of twice per call:

- Per second: a provider with a ceiling of ``per_second`` calls has ``per_second`` shares, the attributes ``s0``,
  ``s1``, … of the item ``<provider>#shares`` (each the time, epoch seconds, its lease ends or, given back, it is
  next free) with their holders ``o0``, ``o1``, … (a random id per container). A container takes a free share with
  one conditional write (``s<i> <= now``) leasing it for :attr:`~DynamoRateLimiter.LEASE_SECONDS`, and keeps it:
  its calls through the share need no write at all. Within the container the share is paced as the slots of the
  previous design were: a call may start only :attr:`~DynamoRateLimiter.WINDOW_SECONDS` after the previous call
  through the share was answered (or failed). A request reaches the provider after it starts and before its answer
  comes back, so two calls through one share reach the provider more than a second apart however long the
  network held either of them.
- Hand-overs keep that spacing. A holder starts a call only while at least a call's longest duration
  (:attr:`~DynamoRateLimiter.CALL_SECONDS`) and a window are left on its lease, renewing the lease (one conditional
  write on its own holder id) when less is left: every call of a holder is over a window before its lease ends,
  and a share whose lease ran out (its holder frozen, idle or dead) can be taken by anyone. A holder gives a share
  back when another container waits for one (below) by setting it free a window after its last answer.
- Waiting: a container that finds no share free (after a strongly consistent read) marks the item ``want`` for
  :attr:`~DynamoRateLimiter.WANT_SECONDS` (at most one write per that period, whoever waits). A holder learns of it
  when its invocation ends (:meth:`~DynamoRateLimiter.end_invocation`, called by the handlers), from its view of
  the item, read again (eventually consistent, half a read unit) when older than
  :attr:`~DynamoRateLimiter.FRESH_SECONDS`, and gives its share back: while containers wait, a share changes hands
  once per invocation (a batch of messages, a callback), a take and a give-back, where a slot per call cost that
  for every call. Waiters read before they write and spread their retries, so few of them try the same share.
- Per hour: a counter per clock hour, incremented under the condition ``calls < per_hour`` (one write per call;
  only AIPhotoCraft counts per hour).

No one-second window at the provider holds more than ``per_second`` calls: each share contributes at most one call
to any window (pacing within a holder, the lease margin or the hand-back's window between holders), and a share
has one holder at a time (conditional writes; a refused write changes nothing). The proof is
``tests/unit/test_aws.py``'s simulation (containers that come and go, requests that arrive late) and the local
stack's call-ceiling load test. Writes per job at 1, 5 and 50 jobs per second are ``make bench``'s "ceiling"
part; the cost of the design is a take per container per lease, a renewal per :attr:`LEASE_SECONDS` minus the
margin of calls, and hand-overs only while containers wait. Its price is that a container holds one share of a
provider at a time (its own calls through it at most one per window after the previous answer), and a share held
by a container that stopped being invoked is idle until its lease ends.

Assumption, as before: a provider call is answered or given up within :attr:`CALL_SECONDS` (the provider client's
timeouts are 5 s to connect and 20 s per read or write, ``faceswap.wiring.PROVIDER_TIMEOUT``).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from faceswap.aws import error_code, translated
from faceswap.ports import Turn

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass
class _Held:
    """A share this container holds: its attribute (``s<i>``), lease end, when it was taken, and when the next call
    through it may start (epoch seconds)."""

    share: str
    until: float
    since: float
    next_start: float
    busy: bool = False


@dataclass
class _View:
    """This container's last view of a provider's shares item: lease ends by share, ``want`` and when it was read."""

    until: dict[str, float] = field(default_factory=dict)
    want: float = 0.0
    read_at: float = float("-inf")


class DynamoRateLimiter:
    """:class:`faceswap.ports.RateLimiter` on a DynamoDB table (key ``window``, TTL ``expires_at``); the
    algorithm is the module's "Design". One instance per container, called by one thread at a time."""

    #: After a call through a share is answered (or fails), the next call through it waits this long: one second,
    #: plus 50 ms for clock differences between hosts.
    WINDOW_SECONDS = 1.05
    #: Longest a provider call may take, answered or given up.
    CALL_SECONDS = 60.0
    #: A share's lease: a holder renews it when less than ``CALL_SECONDS + WINDOW_SECONDS`` is left.
    LEASE_SECONDS = 120.0
    #: How long one ``want`` mark lasts.
    WANT_SECONDS = 10.0
    #: A holder's view of the shares older than this is read again when its invocation ends.
    FRESH_SECONDS = 2.0
    #: Conditional writes tried on shares seen free before the answer is "wait".
    TRIES = 3

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        clock: Callable[[], float] = time.time,
        choice: Callable[[Sequence[str]], str] = random.choice,
        jitter: Callable[[], float] = random.random,
        holder: str | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._choice = choice
        self._jitter = jitter
        self._holder = holder or secrets.token_hex(8)
        self._held: dict[str, _Held] = {}  # provider -> the share held
        self._views: dict[str, _View] = {}  # provider -> the shares as last read

    @translated("dynamodb:UpdateItem")
    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        """See :meth:`faceswap.ports.RateLimiter.acquire`. Waits it answers are at most :attr:`WINDOW_SECONDS`
        for the per-second ceiling (shares are handed back sooner than leases end; the hour's: until the next)."""
        turn = Turn(provider=provider)
        if per_second > 0:
            turn = self._share_turn(provider, per_second)
            if turn.wait > 0:
                return turn
        if per_hour > 0:
            now = self._clock()
            hour = int(now // 3600)
            if not self._count(f"{provider}#hour#{hour}", per_hour, expires_at=(hour + 2) * 3600):
                if (held := self._held.get(provider)) is not None:
                    held.busy = False  # no call was made through the share
                return Turn(wait=round((hour + 1) * 3600 - now + 0.01, 3), provider=provider)
        return turn

    def release(self, turn: Turn) -> None:
        """See :meth:`faceswap.ports.RateLimiter.release`: the share's next call waits a window from now."""
        held = self._held.get(turn.provider)
        if turn.slot and held is not None and held.share == turn.slot:
            held.next_start = self._clock() + self.WINDOW_SECONDS
            held.busy = False

    def end_invocation(self) -> None:
        """See :meth:`faceswap.ports.RateLimiter.end_invocation`: gives each share held back if another container
        waits for one (its view of the item read again, eventually consistent, when older than
        :attr:`FRESH_SECONDS`), free a window after its last answer. Never raises: a failed write leaves the share
        leased until its end."""
        for provider, held in list(self._held.items()):
            now = self._clock()
            with contextlib.suppress(ClientError, BotoCoreError):
                view = self._views.setdefault(provider, _View())
                if now - view.read_at > self.FRESH_SECONDS:
                    self._read(provider, view, consistent=False)
                if view.want <= now:
                    continue
                del self._held[provider]
                free = max(held.next_start, now)
                self._client.update_item(
                    TableName=self._table,
                    Key=_shares_key(provider),
                    UpdateExpression="SET #share = :free, #holder = :nobody",
                    ConditionExpression="#holder = :me",
                    ExpressionAttributeNames={"#share": held.share, "#holder": _holder_of(held.share)},
                    ExpressionAttributeValues={
                        ":free": {"N": repr(free)},
                        ":nobody": {"S": "-"},
                        ":me": {"S": self._holder},
                    },
                )
                view.until[held.share] = free

    def _share_turn(self, provider: str, per_second: int) -> Turn:
        now = self._clock()
        held = self._held.get(provider)
        if held is not None and int(held.share[1:]) >= per_second:  # the ceiling was lowered
            del self._held[provider]
            held = None
        if held is not None:
            if held.busy:  # a turn asked for while this container's own call through the share is not answered
                return Turn(wait=self.WINDOW_SECONDS, provider=provider)
            if now < held.next_start:
                return Turn(wait=max(0.001, round(held.next_start - now, 3)), provider=provider)
            if held.until - now < self.CALL_SECONDS + self.WINDOW_SECONDS and not self._renew(provider, held, now):
                del self._held[provider]
            else:
                held.busy = True
                return Turn(provider=provider, slot=held.share, lease=held.until)
        return self._take(provider, per_second)

    def _take(self, provider: str, per_second: int) -> Turn:
        shares = [f"s{i}" for i in range(per_second)]
        view = self._views.setdefault(provider, _View())
        fresh, tries = False, 0
        while True:
            now = self._clock()
            free = [share for share in shares if view.until.get(share, 0.0) <= now]
            # Read before writing unless a share was already free when last read: one freed since may have been taken
            # by another waiter, and a refused write costs a write unit (a strongly consistent read, a quarter of that).
            known = [share for share in free if view.until.get(share, 0.0) <= view.read_at]
            if not known and not fresh:
                self._read(provider, view, consistent=True)
                fresh = True
                continue
            if not free:
                self._want(provider, view, now)
                soonest = min(view.until.get(share, 0.0) for share in shares)
                # Waiters spread out (a tenth of a window at most) so they do not all try the next free share at once.
                wait = min(soonest - now, self.WINDOW_SECONDS) + 0.1 * self.WINDOW_SECONDS * self._jitter()
                return Turn(wait=max(0.001, round(wait, 3)), provider=provider)
            if tries == self.TRIES:
                return Turn(wait=0.05, provider=provider)  # other containers keep taking the free shares first
            tries += 1
            share, until = self._choice(known or free), now + self.LEASE_SECONDS
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=_shares_key(provider),
                    UpdateExpression="SET #share = :until, #holder = :me, expires_at = :expires",
                    ConditionExpression="attribute_not_exists(#share) OR #share <= :now",
                    ExpressionAttributeNames={"#share": share, "#holder": _holder_of(share)},
                    ExpressionAttributeValues={
                        ":now": {"N": repr(now)},
                        ":until": {"N": repr(until)},
                        ":me": {"S": self._holder},
                        ":expires": {"N": str(int(until) + 3600)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
                self._saw(view, cast(Mapping[str, Any], e.response.get("Item") or {}), now)
                view.until.setdefault(share, now + self.WINDOW_SECONDS)  # taken meanwhile, whatever the answer held
                fresh = True
                continue
            view.until[share] = until
            self._held[provider] = _Held(share=share, until=until, since=now, next_start=now, busy=True)
            return Turn(provider=provider, slot=share, lease=until)

    def _renew(self, provider: str, held: _Held, now: float) -> bool:
        """Extend ``held``'s lease from ``now``; ``False`` if it is no longer this container's."""
        until = now + self.LEASE_SECONDS
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_shares_key(provider),
                UpdateExpression="SET #share = :until, expires_at = :expires",
                ConditionExpression="#holder = :me AND #share = :lease",
                ExpressionAttributeNames={"#share": held.share, "#holder": _holder_of(held.share)},
                ExpressionAttributeValues={
                    ":until": {"N": repr(until)},
                    ":me": {"S": self._holder},
                    ":lease": {"N": repr(held.until)},
                    ":expires": {"N": str(int(until) + 3600)},
                },
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return False
            raise
        held.until = until
        return True

    def _want(self, provider: str, view: _View, now: float) -> None:
        """Mark that a container waits for a share, unless a mark is already in force."""
        if view.want > now:
            return
        want = now + self.WANT_SECONDS
        with contextlib.suppress(ClientError):  # refused: another container marked it meanwhile
            self._client.update_item(
                TableName=self._table,
                Key=_shares_key(provider),
                UpdateExpression="SET want = :want",
                ConditionExpression="attribute_not_exists(want) OR want <= :now",
                ExpressionAttributeValues={":want": {"N": repr(want)}, ":now": {"N": repr(now)}},
            )
        view.want = want

    def _read(self, provider: str, view: _View, *, consistent: bool) -> None:
        item = self._client.get_item(TableName=self._table, Key=_shares_key(provider), ConsistentRead=consistent)
        self._saw(view, item.get("Item", {}), self._clock())

    @staticmethod
    def _saw(view: _View, item: Mapping[str, Any], now: float) -> None:
        view.until = {name: float(value["N"]) for name, value in item.items() if _is_share(name) and "N" in value}
        view.want = float(item.get("want", {}).get("N", 0.0))
        view.read_at = now

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


def _shares_key(provider: str) -> dict[str, Any]:
    """The rate-limit table's item holding ``provider``'s shares."""
    return {"window": {"S": f"{provider}#shares"}}


def _is_share(attribute: str) -> bool:
    """Whether ``attribute`` of the shares item is a share's lease end (``s0``, ``s1``, …)."""
    return attribute[:1] == "s" and attribute[1:].isdigit()


def _holder_of(share: str) -> str:
    """The attribute naming ``share``'s holder: ``s3`` → ``o3``."""
    return f"o{share[1:]}"
