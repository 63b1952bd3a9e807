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
  next free) with their holders ``o0``, ``o1``, … (a random id per container, made at its first take, so that
  execution environments resumed from one snapshot do not share it). A container takes a free share with one
  conditional write (``s<i> <= now``) and keeps it: its calls through the share need no write at all. Within the
  container the share is paced as the slots of the previous design were: a call may start only
  :attr:`~DynamoRateLimiter.WINDOW_SECONDS` after the previous call through it was answered (or failed), timed on
  the monotonic clock. A request reaches the provider after it starts and before its answer comes back, so two
  calls through one share reach the provider more than a second apart however long the network held either.
- Hand-overs keep that spacing. A holder starts a call only while its lease outlasts, by a window, every moment the
  call could still be running: the end of the current invocation (Lambda stops an invocation at its timeout and
  resets the environment, ending any request in flight), or :attr:`~DynamoRateLimiter.CALL_SECONDS` from now
  outside an invocation. Otherwise it first renews the lease (one conditional write on its own holder id and lease)
  to :attr:`~DynamoRateLimiter.LEASE_SECONDS` from now, or to that moment if later (a long invocation's lease is
  shortened again when it ends). So every call of a holder is over a window before its lease ends, and a share
  whose lease ran out (its holder frozen, idle or dead) can be taken by anyone.
- Waiting: a container that finds no share free (after a strongly consistent read) marks the item ``want`` for
  :attr:`~DynamoRateLimiter.WANT_SECONDS` (at most one write per that period, whoever waits). A holder learns of it
  when its invocation ends (:meth:`~DynamoRateLimiter.end_invocation`, called by the handlers), from its view of
  the item (read again, eventually consistent, when older than :attr:`~DynamoRateLimiter.FRESH_SECONDS`: a stale
  view only delays a hand-over), and gives its share back, free a window after its last answer: while containers
  wait, a share changes hands once per invocation (a batch of messages, a callback), a take and a give-back, where
  a slot per call cost that for every call. Waiters take only shares they read as free (a refused conditional write
  costs a write unit, a read a fifth of its price or less) and spread their retries.
- Per hour: a counter per clock hour, incremented under the condition ``calls < per_hour`` (one write per call;
  only AIPhotoCraft counts per hour).

