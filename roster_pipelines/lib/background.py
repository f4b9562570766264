"""One piece of work started in a thread of its own while the caller goes on.

For I/O that overlaps the caller's work (database reads, re-reading files): the
database, ADBC and polars release the GIL while they wait or compute."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def in_background(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """`work(*args, **kwargs)` running in a new thread; `.result()` waits for it and
    raises what it raised."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=getattr(work, "__name__", "work"))
    try:
        return pool.submit(work, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one piece of work


class Deferred(Generic[T]):
    """`work(*args, **kwargs)` kept for later: `start()` runs it in a thread of its own
    (once), `result()` starts it if nobody has and waits for it. For work that should
    run where a core is idle, not where it was made."""

    def __init__(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> None:
        self._work, self._args, self._kwargs = work, args, kwargs
        self._future: Future[T] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._future is None:
                self._future = in_background(self._work, *self._args, **self._kwargs)

    def started(self) -> bool:
        return self._future is not None

    def result(self) -> T:
        self.start()
        assert self._future is not None
        return self._future.result()
