"""The supervisor's process resources: the loop's I/O threads and the open-file limit."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import resource
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

LOG = logging.getLogger(__name__)

WANT_NOFILE = 8192  # 1,024 HTTP connections plus parts, with room

P = ParamSpec("P")
T = TypeVar("T")


class IoExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's threads for blocking libraries (serial, netlink, DNS, HTTP clients).

    Unlike ThreadPoolExecutor's, its threads are daemons and shutdown waits only briefly: a
    call wedged in the kernel (a USB modem in D state) must not keep the process from exiting
    when systemd asks it to stop. It subclasses ThreadPoolExecutor only because
    `loop.set_default_executor` insists on one; `submit` and `shutdown` are its own."""

    def __init__(self, max_workers: int = 8, join_timeout: float = 0.2) -> None:
        super().__init__(max_workers, thread_name_prefix="failberry-io")  # starts no thread
        self.max_workers = max_workers
        self.join_timeout = join_timeout
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any],
                                            Callable[[], Any]] | None] = queue.SimpleQueue()
        self._daemons: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """Run `fn(*args, **kwargs)` on one of the threads."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            fut: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._work.put((fut, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._daemons) < self.max_workers:
                t = threading.Thread(target=self._worker, daemon=True,
                                     name=f"failberry-io-{len(self._daemons)}")
                t.start()
                self._daemons.append(t)
            return fut

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fut, call = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(call())
                except BaseException as e:  # noqa: BLE001 -- handed to the awaiting coroutine
                    fut.set_exception(e)
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads; wait at most `join_timeout` for each that is busy."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._daemons:
                self._work.put(None)
        if wait:
            for t in self._daemons:
                t.join(self.join_timeout)
                if t.is_alive():
                    LOG.warning("thread %s is still busy at exit; leaving it", t.name)


def raise_nofile(want: int = WANT_NOFILE) -> int:
    """Raise the soft open-file limit toward `want` (within the hard limit); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        LOG.debug("open-file limit raised from %d to %d", soft, target)
        return target
    return soft
