"""Look-ahead claims: the next question is claimed in a background thread while the annotator reads,
so a key press only commits the answer and swaps the screen."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..db import Store
from ..errors import CondsimError

T = TypeVar("T")

#: What a failed look-ahead claim can raise; the foreground claims again instead.
CLAIM_ERRORS = (SQLAlchemyError, CondsimError)


class Prefetcher(Generic[T]):
    """At most one claim ahead, run under the queue's lock (answers and claims never interleave)."""

    def __init__(self, store: Store, lock: threading.RLock):
        self.store = store
        self.lock = lock
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[T | None] | None = None

    @property
    def busy(self) -> bool:
        return self._ahead is not None

    def start(self, claim: Callable[[], T | None], on_ready: Callable[[T], object] | None = None) -> None:
        """Run ``claim`` in the background; ``on_ready(item)`` once it produced one (from that thread)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="condsim-queue")
        self._ahead = self._pool.submit(self._work, claim)
        if on_ready is not None:  # e.g. the TUI renders the next documents while the annotator reads
            self._ahead.add_done_callback(lambda f: _notify(f, on_ready))

    def _work(self, claim: Callable[[], T | None]) -> T | None:
        with self.lock:
            item = claim()
            if self.store.dialect == "sqlite":
                # fold the WAL into the database now, off the key press: otherwise every ~100
                # answers one commit pays SQLite's automatic checkpoint (100-300 ms)
                with self.store.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            return item

    def wait(self) -> None:
        """Let a claim in flight finish (tests and benchmarks look at the store after it)."""
        if self._ahead is not None:
            self._ahead.exception()

    def take(self) -> T | None:
        """The look-ahead item, or None (none started, nothing left, or the claim failed: claim again)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        try:
            return ahead.result()
        except CLAIM_ERRORS:
            return None

    def drop(self) -> None:
        """Forget the look-ahead item (its assignment stays pending and is served in claim order)."""
        self.take()

    def shutdown(self) -> None:
        self.drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _notify(f: Future, on_ready: Callable[[T], object]) -> None:
    if f.exception() is None and f.result() is not None:
        on_ready(f.result())
