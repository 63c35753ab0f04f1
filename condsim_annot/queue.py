"""The annotation queue, store side: claim the next triplet, record an answer, undo, review.

Pure of Textual, so it can be tested and benchmarked alone; the TUI (``condsim_annot.tui``)
is a thin view over a :class:`Queue`.

Rules
-----
* A queue slot is a row of the foundation ``assignment`` table (``pending`` while the
  triplet is on the annotator's screen, ``done`` once answered, ``released`` when a
  best-of-k grid showed it but the answer did not decide it).  The presented A/B order
  is drawn at claim time and kept in ``assignment.swapped``, so a resumed session shows
  the same screen; the vote stores it again (``vote.swapped``) with the choice in
  canonical terms.
* An annotator never gets a triplet they already have a vote or an assignment for.
  A triplet is *needed* while fewer than ``overlap`` distinct annotators hold it
  (a pending assignment, or an active human vote that is not a skip).
* Most needed first: a calibration run's uncertain/contested triplets that still need
  votes (most uncertain first), then ``priority`` (highest first).  Hidden attention
  checks (``Triplet.is_attention_check``) are mixed in at ``attention_rate``; they do not
  count against the overlap (everybody may get each once).
* Claiming is atomic across processes: ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED`` on
  PostgreSQL (with a re-count under the lock), ``BEGIN IMMEDIATE`` on SQLite.  So
  concurrent annotators get disjoint work where the overlap allows.
* Every answer is committed (vote + assignment + session stats, one transaction) before
  :meth:`Queue.next` can hand out another triplet; a killed process loses nothing it
  acknowledged, and its pending assignment is the first thing the next session shows.
* Undo is a new state (``store_api.undo_vote``): the row stays, marked ``undone``, and the
  triplet goes back to ``pending`` for this annotator.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional, Union

from datetime import timedelta

from sqlalchemy import DateTime, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from .db import Store
from .errors import CondsimError, InputError
from .models import Annotator, Assignment, CalibrationRun, Criterion, Document, GoldLabel, Triplet, Vote, utcnow
from .store_api import add_triplet, get_or_create_annotator, record_vote, to_canonical_choice, undo_vote

HUMAN_SOURCES = ("tui", "argilla", "import")
PRESENTED = {"A": "first", "B": "second", "first": "first", "second": "second", "tie": "tie",
             "cant_tell": "cant_tell", "skip": "skip"}
MODES = ("pairwise", "best-of-k", "review")
PENDING_TTL = timedelta(hours=12)


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Doc:
    id: int
    ext_id: str
    text: str


@dataclass(frozen=True)
class CriterionInfo:
    id: int
    name: str
    description: str
    version: int = 1


@dataclass
class Item:
    """One pairwise question: anchor, A and B as shown."""

    triplet_id: int
    criterion: CriterionInfo
    anchor: Doc
    a: Doc
    b: Doc
    swapped: bool  # True when the canonical second candidate is shown as A
    attention: bool = False
    expected: Optional[str] = None  # canonical answer of an attention check
    resumed: bool = False
    previous: Optional[str] = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    rationale: Optional[str] = None
    shown_at: float = field(default_factory=time.monotonic)

    kind = "pairwise"


@dataclass
class GroupItem:
    """One best-of-k question: the anchor and k candidates in shown order."""

    group_id: str
    criterion: CriterionInfo
    anchor: Doc
    candidates: list[Doc]
    seeds: list[int]  # claimed triplets (with pending assignments) the grid was built from
    resumed: bool = False
    previous: Optional[str] = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    rationale: Optional[str] = None
    shown_at: float = field(default_factory=time.monotonic)

    kind = "best-of-k"


@dataclass(frozen=True)
class VoteInfo:
    annotator: str
    kind: str  # human | llm
    source: str
    choice: str  # in presented terms: A | B | tie | cant_tell | skip
    rationale: Optional[str]
    confidence: Optional[float]


@dataclass
class ReviewItem:
    """A triplet whose votes disagree, with every active vote, for adjudication."""

    triplet_id: int
    criterion: CriterionInfo
    anchor: Doc
    a: Doc
    b: Doc
    swapped: bool
    votes: list[VoteInfo]
    reason: str
    rationale: Optional[str] = None
    resumed: bool = False
    previous: Optional[str] = None  # after an undo: the answer that was undone, as shown (A, B, tie, 2, ...)
    shown_at: float = field(default_factory=time.monotonic)

    kind = "review"


AnyItem = Union[Item, GroupItem, ReviewItem]


@dataclass
class Progress:
    done: int
    assigned: Optional[int]  # done + still available to this annotator (None until counted)
    session_votes: int
    votes_per_min: Optional[float]
    eta_s: Optional[float]


# --------------------------------------------------------------------------- SQL


def _needed_sql(dialect: str, *, attention: bool, lock: bool) -> str:
    """Candidates for this annotator, in queue order (walks ``ix_triplet_queue``)."""
    order = "ORDER BY t.priority DESC, t.id DESC" if not attention else ("ORDER BY random()")
    cover = "" if attention else f"AND ({_coverage_expr('t.id')}) < :k"
    sql = f"""
        SELECT t.id FROM triplet t
        WHERE t.criterion_id = :c AND t.is_attention_check = :att
          AND NOT EXISTS (SELECT 1 FROM assignment m WHERE m.triplet_id = t.id AND m.annotator_id = :me
                          AND m.state <> 'released')
          AND NOT EXISTS (SELECT 1 FROM vote v WHERE v.triplet_id = t.id AND v.annotator_id = :me
                          AND v.state <> 'undone')
          {cover}
        {order}
        LIMIT :n"""
    if lock and dialect == "postgresql":
        sql += _PG_LOCK
    return sql


# NO KEY UPDATE: claimers exclude each other, but an answer's vote/assignment insert (which takes
# KEY SHARE on the triplet through its foreign key) does not hide the triplet from a claimer
_PG_LOCK = " FOR NO KEY UPDATE OF t SKIP LOCKED"


class _Contended(Exception):
    """Nothing could be claimed, but a needed triplet was skipped because another claim held its lock."""


def _sql(sql: str):
    """``text(sql)`` with the ``:fresh`` timestamp typed, so every dialect compares it correctly."""
    t = text(sql)
    if ":fresh" in sql:
        t = t.bindparams(bindparam("fresh", type_=DateTime(timezone=True)))
    return t


def _coverage_expr(tid: str) -> str:
    """How many distinct annotators hold triplet ``tid``: pending slots + active human non-skip votes.

    A pending slot older than :data:`PENDING_TTL` (a session that never came back) stops
    counting, so an abandoned claim cannot block a triplet for good; if its owner does come
    back, the resumed answer is one extra vote, never a lost one."""
    src = ", ".join(f"'{s}'" for s in HUMAN_SOURCES)
    return (
        f"(SELECT count(*) FROM assignment m2 WHERE m2.triplet_id = {tid} AND m2.state = 'pending'"
        f" AND (m2.updated_at IS NULL OR m2.updated_at >= :fresh))"
        f" + (SELECT count(DISTINCT v2.annotator_id) FROM vote v2 WHERE v2.triplet_id = {tid}"
        f" AND v2.state = 'active' AND v2.choice <> 'skip' AND v2.source IN ({src})"
        f" AND NOT EXISTS (SELECT 1 FROM assignment m3 WHERE m3.triplet_id = {tid}"
        f" AND m3.annotator_id = v2.annotator_id AND m3.state = 'pending'))"
    )


# --------------------------------------------------------------------------- queue


class Queue:
    """An annotator's session over the store (one per process/screen).

    >>> q = Queue(store, "alice", criterion="proof-strategy")
    >>> item = q.next()                 # claims a triplet (pending assignment), or None
    >>> q.answer(item, "A")             # committed before returning
    >>> q.undo()                        # the undone item, to show again
    >>> q.close()                       # session summary (dict)
    """

    def __init__(
        self,
        store: Store,
        annotator: str,
        *,
        criterion: Optional[str] = None,
        mode: str = "pairwise",
        overlap: int = 2,
        attention_rate: float = 0.05,
        k: int = 4,
        seed: Optional[int] = None,
        uncertainty: bool = True,
    ):
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if overlap < 1:
            raise InputError("--overlap must be at least 1")
        if not 0.0 <= attention_rate <= 1.0:
            raise InputError("--attention-rate must be between 0 and 1")
        if mode == "best-of-k" and not 3 <= k <= 9:
            raise InputError("--k must be between 3 and 9 (best-of-k: the anchor with k candidates)")
        self.store = store
        self.mode = mode
        self.overlap = overlap
        self.attention_rate = attention_rate
        self.k = k
        self.rng = random.Random(seed)
        self.dialect = store.dialect
        self.source = "review" if mode == "review" else "tui"
        self.key = uuid.uuid4().hex
        self._latencies: list[float] = []
        self._t0 = time.monotonic()
        self._session_votes = 0
        self._session_done = 0  # triplets answered in this session (k-1 per best-of-k answer)
        self._done0 = 0
        self._available: Optional[int] = None
        self._review: Optional[list[tuple[int, str]]] = None
        self._review_total = 0
        self._review_pos = 0
        self.counts: Counter = Counter()
        self._lock = threading.RLock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._ahead: Optional[Future] = None
        from condsim_annot.tui.tables import AnnotationSession

        with store.transaction() as s:
            ann = get_or_create_annotator(s, annotator, kind="human")
            self.annotator_id = ann.id
            self.annotator = annotator
            q = select(Criterion).order_by(Criterion.id)
            if criterion:
                q = q.where(Criterion.name == criterion)
            crits = s.scalars(q).all()
            if criterion and not crits:
                names = ", ".join(s.scalars(select(Criterion.name).order_by(Criterion.name)).all()) or "none yet"
                raise InputError(f"no criterion named {criterion!r} (criteria: {names})")
            if not crits:
                raise InputError("the store has no criteria yet: `condsim-annot criteria add NAME -d DESCRIPTION`")
            self.criteria = [CriterionInfo(c.id, c.name, c.description, c.version) for c in crits]
            self._crit = {c.id: c for c in self.criteria}
            self._corpus = {c.id: c.corpus_id for c in crits}
            sess = AnnotationSession(
                key=self.key, annotator_id=ann.id, criterion_id=crits[0].id if criterion else None, mode=mode,
                params={"overlap": overlap, "attention_rate": attention_rate, "k": k if mode == "best-of-k" else None,
                        "criterion": criterion, "seed": seed},
            )
            s.add(sess)
            s.flush()
            self.session_row = sess.id
        self._uncertain = self._load_uncertain() if (uncertainty and mode != "review") else {}
        self._done0 = self._count_done()

    # ------------------------------------------------------------------ public API

    def next(self, exclude: tuple[int, ...] = ()) -> Optional[AnyItem]:
        """The next question (claimed and committed), or None when nothing is left."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not exclude:
            try:
                item = ahead.result()
            except Exception:  # a failed look-ahead claim: claim now instead
                item = None
            else:
                if item is not None:
                    item.shown_at = time.monotonic()
                    return item
        with self._lock:
            if self.mode == "review":
                return self._next_review()
            if self.mode == "best-of-k":
                return self._next_group(exclude)
            return self._next_pair(exclude)

    def prefetch(self, showing: Optional[AnyItem], on_ready=None) -> None:
        """Claim the question after ``showing`` in a background thread, while the annotator reads.

        The claim is a normal pending assignment (a killed session resumes it after the one on
        screen); :meth:`next` hands it out without touching the store on the key press."""
        if self.mode != "pairwise" or showing is None or self._ahead is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="condsim-queue")
        tid = showing.triplet_id

        def work():
            with self._lock:
                item = self._next_pair((tid,))
                if self.dialect == "sqlite":
                    # fold the WAL into the database now, off the key press: otherwise every ~100
                    # answers one commit pays SQLite's automatic checkpoint (100-300 ms)
                    with self.store.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                return item

        self._ahead = self._pool.submit(work)
        if on_ready is not None:  # e.g. the TUI renders the next documents while the annotator reads
            self._ahead.add_done_callback(lambda f: f.exception() is None and f.result() is not None and on_ready(f.result()))

    def _drop_ahead(self) -> None:
        """Forget the look-ahead item (its assignment stays pending and is served in claim order)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead.result()
            except Exception:
                pass

    def answer(self, item: AnyItem, choice: Union[str, int], *, latency_ms: Optional[float] = None) -> list[int]:
        """Record an answer and commit.  ``choice``: ``A``/``B``/``tie``/``cant_tell``/``skip``
        (presented terms), or for best-of-k the index of the chosen candidate.  Returns vote ids."""
        if latency_ms is None:
            latency_ms = (time.monotonic() - item.shown_at) * 1000.0
        with self._lock:  # a look-ahead claim in flight finishes first
            return self._answer(item, choice, latency_ms)

    def _answer(self, item: AnyItem, choice: Union[str, int], latency_ms: float) -> list[int]:
        if isinstance(item, GroupItem):
            return self._answer_group(item, choice, latency_ms)
        presented = PRESENTED.get(choice) if isinstance(choice, str) else None
        if presented is None:
            raise InputError(f"unknown answer {choice!r}")
        if isinstance(item, ReviewItem) and presented == "skip":
            self._review_pos += 1  # a review skip leaves no vote: the triplet stays open for other reviewers
            self.counts["skip"] += 1
            return []
        canon = to_canonical_choice(presented, item.swapped)
        meta = {"attention": True} if getattr(item, "attention", False) else None
        for attempt in range(5):
            try:
                with self.store.transaction() as s:
                    v = record_vote(s, item.triplet_id, self.annotator_id, canon, source=self.source, swapped=item.swapped,
                                    latency_ms=latency_ms, rationale=item.rationale, session_id=self.key, meta=meta)
                    if self.source == "tui":
                        self._set_assignment(s, item.triplet_id, "done")
                    correct = None
                    if getattr(item, "attention", False) and item.expected in ("first", "second") and canon != "skip":
                        correct = canon == item.expected
                    self._bump(s, canon, latency_ms, rationale=bool(item.rationale), attention=correct, comparisons=1)
                break
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if isinstance(item, ReviewItem):
            self._review_pos += 1
        return [v.id]

    def undo(self) -> Optional[AnyItem]:
        """Undo this annotator's latest answer (a new state, no row is lost); returns it to show again."""
        self._drop_ahead()
        crit_ids = list(self._crit)
        with self.store.transaction() as s:
            last = s.scalars(
                select(Vote).join(Triplet, Triplet.id == Vote.triplet_id)
                .where(Vote.annotator_id == self.annotator_id, Vote.source == self.source, Vote.state == "active",
                       Triplet.criterion_id.in_(crit_ids))
                .order_by(Vote.id.desc()).limit(1)
            ).first()
            if last is None:
                return None
            if last.group_id:
                group = s.scalars(select(Vote).where(Vote.group_id == last.group_id, Vote.annotator_id == self.annotator_id,
                                                     Vote.state == "active")).all()
            else:
                group = [last]
            for v in group:
                undo_vote(s, v.id)
            meta = last.meta or {}
            winner = None
            if last.group_id and last.choice in ("first", "second"):
                t = s.get(Triplet, last.triplet_id)
                winner = t.first_id if last.choice == "first" else t.second_id
            if self.source == "tui":
                for tid in {v.triplet_id for v in group} if not last.group_id else set(meta.get("seeds") or []):
                    self._set_assignment(s, tid, "pending")
                if last.group_id:
                    for v in group:  # grid comparisons that were not seeds go back to nobody's queue
                        if v.triplet_id not in set(meta.get("seeds") or []):
                            self._set_assignment(s, v.triplet_id, "released")
            self._bump(s, None, None, undo=True, comparisons=len(group) if last.group_id else 1)
        if self.source == "review":
            self._review_pos = max(0, self._review_pos - 1)
        if last.group_id and meta.get("candidates"):
            back = self._group_from(last.group_id, meta, resumed=True)
            if back is not None and winner in meta["candidates"]:
                back.previous = str(meta["candidates"].index(winner) + 1)
            elif back is not None and last.choice in ("cant_tell", "skip"):
                back.previous = last.choice
            return back
        back = self._item_for(last.triplet_id, last.swapped, resumed=True, review=self.source == "review")
        if back is not None:
            shown = to_canonical_choice(last.choice, bool(last.swapped))  # the same flip maps canonical to shown
            back.previous = {"first": "A", "second": "B"}.get(shown, shown)
        return back

    def why_empty(self) -> dict:
        """Why :meth:`next` has nothing left (for the empty screen): the criteria's triplets, how many
        this annotator answered, and the most distinct annotators any other triplet already has."""
        crits = list(self._crit)
        with self.store.session() as s:
            total = s.scalar(select(func.count()).select_from(Triplet).where(
                Triplet.criterion_id.in_(crits), Triplet.is_attention_check.is_(False)))
            mine = s.scalar(select(func.count(func.distinct(Vote.triplet_id))).join(Triplet, Triplet.id == Vote.triplet_id).where(
                Triplet.criterion_id.in_(crits), Triplet.is_attention_check.is_(False),
                Vote.annotator_id == self.annotator_id, Vote.state != "undone"))
            held = (select(func.count(func.distinct(Vote.annotator_id)).label("n")).join(Triplet, Triplet.id == Vote.triplet_id)
                    .where(Triplet.criterion_id.in_(crits), Triplet.is_attention_check.is_(False), Vote.state == "active",
                           Vote.choice != "skip", Vote.source.in_(HUMAN_SOURCES), Vote.annotator_id != self.annotator_id)
                    .group_by(Vote.triplet_id).subquery())
            most = s.scalar(select(func.max(held.c.n)))
        return {"total": int(total or 0), "mine": int(mine or 0), "most_others": int(most or 0), "overlap": self.overlap}

    def progress(self) -> Progress:
        done = self._done0 + self._session_done
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        vpm = self._session_votes / (elapsed / 60.0) if self._session_votes else None
        if self.mode == "review":
            assigned = self._review_total if self._review is not None else None
            done = self._session_votes
        else:
            assigned = (self._done0 + self._available) if self._available is not None else None
        eta = None
        if assigned is not None and vpm:
            per_answer = (self._session_done / self._session_votes) if self._session_votes and self.mode != "review" else 1.0
            eta = max(assigned - done, 0) / max(per_answer, 1e-9) / vpm * 60.0
        return Progress(done, assigned, self._session_votes, vpm, eta)

    def count_available(self) -> int:
        """How many triplets this annotator could still be given (slow on big stores: call from a worker)."""
        if self.mode == "review":
            return self._review_total
        n = 0
        with self.store.session() as s:
            for c in self._crit:
                needed = _needed_sql(self.dialect, attention=False, lock=False).replace("SELECT t.id", "SELECT count(*)", 1)
                needed = needed.split("ORDER BY")[0]
                mine = ("SELECT count(*) FROM assignment a JOIN triplet t ON t.id = a.triplet_id "
                        "WHERE a.annotator_id = :me AND a.state = 'pending' AND t.criterion_id = :c")
                # one statement, so one snapshot: a look-ahead claim committed between two separate
                # counts would be counted twice (still needed, then pending)
                n += s.execute(_sql(f"SELECT ({needed}) + ({mine})"),
                               {"c": c, "att": False, "me": self.annotator_id, "k": self.overlap,
                                "fresh": self._fresh()}).scalar_one()
        n = int(n)
        # the annotator's answers so far + what is left; attention checks are extra
        self._available = n + self._session_done
        return n

    def close(self) -> dict:
        """End the session (the stats row gets its end time); returns the summary."""
        from condsim_annot.tui.tables import AnnotationSession

        self._drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self.store.transaction() as s:
            s.execute(update(AnnotationSession).where(AnnotationSession.id == self.session_row).values(ended_at=utcnow()))
        return self.summary()

    def summary(self) -> dict:
        elapsed = time.monotonic() - self._t0
        lat = self._latencies
        return {
            "annotator": self.annotator, "mode": self.mode, "session": self.key,
            "criteria": [c.name for c in self.criteria],
            "answers": self._session_votes, "skips": self.counts["skip"], "undos": self.counts["undo"],
            "ties": self.counts["tie"], "cant_tell": self.counts["cant_tell"], "rationales": self.counts["rationale"],
            "attention": self.counts["attention"], "attention_correct": self.counts["attention_correct"],
            "duration_s": elapsed,
            "votes_per_min": (self._session_votes / (elapsed / 60.0)) if self._session_votes and elapsed > 0 else 0.0,
            "median_latency_ms": statistics.median(lat) if lat else None,
            "done_total": self._done0 + self._session_done,
        }

    # ------------------------------------------------------------------ pairwise

    def _next_pair(self, exclude: tuple[int, ...] = ()) -> Optional[Item]:
        got = self._pending(exclude, limit=1)
        if got:
            tid, sw = got[0]
            return self._item_for(tid, sw, resumed=True)
        claimed = self._claim(1)
        if not claimed:
            return None
        tid, sw, att = claimed[0]
        return self._item_for(tid, sw)

    def _pending(self, exclude: tuple[int, ...] = (), limit: int = 1) -> list[tuple[int, bool]]:
        with self.store.session() as s:
            q = (select(Assignment.triplet_id, Assignment.swapped)
                 .join(Triplet, Triplet.id == Assignment.triplet_id)
                 .where(Assignment.annotator_id == self.annotator_id, Assignment.state == "pending",
                        Triplet.criterion_id.in_(list(self._crit)))
                 .order_by(Assignment.id).limit(limit + len(exclude)))
            rows = [(tid, bool(sw)) for tid, sw in s.execute(q).all() if tid not in exclude]
        return rows[:limit]

    def _claim(self, n: int) -> list[tuple[int, bool, bool]]:
        """Claim up to ``n`` triplets (pending assignments, committed): [(triplet_id, swapped, attention)]."""
        want_attention = self.attention_rate > 0 and self.rng.random() < self.attention_rate
        contended = 0
        attempt = 0
        while attempt < 8:
            try:
                got = self._claim_once(n, want_attention)
                if not got and want_attention:
                    got = self._claim_once(n, False)
                return got
            except _Contended:
                # SKIP LOCKED passed over a triplet another annotator is claiming right now: it may
                # still need us once their claim commits, so "nothing left" is not known yet
                contended += 1
                if contended > 50:
                    return []
                time.sleep(0.005 + 0.01 * self.rng.random())
                continue
            except (IntegrityError, OperationalError):
                # another process of the same annotator took the same slot, or a transient lock timeout
                attempt += 1
                time.sleep(0.02 * attempt * self.rng.random())
        raise CondsimError("could not claim a triplet after several tries (the store is very busy)")

    def _claim_once(self, n: int, attention: bool) -> list[tuple[int, bool, bool]]:
        crits = list(self._crit)
        with self.store.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                got: list[tuple[int, bool, bool]] = []
                if not attention and self._uncertain:
                    got = self._claim_uncertain(conn, n)
                contended = False
                for c in crits:
                    if len(got) >= n:
                        break
                    try:
                        got += self._claim_in(conn, c, n - len(got), attention)
                    except _Contended:
                        contended = True  # this criterion may free up; look at the next one meanwhile
                if not got and contended:
                    raise _Contended()
                conn.commit()
                return got
            except BaseException:
                conn.rollback()
                raise

    def _claim_in(self, conn, c: int, n: int, attention: bool, *, anchor: Optional[int] = None) -> list[tuple[int, bool, bool]]:
        params = {"c": c, "att": attention, "me": self.annotator_id, "k": self.overlap,
                  "n": max(n, 1) + (3 if self.dialect == "postgresql" else 0)}
        if not attention:
            params["fresh"] = self._fresh()
        sql = _needed_sql(self.dialect, attention=attention, lock=True)
        if anchor is not None:
            sql = sql.replace("WHERE t.criterion_id = :c", "WHERE t.criterion_id = :c AND t.anchor_id = :anchor")
            params["anchor"] = anchor
        cand = [r[0] for r in conn.execute(_sql(sql), params).all()]
        got = []
        for tid in cand:
            if len(got) >= n:
                break
            if self.dialect == "postgresql" and not attention:
                # under the row lock, re-count with a fresh snapshot (READ COMMITTED): another
                # annotator may have committed a claim on this triplet since our SELECT began
                cov = conn.execute(_sql(f"SELECT {_coverage_expr(':tid')}"), {"tid": tid, "fresh": self._fresh()}).scalar_one()
                if cov >= self.overlap:
                    continue
            sw = self.rng.random() < 0.5
            self._assign(conn, tid, sw)
            got.append((tid, sw, attention))
        if not got and self.dialect == "postgresql" and not attention and anchor is None:
            # none we could lock: is one still needed that SKIP LOCKED passed over (fresh snapshot, no lock)?
            free = _needed_sql(self.dialect, attention=False, lock=False).split("ORDER BY")[0] + " LIMIT 1"
            if conn.execute(_sql(free), {k: v for k, v in params.items() if k != "n"}).first() is not None:
                raise _Contended()
        return got

    def _claim_uncertain(self, conn, n: int) -> list[tuple[int, bool, bool]]:
        """Triplets a calibration run left uncertain/contested and that still need votes, most uncertain first."""
        got = []
        ids = [t for t in self._uncertain_order if t not in self._uncertain_tried][: 4 * n + 8]
        if not ids:
            return got
        lock = _PG_LOCK if self.dialect == "postgresql" else ""
        sql = _needed_sql(self.dialect, attention=False, lock=False).split("ORDER BY")[0]
        sql = sql.replace("WHERE t.criterion_id = :c", "WHERE t.id = :tid")
        for tid in ids:
            if len(got) >= n:
                break
            self._uncertain_tried.add(tid)  # examined once per session (a taken one stays taken)
            row = conn.execute(_sql(sql + lock), {"tid": tid, "att": False, "me": self.annotator_id, "k": self.overlap,
                                                  "fresh": self._fresh()}).first()
            if row is None:
                continue
            sw = self.rng.random() < 0.5
            self._assign(conn, tid, sw)
            got.append((tid, sw, False))
        return got

    def _assign(self, conn, tid: int, swapped: bool, state: str = "pending") -> None:
        now = utcnow()
        res = conn.execute(
            update(Assignment).where(Assignment.triplet_id == tid, Assignment.annotator_id == self.annotator_id,
                                     Assignment.state == "released").values(state=state, swapped=swapped, updated_at=now))
        if res.rowcount == 0:
            conn.execute(Assignment.__table__.insert().values(
                triplet_id=tid, annotator_id=self.annotator_id, state=state, swapped=swapped, created_at=now, updated_at=now))

    def _set_assignment(self, s, tid: int, state: str, swapped: Optional[bool] = None) -> None:
        vals = {"state": state, "updated_at": utcnow()}
        if swapped is not None:
            vals["swapped"] = swapped
        res = s.execute(update(Assignment).where(Assignment.triplet_id == tid, Assignment.annotator_id == self.annotator_id).values(**vals))
        if res.rowcount == 0 and state != "released":
            s.add(Assignment(triplet_id=tid, annotator_id=self.annotator_id, state=state, swapped=swapped, updated_at=utcnow()))
            s.flush()

    def _item_for(self, tid: int, swapped: Optional[bool], *, resumed: bool = False, review: bool = False) -> Optional[AnyItem]:
        with self.store.session() as s:
            t = s.get(Triplet, tid)
            if t is None:
                return None
            docs = _docs(s, [t.anchor_id, t.first_id, t.second_id])
            if swapped is None:
                swapped = self.rng.random() < 0.5
            a, b = (docs[t.second_id], docs[t.first_id]) if swapped else (docs[t.first_id], docs[t.second_id])
            crit = self._crit[t.criterion_id]
            if review:
                votes, reason = self._review_votes(s, t, swapped)
                return ReviewItem(tid, crit, docs[t.anchor_id], a, b, bool(swapped), votes, reason, resumed=resumed)
            return Item(tid, crit, docs[t.anchor_id], a, b, bool(swapped), attention=bool(t.is_attention_check),
                        expected=t.expected, resumed=resumed)

    # ------------------------------------------------------------------ best-of-k

    def _next_group(self, exclude: tuple[int, ...] = ()) -> Optional[GroupItem]:
        seeds = [tid for tid, _ in self._pending(exclude, limit=self.k)]
        resumed = bool(seeds)
        if seeds:
            with self.store.session() as s:
                first = s.get(Triplet, seeds[0])
                rows = s.execute(select(Triplet.id, Triplet.anchor_id).where(Triplet.id.in_(seeds))).all()
            seeds = [tid for tid, a in rows if a == first.anchor_id]
        else:
            claimed = self._claim(1)
            if not claimed:
                return None
            seeds = [claimed[0][0]]
        return self._build_group(seeds, resumed=resumed)

    def _build_group(self, seeds: list[int], *, resumed: bool) -> GroupItem:
        with self.store.session() as s:
            t0 = s.get(Triplet, seeds[0])
            anchor, c = t0.anchor_id, t0.criterion_id
            cands: list[int] = []
            for tid in seeds:
                t = s.get(Triplet, tid)
                for d in (t.first_id, t.second_id):
                    if d not in cands:
                        cands.append(d)
        if len(cands) < self.k and not resumed:
            # more needed triplets with the same anchor widen the grid (claimed too)
            with self.store.engine.connect() as conn:
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    for tid, sw, _ in self._claim_in(conn, c, self.k, False, anchor=anchor):
                        t = conn.execute(select(Triplet.first_id, Triplet.second_id).where(Triplet.id == tid)).first()
                        new = [d for d in t if d not in cands]
                        if len(cands) + len(new) > self.k:
                            self._release(conn, tid)
                            continue
                        seeds.append(tid)
                        cands += new
                        if len(cands) >= self.k:
                            break
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
        if len(cands) < self.k:
            with self.store.session() as s:
                # candidates this anchor was already compared with, then random documents of the corpus
                more = s.execute(select(Triplet.first_id, Triplet.second_id)
                                 .where(Triplet.criterion_id == c, Triplet.anchor_id == anchor).limit(50)).all()
                pool = [d for row in more for d in row if d not in cands and d != anchor]
                self.rng.shuffle(pool)
                for d in pool:
                    if len(cands) >= self.k:
                        break
                    if d not in cands:
                        cands.append(d)
                corpus = self._corpus.get(c)
                lo, hi = s.execute(select(func.min(Document.id), func.max(Document.id))
                                   .where(*( [Document.corpus_id == corpus] if corpus else []))).one()
                tries = 0
                while len(cands) < self.k and lo is not None and tries < 50:
                    tries += 1
                    r = self.rng.randint(lo, hi)
                    q = select(Document.id).where(Document.id >= r).order_by(Document.id).limit(1)
                    if corpus:
                        q = q.where(Document.corpus_id == corpus)
                    d = s.scalar(q)
                    if d is not None and d != anchor and d not in cands:
                        cands.append(d)
        order = list(cands)
        self.rng.shuffle(order)
        with self.store.session() as s:
            docs = _docs(s, [anchor, *order])
        return GroupItem(uuid.uuid4().hex, self._crit[c], docs[anchor], [docs[d] for d in order], list(seeds), resumed=resumed)

    def _group_from(self, gid: str, meta: dict, *, resumed: bool) -> GroupItem:
        with self.store.session() as s:
            seeds = list(meta.get("seeds") or [])
            cands = list(meta["candidates"])
            anchor = meta["anchor"]
            docs = _docs(s, [anchor, *cands])
            c = meta.get("criterion_id") or s.get(Triplet, seeds[0]).criterion_id
        return GroupItem(uuid.uuid4().hex, self._crit[c], docs[anchor], [docs[d] for d in cands], seeds, resumed=resumed)

    def _release(self, conn, tid: int) -> None:
        conn.execute(update(Assignment).where(Assignment.triplet_id == tid, Assignment.annotator_id == self.annotator_id)
                     .values(state="released", updated_at=utcnow()))

    def _answer_group(self, item: GroupItem, choice: Union[str, int], latency_ms: float) -> list[int]:
        cands = [d.id for d in item.candidates]
        meta = {"best_of_k": len(cands), "candidates": cands, "seeds": item.seeds, "anchor": item.anchor.id,
                "criterion_id": item.criterion.id, "answer_latency_ms": latency_ms}
        ids: list[int] = []
        with self.store.transaction() as s:
            if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
                w = int(choice)
                if not 0 <= w < len(cands):
                    raise InputError(f"no candidate {w + 1}")
                win = cands[w]
                per = latency_ms / max(len(cands) - 1, 1)
                voted: set[int] = set()
                for j, other in enumerate(cands):
                    if j == w:
                        continue
                    x, y = (win, other) if w < j else (other, win)  # the pair in shown order
                    t = _get_or_add_triplet(s, item.criterion.id, item.anchor.id, x, y)
                    swapped = x > y  # canonical second shown first
                    canon = "first" if t.first_id == win else "second"
                    v = record_vote(s, t.id, self.annotator_id, canon, source="tui", swapped=swapped, latency_ms=per,
                                    rationale=item.rationale, group_id=item.group_id, session_id=self.key, meta=meta)
                    ids.append(v.id)
                    voted.add(t.id)
                    self._set_assignment(s, t.id, "done", swapped)
                for tid in item.seeds:
                    if tid not in voted:  # shown, but the answer does not decide it: back to the pool
                        self._set_assignment(s, tid, "released")
                self._bump(s, "first", latency_ms, rationale=bool(item.rationale), comparisons=len(ids))
            else:
                presented = PRESENTED.get(str(choice))
                if presented not in ("cant_tell", "skip"):
                    raise InputError(f"unknown best-of-k answer {choice!r}")
                for tid in item.seeds:
                    t = s.get(Triplet, tid)
                    pos = {d: i for i, d in enumerate(cands)}
                    swapped = pos.get(t.second_id, 0) < pos.get(t.first_id, 0)
                    v = record_vote(s, tid, self.annotator_id, presented, source="tui", swapped=swapped, latency_ms=latency_ms,
                                    rationale=item.rationale, group_id=item.group_id, session_id=self.key, meta=meta)
                    ids.append(v.id)
                    self._set_assignment(s, tid, "done")
                self._bump(s, presented, latency_ms, rationale=bool(item.rationale), comparisons=len(ids))
        return ids

    # ------------------------------------------------------------------ review

    def _load_review(self) -> None:
        """Triplets whose active votes disagree (human vs human, human vs LM judge), most split first."""
        crit_ids = list(self._crit)
        with self.store.session() as s:
            rows = s.execute(
                select(Vote.triplet_id, Vote.annotator_id, Annotator.kind, Vote.choice, Vote.source)
                .join(Triplet, Triplet.id == Vote.triplet_id).join(Annotator, Annotator.id == Vote.annotator_id)
                .where(Triplet.criterion_id.in_(crit_ids), Vote.state == "active", Vote.choice.in_(("first", "second", "tie")))
            ).all()
            reviewed = set(s.scalars(
                select(Vote.triplet_id).join(Triplet, Triplet.id == Vote.triplet_id)
                .where(Triplet.criterion_id.in_(crit_ids), Vote.state == "active", Vote.source == "review")).all())
            by_t: dict[int, dict] = defaultdict(lambda: {"human": defaultdict(list), "llm": defaultdict(list)})
            for tid, aid, kind, choice, source in rows:
                if source == "review":
                    continue
                by_t[tid]["llm" if kind == "llm" else "human"][aid].append(choice)
            flagged = set()
            ids = [t for t in by_t if t not in reviewed]
            for i in range(0, len(ids), 900):
                for tid, meta in s.execute(select(Triplet.id, Triplet.meta).where(Triplet.id.in_(ids[i:i + 900]))).all():
                    if meta and (meta.get("needs_adjudication") or meta.get("adjudication") == "pending"):
                        flagged.add(tid)
        out = []
        for tid, g in by_t.items():
            if tid in reviewed:
                continue
            human = [vs[-1] for vs in g["human"].values()]
            llm = []
            for vs in g["llm"].values():  # an LM judge's stance: its votes agree (both orders), else none
                if len(set(vs)) == 1:
                    llm.append(vs[0])
            hh = len(set(human)) > 1
            hl = bool(human) and bool(llm) and len(set(human) | set(llm)) > 1
            if not (hh or hl or tid in flagged):
                continue
            cnt = Counter(human + llm)
            split = 1.0 - (max(cnt.values()) / sum(cnt.values())) if cnt else 0.0
            reason = ("human vs human" if hh else "human vs LM judge" if hl else "flagged for adjudication")
            out.append((-split, tid, reason))
        out.sort()
        self._review = [(tid, reason) for _, tid, reason in out]
        self._review_total = len(self._review)

    def _next_review(self) -> Optional[ReviewItem]:
        if self._review is None:
            self._load_review()
        while self._review_pos < len(self._review):
            tid, reason = self._review[self._review_pos]
            with self.store.session() as s:
                done = s.scalar(select(func.count()).select_from(Vote).where(
                    Vote.triplet_id == tid, Vote.state == "active", Vote.source == "review"))
            if done:  # another reviewer got there first
                self._review_pos += 1
                continue
            item = self._item_for(tid, self.rng.random() < 0.5, review=True)
            if item is not None:
                item.reason = reason
                return item
            self._review_pos += 1
        return None

    def _review_votes(self, s, t: Triplet, swapped: bool) -> tuple[list[VoteInfo], str]:
        rows = s.execute(
            select(Vote, Annotator.name, Annotator.kind).join(Annotator, Annotator.id == Vote.annotator_id)
            .where(Vote.triplet_id == t.id, Vote.state == "active").order_by(Vote.id)
        ).all()
        back = {"first": "A", "second": "B"}
        out = []
        for v, name, kind in rows:
            shown = to_canonical_choice(v.choice, swapped)  # canonical -> presented is the same map
            out.append(VoteInfo(name, kind, v.source, back.get(shown, shown), v.rationale, v.confidence))
        return out, ""

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _fresh():
        return utcnow() - PENDING_TTL

    def _count_done(self) -> int:
        with self.store.session() as s:
            if self.mode == "review":
                return 0
            return int(s.scalar(
                select(func.count()).select_from(Assignment).join(Triplet, Triplet.id == Assignment.triplet_id)
                .where(Assignment.annotator_id == self.annotator_id, Assignment.state == "done",
                       Triplet.criterion_id.in_(list(self._crit)))) or 0)

    def _load_uncertain(self) -> dict[int, float]:
        """Latest calibration run per criterion: uncertain/contested triplets, |p - 0.5| (lower = ask first)."""
        out: dict[int, float] = {}
        with self.store.session() as s:
            for c in self._crit:
                run = s.scalar(select(func.max(CalibrationRun.id)).where(CalibrationRun.criterion_id == c))
                if run is None:
                    continue
                for tid, p in s.execute(select(GoldLabel.triplet_id, GoldLabel.probability).where(
                        GoldLabel.calibration_run_id == run, GoldLabel.status.in_(("uncertain", "contested")))).all():
                    out[tid] = abs((p if p is not None else 0.5) - 0.5)
        self._uncertain_order = sorted(out, key=lambda t: (out[t], t))
        self._uncertain_tried: set[int] = set()
        return out

    def _bump(self, s, choice: Optional[str], latency_ms: Optional[float], *, undo: bool = False, rationale: bool = False,
              attention: Optional[bool] = None, comparisons: int = 0) -> None:
        from condsim_annot.tui.tables import AnnotationSession

        T = AnnotationSession
        vals: dict = {}
        if undo:
            self.counts["undo"] += 1
            self._session_votes = max(0, self._session_votes - 1)
            self._session_done = max(0, self._session_done - max(comparisons, 1))
            vals = {"n_undos": T.n_undos + 1}
        else:
            self._session_votes += 1
            self._session_done += max(comparisons, 1)
            self.counts[choice or "vote"] += 1
            if latency_ms is not None:
                self._latencies.append(latency_ms)
            vals = {"n_votes": T.n_votes + 1, "n_comparisons": T.n_comparisons + comparisons, "last_vote_at": utcnow(),
                    "total_latency_ms": T.total_latency_ms + (latency_ms or 0.0),
                    "median_latency_ms": statistics.median(self._latencies) if self._latencies else None}
            if choice == "skip":
                vals["n_skips"] = T.n_skips + 1
            if rationale:
                self.counts["rationale"] += 1
                vals["n_rationales"] = T.n_rationales + 1
            if attention is not None:
                self.counts["attention"] += 1
                vals["n_attention"] = T.n_attention + 1
                if attention:
                    self.counts["attention_correct"] += 1
                    vals["n_attention_correct"] = T.n_attention_correct + 1
        s.execute(update(T).where(T.id == self.session_row).values(**vals))


def _docs(s, ids) -> dict[int, Doc]:
    rows = s.execute(select(Document.id, Document.ext_id, Document.text).where(Document.id.in_(list(set(ids))))).all()
    return {i: Doc(i, e, t) for i, e, t in rows}


def _get_or_add_triplet(s, criterion_id: int, anchor: int, x: int, y: int) -> Triplet:
    """``add_triplet`` that survives a concurrent insert of the same triplet."""
    try:
        with s.begin_nested():
            t, _ = add_triplet(s, criterion_id, anchor, x, y, method="best-of-k", strategy="best-of-k")
        return t
    except IntegrityError:
        a, f, sec = anchor, min(x, y), max(x, y)
        return s.scalars(select(Triplet).where(Triplet.criterion_id == criterion_id, Triplet.anchor_id == a,
                                               Triplet.first_id == f, Triplet.second_id == sec)).one()
