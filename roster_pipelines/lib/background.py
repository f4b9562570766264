"""One piece of work started in a thread of its own while the caller goes on.

For I/O that overlaps the caller's work (database reads, re-reading files): the
database, ADBC and polars release the GIL while they wait or compute."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_background(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """`work(*args, **kwargs)` running in a new thread; `.result()` waits for it and
    raises what it raised."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=getattr(work, "__name__", "work"))
    try:
        return pool.submit(work, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one piece of work
