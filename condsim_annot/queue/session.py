"""The queue an annotator's screen drives: next question, answer, undo, progress, close.

Every answer is committed (vote + slot + session statistics, one transaction) before :meth:`Queue.next`
can hand out another question; a killed process loses nothing it acknowledged, and its pending slot is
the first thing the next session shows.  Undo is a new vote state (``store_api.undo_vote``)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from ..criteria import get_criterion
from ..db import Store
from ..errors import InputError
from ..models import Criterion, Triplet, Vote
from ..store_api import get_or_create_annotator
from .base import Mode, undo_latest
from .best_of_k import BestOfKMode
from .claims import ClaimStore
from .context import QueueContext
from .items import AnyItem, CriterionInfo, Progress, pk
from .pairwise import PairwiseMode
from .prefetch import Prefetcher
from .review import ReviewMode
from .sql import HUMAN_SOURCES
from .stats import SessionStats

MODES: dict[str, type[Mode]] = {"pairwise": PairwiseMode, "best-of-k": BestOfKMode, "review": ReviewMode}


def _check(mode: str, overlap: int, attention_rate: float, k: int) -> None:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if overlap < 1:
        raise InputError("--overlap must be at least 1")
    if not 0.0 <= attention_rate <= 1.0:
        raise InputError("--attention-rate must be between 0 and 1")
    if mode == "best-of-k" and not 3 <= k <= 9:
        raise InputError("--k must be between 3 and 9 (best-of-k: the anchor with k candidates)")


def _criteria(s: Session, name: str | None) -> list[Criterion]:
    """The named criterion, or every criterion (one after another)."""
    if name:
        return [get_criterion(s, name)]
    crits = list(s.scalars(select(Criterion).order_by(col(Criterion.id))).all())
    if not crits:
        raise InputError("the store has no criteria yet: `condsim-annot criteria add NAME -d DESCRIPTION`")
    return crits


class Queue:
    """An annotator's session over the store (one per process/screen).

    >>> q = Queue(store, "alice", criterion="proof-strategy")
    >>> item = q.next()                 # claims a triplet (pending assignment), or None
    >>> q.answer(item, "A")             # committed before returning
    >>> q.undo()                        # the undone item, to show again
    >>> q.close()                       # session summary (dict)
    """

    def __init__(self, store: Store, annotator: str, *, criterion: str | None = None, mode: str = "pairwise",
                 overlap: int = 2, attention_rate: float = 0.05, k: int = 4, seed: int | None = None,
                 uncertainty: bool = True):
        _check(mode, overlap, attention_rate, k)
        self.store, self.mode, self.overlap, self.k = store, mode, overlap, k
        self.annotator = annotator
        self.key = uuid.uuid4().hex
        rng = random.Random(seed)
        params = {"overlap": overlap, "attention_rate": attention_rate, "k": k if mode == "best-of-k" else None,
                  "criterion": criterion, "seed": seed}
        with store.transaction() as s:
            self.annotator_id = pk(get_or_create_annotator(s, annotator, kind="human"))
            crits = _criteria(s, criterion)
            self.criteria = [CriterionInfo(pk(c), c.name, c.description, c.version) for c in crits]
            stats = SessionStats(s, key=self.key, annotator=annotator, annotator_id=self.annotator_id, mode=mode,
                                 criterion_id=pk(crits[0]) if criterion else None,
                                 criteria=[c.name for c in crits], params=params)
        claims = ClaimStore(store, self.annotator_id, [c.id for c in self.criteria], overlap=overlap,
                            attention_rate=attention_rate, rng=rng)
        self.ctx = QueueContext(store, self.annotator_id, self.key, {c.id: c for c in self.criteria},
                                {pk(c): c.corpus_id for c in crits}, claims, stats, rng, k=k,
                                source="review" if mode == "review" else "tui")
        self._mode = MODES[mode](self.ctx)
        self._lock = threading.RLock()
        self._prefetch: Prefetcher[AnyItem] = Prefetcher(store, self._lock)
        self._available: int | None = None
        if uncertainty and mode != "review":
            claims.load_uncertain()
        self._done0 = self._mode.done_before()

    @property
    def stats(self) -> SessionStats:
        return self.ctx.stats

    # ------------------------------------------------------------------ questions and answers

    def next(self, exclude: tuple[int, ...] = ()) -> AnyItem | None:
        """The next question (claimed and committed), or None when nothing is left."""
        item = self._prefetch.take()
        if item is not None and not exclude:
            item.shown_at = time.monotonic()
            return item
        with self._lock:
            return self._mode.next(exclude)

    def prefetch(self, showing: AnyItem | None, on_ready: Callable[[AnyItem], object] | None = None) -> None:
        """Claim the question after ``showing`` in a background thread, while the annotator reads.

        The claim is a normal pending assignment (a killed session resumes it after the one on
        screen); :meth:`next` hands it out without touching the store on the key press."""
        if not self._mode.prefetches or showing is None or self._prefetch.busy:
            return
        tid = getattr(showing, "triplet_id", None)
        self._prefetch.start(lambda: self._mode.next((tid,) if tid is not None else ()), on_ready)

    def wait_prefetch(self) -> None:
        """Block until a look-ahead claim in flight is committed."""
        self._prefetch.wait()

    def answer(self, item: AnyItem, choice: str | int, *, latency_ms: float | None = None) -> list[int]:
        """Record an answer and commit.  ``choice``: ``A``/``B``/``tie``/``cant_tell``/``skip``
        (presented terms), or for best-of-k the index of the chosen candidate.  Returns vote ids."""
        if latency_ms is None:
            latency_ms = (time.monotonic() - item.shown_at) * 1000.0
        with self._lock:  # a look-ahead claim in flight finishes first
            return self._mode.answer(item, choice, latency_ms)

    def undo(self) -> AnyItem | None:
        """Undo this annotator's latest answer (a new state, no row is lost); returns it to show again."""
        self._prefetch.drop()
        with self.store.transaction() as s:
            u = undo_latest(s, self.ctx)
            if u is None:
                return None
            self._mode.reopen(s, u)
            self.stats.undone(s, comparisons=len(u.triplet_ids) if u.group_id else 1)
        self._mode.after_undo()
        return self._mode.shown_again(u)

    # ------------------------------------------------------------------ progress

    def why_empty(self) -> dict[str, int]:
        """Why :meth:`next` has nothing left (for the empty screen): the criteria's triplets, how many
        this annotator answered, and the most distinct annotators any other triplet already has."""
        crits = list(self.ctx.criteria)
        plain = (col(Triplet.criterion_id).in_(crits), col(Triplet.is_attention_check).is_(False))
        with self.store.session() as s:
            total = s.scalar(select(func.count()).select_from(Triplet).where(*plain))
            mine = s.scalar(select(func.count(func.distinct(Vote.triplet_id)))
                            .join(Triplet, col(Triplet.id) == Vote.triplet_id)
                            .where(*plain, Vote.annotator_id == self.annotator_id, Vote.state != "undone"))
            held = (select(func.count(func.distinct(Vote.annotator_id)).label("n"))
                    .join(Triplet, col(Triplet.id) == Vote.triplet_id)
                    .where(*plain, Vote.state == "active", Vote.choice != "skip", col(Vote.source).in_(HUMAN_SOURCES),
                           Vote.annotator_id != self.annotator_id)
                    .group_by(Vote.triplet_id).subquery())
            most = s.scalar(select(func.max(held.c.n)))
        return {"total": int(total or 0), "mine": int(mine or 0), "most_others": int(most or 0),
                "overlap": self.overlap}

    def count_available(self) -> int:
        """How many triplets this annotator could still be given (slow on big stores: call from a worker)."""
        if isinstance(self._mode, ReviewMode):
            return self._mode.total
        n = self.ctx.claims.count_available()
        # the annotator's answers so far + what is left; attention checks are extra
        self._available = n + self.stats.done
        return n

    def progress(self) -> Progress:
        st = self.stats
        vpm = st.votes_per_min()
        if isinstance(self._mode, ReviewMode):
            done = st.votes
            assigned = self._mode.total if self._mode.todo is not None else None
            per_answer = 1.0
        else:
            done = self._done0 + st.done
            assigned = (self._done0 + self._available) if self._available is not None else None
            per_answer = (st.done / st.votes) if st.votes else 1.0
        eta = None
        if assigned is not None and vpm:
            eta = max(assigned - done, 0) / max(per_answer, 1e-9) / vpm * 60.0
        return Progress(done, assigned, st.votes, vpm, eta)

    def close(self) -> dict[str, Any]:
        """End the session (the stats row gets its end time); returns the summary."""
        self._prefetch.shutdown()
        self.stats.end(self.store)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return self.stats.summary(self._done0 + self.stats.done)
