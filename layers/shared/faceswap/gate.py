"""The call gate: every call to a provider's API waits here for a turn under the provider's ceilings.

The ceilings (calls per second and per hour, from the provider registry's defaults or the ``ProviderRateLimits``
parameter) are shared by every function through a :class:`faceswap.ports.RateLimiter` (on AWS the DynamoDB
algorithm of :mod:`faceswap.ratelimit`). Short waits are slept through; a longer one raises ``RateLimited`` so the
caller hands its work back to its queue rather than hold a function for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from faceswap.errors import RateLimited
from faceswap.ports import RateLimiter


@dataclass(kw_only=True)
class CallGate:
    """Turns for provider calls under shared ceilings.

    Attributes
    ----------
    limiter
        The shared limiter; ``None``: no ceilings (every call goes ahead).
    ceilings
        ``{provider: (per_second, per_hour)}``; 0 = no ceiling; a provider not named has none.
    max_wait
        Longest a caller waits in all for a turn, in seconds, unless it asks for another.
    sleep
        Sleeps a number of seconds (injected by tests).
    """

    limiter: RateLimiter | None
    ceilings: Mapping[str, tuple[int, int]]
    max_wait: float = 3.0
    sleep: Callable[[float], None] = time.sleep

    @contextmanager
    def turn(self, provider: str, *, max_wait: float | None = None) -> Iterator[None]:
        """Hold a turn under ``provider``'s ceilings for one call: the block makes the call.

        The turn is given back when the block ends (the call was answered or failed), and the limiter counts the
        ceiling from then, so network delays cannot bunch calls up where the provider counts them.

        Raises
        ------
        RateLimited
            Before the block runs, when the wait would be longer than ``max_wait`` seconds in all (default: the
            gate's); ``retry_after`` says when a turn is expected.
        """
        per_second, per_hour = self.ceilings.get(provider, (0, 0))
        limiter = self.limiter
        if limiter is None or not (per_second or per_hour):
            yield
            return
        limit = self.max_wait if max_wait is None else max_wait
        waited = 0.0
        while True:
            turn = limiter.acquire(provider, per_second=per_second, per_hour=per_hour)
            if turn.wait <= 0:
                break
            if waited + turn.wait > limit:
                raise RateLimited(
                    f"The ceiling of calls to {provider} is reached; retry in {turn.wait:.1f} s.",
                    retry_after=turn.wait,
                )
            self.sleep(turn.wait)
            waited += turn.wait
        try:
            yield
        finally:
            limiter.release(turn)

    @contextmanager
    def invocation(self, remaining_seconds: float) -> Iterator[None]:
        """Wrap a handler's invocation, which Lambda stops after ``remaining_seconds``: the limiter bounds its calls by
        that, and gives back what the container holds when it ends if others wait
        (:meth:`faceswap.ports.RateLimiter.start_invocation`, :meth:`~faceswap.ports.RateLimiter.end_invocation`)."""
        if self.limiter is None:
            yield
            return
        self.limiter.start_invocation(remaining_seconds)
        try:
            yield
        finally:
            self.limiter.end_invocation()
