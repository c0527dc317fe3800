"""`within`: asyncio.wait_for without its lost cancellations.

Python 3.11's `asyncio.wait_for` returns (or raises) the awaited thing's outcome when that
completes in the same step the caller is cancelled, and the cancellation is dropped: a loop
that waits for an event with a timeout then goes round again instead of stopping (the modem
part's poller never stopped, and its part never finished stopping, when its port closed as it
was cancelled). 3.11's `asyncio.timeout` is no way out: in a task already cancelled once (the
clean-up after a cancellation, which needs timeouts most) its expiry raises CancelledError,
not TimeoutError. `within` waits on its own terms: a cancellation of the caller always wins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await `awaitable`, raising TimeoutError after `timeout` seconds (None: no limit); the
    awaited thing is cancelled, and its end awaited, on a timeout or a cancellation."""
    inner: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout)
    except asyncio.CancelledError:
        await _cancel(inner)
        raise
    if not done:
        await _cancel(inner)
        raise TimeoutError
    return inner.result()


async def _cancel(inner: asyncio.Future[T]) -> None:
    """Cancel `inner` and wait until it has ended (its outcome is not ours to raise; a
    cancellation of ours meanwhile is)."""
    inner.cancel()
    while not inner.done():
        await asyncio.wait({inner})
    if not inner.cancelled():
        inner.exception()  # retrieved: the caller is leaving on a timeout or a cancel