No one-second window at the provider holds more than ``per_second`` calls: each share contributes at most one call
to any window (pacing within a holder; between holders, the lease margin or the give-back's window), and a share
has one holder at a time (conditional writes; a refused write changes nothing). ``tests/unit/test_aws.py``
checks it: deterministic cases (a call near the end of a lease, a holder whose lease was taken while it was frozen,
a give-back that must not free another's lease) and a simulation (containers that come and go and die mid-call,
requests that arrive late), with the local stack's call-ceiling load test. Writes per job at 1, 5 and 50 jobs per
second are ``make bench``'s "ceiling" part.

What it costs in time: a container holds one share of a provider at a time (its own calls through it at most one
per window after the previous answer), and a share held by a container that stopped being invoked is idle until its
lease ends (at most :attr:`LEASE_SECONDS`; for the media function, whose invocations may last 15 minutes, a lease
stretched for a call is shortened when the invocation ends, but not if the environment is stopped first).
Assumptions: hosts' clocks agree within 50 ms (the window's margin; Lambda's hosts keep time with the Amazon Time
Sync Service, but no accuracy is documented for them); and when the ceiling is lowered, environments still running
the old configuration keep the shares they hold above the new number until their leases end.
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
    """A share this container holds: its attribute (``s<i>``), its lease end (epoch seconds), when the next call
    through it may start (monotonic clock) and when, in epoch seconds, it is free for another container, and whether
    a call through it is running."""

    share: str
    until: float
    next_start: float
    free_at: float
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
    #: Longest a provider call may run outside an invocation whose end is known.
    CALL_SECONDS = 60.0
    #: A share's lease, from when it is taken or renewed.
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
        monotonic: Callable[[], float] = time.monotonic,
        choice: Callable[[Sequence[str]], str] = random.choice,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._monotonic = monotonic
        self._choice = choice
        self._jitter = jitter
        self._holder = ""  # made at the first take
        self._ends_at: float | None = None  # epoch seconds the current invocation is stopped at, if known
        self._held: dict[str, _Held] = {}  # provider -> the share held
        self._views: dict[str, _View] = {}  # provider -> the shares as last read

    def start_invocation(self, remaining_seconds: float) -> None:
        """See :meth:`faceswap.ports.RateLimiter.start_invocation`."""
        self._ends_at = self._clock() + remaining_seconds

    @translated("dynamodb:UpdateItem")
    def acquire(self, provider: str, *, per_second: int, per_hour: int) -> Turn:
        """See :meth:`faceswap.ports.RateLimiter.acquire`. Waits it answers are at most about a window for the
        per-second ceiling (shares are handed back sooner than leases end); the hour's, until the next hour."""
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
            held.next_start = self._monotonic() + self.WINDOW_SECONDS
            held.free_at = self._clock() + self.WINDOW_SECONDS
            held.busy = False

    def end_invocation(self) -> None:
        """See :meth:`faceswap.ports.RateLimiter.end_invocation`: gives each share held back, free a window after
        its last answer, if another container waits for one (the view of the item read again, eventually
        consistent, when older than :attr:`FRESH_SECONDS`); otherwise shortens a lease stretched for a long
        invocation to :attr:`LEASE_SECONDS`. Never raises: a failed write leaves the share leased until its end."""
        self._ends_at = None
        for provider, held in list(self._held.items()):
            now = self._clock()
            with contextlib.suppress(ClientError, BotoCoreError):
                view = self._views.setdefault(provider, _View())
                if now - view.read_at > self.FRESH_SECONDS:
                    self._read(provider, view, consistent=False)
                if view.want > now:
                    del self._held[provider]
                    free = max(held.free_at, now)
                    self._set_lease(provider, held, free, holder="-")
                    view.until[held.share] = free
                elif held.until > now + self.LEASE_SECONDS:
                    until = now + self.LEASE_SECONDS
                    self._set_lease(provider, held, until)
                    held.until = until

    def _share_turn(self, provider: str, per_second: int) -> Turn:
        held = self._held.get(provider)
        if held is not None and int(held.share[1:]) >= per_second:  # the ceiling was lowered
            del self._held[provider]
            held = None
        if held is not None:
            if held.busy:  # a turn asked for while this container's own call through the share is not answered
                return Turn(wait=self.WINDOW_SECONDS, provider=provider)
            if (early := held.next_start - self._monotonic()) > 0:
                return Turn(wait=max(0.001, round(early, 3)), provider=provider)
            now = self._clock()
            need = self._call_ends(now) + self.WINDOW_SECONDS
            if held.until >= need or self._renew(provider, held, max(now + self.LEASE_SECONDS, need)):
                held.busy = True
                return Turn(provider=provider, slot=held.share, lease=held.until)
            del self._held[provider]
        return self._take(provider, per_second)

    def _call_ends(self, now: float) -> float:
        """The latest moment (epoch seconds) a call starting ``now`` can still be running."""
        return self._ends_at if self._ends_at is not None and self._ends_at > now else now + self.CALL_SECONDS

    def _take(self, provider: str, per_second: int) -> Turn:
        shares = [f"s{i}" for i in range(per_second)]
        view = self._views.setdefault(provider, _View())
        self._holder = self._holder or secrets.token_hex(8)
        fresh, tries = False, 0
        while True:
            now = self._clock()
            free = [share for share in shares if view.until.get(share, 0.0) <= now]
            # Take only a share known free when the item was read: one freed since may have been taken by another
            # waiter, and a refused conditional write costs a write unit.
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
            share = self._choice(known or free)
            until = max(now + self.LEASE_SECONDS, self._call_ends(now) + self.WINDOW_SECONDS)
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
                item = cast(Mapping[str, Any], e.response.get("Item") or {})
                if _leased_to(item, share, self._holder, until):
                    pass  # the SDK sent the write again after it had succeeded: the share is ours
                else:
                    self._saw(view, item, now)
                    view.until.setdefault(share, now + self.WINDOW_SECONDS)  # taken meanwhile, whatever it held
                    fresh = True
                    continue
            view.until[share] = until
            self._held[provider] = _Held(share=share, until=until, next_start=self._monotonic(), free_at=now, busy=True)
            return Turn(provider=provider, slot=share, lease=until)

    def _renew(self, provider: str, held: _Held, until: float) -> bool:
        """Extend ``held``'s lease to ``until``; ``False`` if it is no longer this container's."""
        try:
            self._set_lease(provider, held, until)
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            item = cast(Mapping[str, Any], e.response.get("Item") or {})
            if not _leased_to(item, held.share, self._holder, until):  # else: the SDK's retry of a write that took
                return False
        held.until = until
        return True

    def _set_lease(self, provider: str, held: _Held, until: float, *, holder: str | None = None) -> None:
        """Set ``held``'s share to ``until`` (a lease end, or a free time with ``holder="-"``), on condition that it is
        still this container's under the lease it knows. Raises ``ClientError`` (a refused condition among them)."""
        values = {":until": {"N": repr(until)}, ":me": {"S": self._holder}, ":lease": {"N": repr(held.until)}}
        update = "SET #share = :until"
        if holder is not None:
            update += ", #holder = :holder"
            values[":holder"] = {"S": holder}
        else:
            update += ", expires_at = :expires"
            values[":expires"] = {"N": str(int(until) + 3600)}
        self._client.update_item(
            TableName=self._table,
            Key=_shares_key(provider),
            UpdateExpression=update,
            ConditionExpression="#holder = :me AND #share = :lease",
            ExpressionAttributeNames={"#share": held.share, "#holder": _holder_of(held.share)},
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

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


def _leased_to(item: Mapping[str, Any], share: str, holder: str, until: float) -> bool:
    """Whether ``item`` (a refused write's ``ALL_OLD``) already has ``share`` leased to ``holder`` until ``until``:
    the SDK retried a conditional write that had succeeded (a retried write is refused when its condition is on the
    attribute it changed)."""
    return item.get(_holder_of(share), {}).get("S") == holder and float(item.get(share, {}).get("N", "nan")) == until
