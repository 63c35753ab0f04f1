"""The claim store: an annotator's queue slots (``assignment`` rows) and how they are taken.

* A slot is ``pending`` while the triplet is on the annotator's screen, ``done`` once answered,
  ``released`` when a best-of-k grid showed it but the answer did not decide it.  The presented
  A/B order is drawn at claim time and kept in ``assignment.swapped``, so a resumed session shows
  the same screen.
* Claiming is atomic across processes: ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL
  (with a re-count under the lock), ``BEGIN IMMEDIATE`` on SQLite, so concurrent annotators get
  disjoint work where the overlap allows.
* Most needed first: a calibration run's uncertain/contested triplets that still need votes (most
  uncertain first), then ``priority``.  Hidden attention checks are mixed in at ``attention_rate``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, func, insert, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from ..db import Store
from ..errors import CondsimError
from ..models import Assignment, CalibrationRun, GoldLabel, Triplet, utcnow
from . import sql

Claimed = tuple[int, bool, bool]  # (triplet id, swapped, attention check)


class _Contended(Exception):
    """Nothing could be claimed, but a needed triplet was skipped because another claim held its lock."""


class ClaimStore:
    """One annotator's slots over some criteria; every claim is committed before it returns."""

    def __init__(self, store: Store, annotator_id: int, criteria: Sequence[int], *, overlap: int,
                 attention_rate: float, rng: random.Random):
        self.store = store
        self.dialect = store.dialect
        self.annotator_id = annotator_id
        self.criteria = list(criteria)
        self.overlap = overlap
        self.attention_rate = attention_rate
        self.rng = rng
        self._uncertain_order: list[int] = []
        self._uncertain_tried: set[int] = set()

    # ------------------------------------------------------------------ reading

    def pending(self, exclude: tuple[int, ...] = (), limit: int = 1) -> list[tuple[int, bool]]:
        """This annotator's pending slots (a resumed session's screen first), oldest first."""
        with self.store.session() as s:
            q = (select(Assignment.triplet_id, Assignment.swapped)
                 .join(Triplet, col(Triplet.id) == Assignment.triplet_id)
                 .where(Assignment.annotator_id == self.annotator_id, Assignment.state == "pending",
                        col(Triplet.criterion_id).in_(self.criteria))
                 .order_by(Assignment.id).limit(limit + len(exclude)))
            rows = [(tid, bool(sw)) for tid, sw in s.execute(q).all() if tid not in exclude]
        return rows[:limit]

    def count_done(self) -> int:
        with self.store.session() as s:
            return int(s.scalar(
                select(func.count()).select_from(Assignment).join(Triplet, col(Triplet.id) == Assignment.triplet_id)
                .where(Assignment.annotator_id == self.annotator_id, Assignment.state == "done",
                       col(Triplet.criterion_id).in_(self.criteria))) or 0)

    def count_available(self) -> int:
        """Triplets this annotator could still be given, pending ones included (slow on big stores)."""
        n = 0
        with self.store.session() as s:
            for c in self.criteria:
                p = sql.params(self.annotator_id, self.overlap, c=c)
                n += int(s.execute(sql.available_count(), p).scalar_one())
        return n

    def load_uncertain(self) -> None:
        """Latest calibration run per criterion: uncertain/contested triplets, most uncertain first."""
        far: dict[int, float] = {}  # |p - 0.5|: lower = ask first
        with self.store.session() as s:
            for c in self.criteria:
                run = s.scalar(select(func.max(CalibrationRun.id)).where(CalibrationRun.criterion_id == c))
                if run is None:
                    continue
                rows = s.execute(select(GoldLabel.triplet_id, GoldLabel.probability).where(
                    GoldLabel.calibration_run_id == run, col(GoldLabel.status).in_(("uncertain", "contested")))).all()
                for tid, p in rows:
                    far[tid] = abs((p if p is not None else 0.5) - 0.5)
        self._uncertain_order = sorted(far, key=lambda t: (far[t], t))
        self._uncertain_tried = set()

    # ------------------------------------------------------------------ claiming

    def claim(self, n: int) -> list[Claimed]:
        """Claim up to ``n`` triplets (pending assignments, committed)."""
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
            except (IntegrityError, OperationalError):
                # another process of the same annotator took the same slot, or a transient lock timeout
                attempt += 1
                time.sleep(0.02 * attempt * self.rng.random())
        raise CondsimError("could not claim a triplet after several tries (the store is very busy)")

    @contextmanager
    def claiming(self) -> Iterator[Connection]:
        """A connection whose claims commit together (SQLite: the write lock taken up front).

        On an error nothing is committed: closing the connection rolls its transaction back."""
        with self.store.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
            conn.commit()

    def _claim_once(self, n: int, attention: bool) -> list[Claimed]:
        with self.claiming() as conn:
            got: list[Claimed] = []
            if not attention and self._uncertain_order:
                got = self._claim_uncertain(conn, n)
            contended = False
            for c in self.criteria:
                if len(got) >= n:
                    break
                try:
                    got += self.claim_in(conn, c, n - len(got), attention)
                except _Contended:
                    contended = True  # this criterion may free up; look at the next one meanwhile
            if not got and contended:
                raise _Contended()
            return got

    def claim_in(self, conn: Connection, c: int, n: int, attention: bool, *,
                 anchor: int | None = None) -> list[Claimed]:
        """Claim up to ``n`` needed triplets of criterion ``c`` (optionally of one anchor) on ``conn``."""
        extra = 3 if self.dialect == "postgresql" else 0  # rows another claimer may take under us
        p = sql.params(self.annotator_id, self.overlap, c=c, anchor=anchor, n=max(n, 1) + extra)
        q = sql.claim(self.dialect, attention=attention, by_anchor=anchor is not None)
        got: list[Claimed] = []
        for tid in conn.execute(q, p).scalars().all():
            if len(got) >= n:
                break
            if self.dialect == "postgresql" and not attention and not self._still_needed(conn, tid):
                continue
            sw = self.rng.random() < 0.5
            self.assign(conn, tid, sw)
            got.append((tid, sw, attention))
        if not got and self.dialect == "postgresql" and not attention and anchor is None:
            # none we could lock: is one still needed that SKIP LOCKED passed over (fresh snapshot, no lock)?
            if conn.execute(sql.any_needed(), p).first() is not None:
                raise _Contended()
        return got

    def _still_needed(self, conn: Connection, tid: int) -> bool:
        """Under the row lock, re-count with a fresh snapshot (READ COMMITTED): another annotator
        may have committed a claim on this triplet since our SELECT began."""
        held = conn.execute(sql.held_by(), sql.params(self.annotator_id, self.overlap, tid=tid)).scalar_one()
        return held < self.overlap

    def _claim_uncertain(self, conn: Connection, n: int) -> list[Claimed]:
        """Triplets a calibration run left uncertain/contested and that still need votes, most uncertain first."""
        got: list[Claimed] = []
        ids = [t for t in self._uncertain_order if t not in self._uncertain_tried][: 4 * n + 8]
        for tid in ids:
            if len(got) >= n:
                break
            self._uncertain_tried.add(tid)  # examined once per session (a taken one stays taken)
            p = sql.params(self.annotator_id, self.overlap, tid=tid)
            if conn.execute(sql.claim_one(self.dialect), p).first() is None:
                continue
            sw = self.rng.random() < 0.5
            self.assign(conn, tid, sw)
            got.append((tid, sw, False))
        return got

    # ------------------------------------------------------------------ slots

    def assign(self, conn: Connection, tid: int, swapped: bool, state: str = "pending") -> None:
        """Take a slot (re-using a released one of this annotator)."""
        now = utcnow()
        res = conn.execute(
            update(Assignment)
            .where(col(Assignment.triplet_id) == tid, col(Assignment.annotator_id) == self.annotator_id,
                   col(Assignment.state) == "released")
            .values(state=state, swapped=swapped, updated_at=now))
        if res.rowcount == 0:
            conn.execute(insert(Assignment).values(
                triplet_id=tid, annotator_id=self.annotator_id, state=state, swapped=swapped, created_at=now,
                updated_at=now))

    def release(self, conn: Connection, tid: int) -> None:
        conn.execute(update(Assignment)
                     .where(col(Assignment.triplet_id) == tid, col(Assignment.annotator_id) == self.annotator_id)
                     .values(state="released", updated_at=utcnow()))

    def set_state(self, s: Session, tid: int, state: str, swapped: bool | None = None) -> None:
        """Move this annotator's slot of ``tid`` to ``state`` (created if missing, unless releasing)."""
        vals: dict[str, object] = {"state": state, "updated_at": utcnow()}
        if swapped is not None:
            vals["swapped"] = swapped
        res = cast(CursorResult[Any], s.execute(
            update(Assignment)
            .where(col(Assignment.triplet_id) == tid, col(Assignment.annotator_id) == self.annotator_id)
            .values(**vals)))
        if res.rowcount == 0 and state != "released":
            s.add(Assignment(triplet_id=tid, annotator_id=self.annotator_id, state=state, swapped=swapped,
                             updated_at=utcnow()))
            s.flush()
