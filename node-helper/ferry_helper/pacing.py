"""A per-migration bandwidth limit: a token bucket that paces one byte stream.

A MigrationPolicy's ``bandwidthPerMigration`` reaches the source helper as
bytes per second on each request that sends something (the archive's
``send``, a stored checkpoint's ``send-stored``, the page server's traffic of
a ``checkpoint``). The sender asks the :class:`Pacer` before it writes each
piece (:meth:`Pacer.spend`) and sleeps when it is ahead of the rate.

The bucket starts empty and holds at most ``burst`` bytes (about a tenth of a
second at the rate, at most :data:`MAX_BURST`), so over any stretch of ``t``
seconds the stream sends at most ``burst + rate * t`` bytes, and its average
from the first byte on is the rate itself, not the rate plus a head start.
A piece larger than what the bucket holds is let through and paid for by the
wait before the next one. Sleeps are ``asyncio`` sleeps: the event loop
serves the helper's other operations meanwhile.

A pacer without a rate paces nothing and only measures: every sender reports
the average it achieved (:meth:`Pacer.measured`), limited or not, so the
operator can show what a migration got next to what was configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: The most a paced stream sends ahead of its rate, and the largest piece it writes at once.
MAX_BURST = 256 * 1024
#: The smallest burst (and piece): below it the per-piece overhead is not worth it.
MIN_BURST = 16 * 1024
#: A burst is about this long at the rate.
BURST_SECONDS = 0.1


def burst_for(rate: int | None) -> int:
    """The burst of a pacer at ``rate``: BURST_SECONDS of it, within MIN_BURST..MAX_BURST."""
    if rate is None:
        return MAX_BURST
    return max(MIN_BURST, min(MAX_BURST, int(rate * BURST_SECONDS)))


class Pacer:
    """Holds one byte stream to ``rate`` bytes per second (None: as fast as it goes).

    ``clock`` and ``sleep`` are for tests; a pacer serves one stream, from one task.
    """

    def __init__(
        self,
        rate: int | None,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate is a positive number of bytes per second, not {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else burst_for(rate)
        if self.burst <= 0:
            raise ValueError(f"a burst is a positive number of bytes, not {self.burst}")
        self._clock = clock
        self._sleep = sleep
        #: Bytes the stream may send now; negative: owed, paid by the next wait.
        self._tokens = 0.0
        self._updated = 0.0
        #: Bytes spent so far, and when the first of them was (None: none yet).
        self.sent = 0
        self.started: float | None = None
        #: When the stream ended (:meth:`finish`); None while it runs.
        self.finished: float | None = None

    @property
    def limited(self) -> bool:
        return self.rate is not None

    @property
    def piece(self) -> int:
        """How much a paced sender should write at once (its burst)."""
        return self.burst

    async def spend(self, n: int) -> None:
        """Wait until ``n`` more bytes may be sent, then count them as sent."""
        if n < 0:
            raise ValueError(f"cannot spend {n} bytes")
        now = self._clock()
        if self.started is None:
            self.started = self._updated = now
        self.sent += n
        if self.rate is None or n == 0:
            return
        refilled = self._tokens + (now - self._updated) * self.rate
        self._tokens = min(float(self.burst), refilled) - n
        self._updated = now
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.rate)

    def finish(self) -> None:
        """Note that the stream ended now (the first call counts)."""
        if self.finished is None:
            self.finished = self._clock()

    def measured(self) -> float | None:
        """The stream's average in bytes per second, from its first byte to its end (or
        now); None before anything was sent or when no time has passed."""
        if self.started is None or self.sent == 0:
            return None
        end = self.finished if self.finished is not None else self._clock()
        elapsed = end - self.started
        return self.sent / elapsed if elapsed > 0 else None
