"""The claim statements, composed with SQLAlchemy Core (one builder per question the queue asks).

A triplet is *needed* by an annotator while it is neither assigned to nor voted by them and
fewer than ``overlap`` distinct annotators hold it (:func:`coverage`).  The claim walks
``ix_triplet_queue`` (criterion, attention flag, priority, id) in order and stops after a few rows.

Each statement is built once per shape (cached) with named parameters -- ``me`` (annotator id),
``c`` (criterion), ``tid``, ``anchor``, ``k`` (overlap), ``fresh`` (see :func:`fresh_since`), ``n``
(limit) -- and executed with :func:`params`: composing the nested subqueries costs milliseconds,
more than running them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    bindparam,
    distinct,
    exists,
    func,
    or_,
    select,
)
from sqlmodel import SQLModel

from ..models import utcnow

HUMAN_SOURCES = ("tui", "argilla", "import")
PENDING_TTL = timedelta(hours=12)

_T = SQLModel.metadata.tables["triplet"]  # the foundation tables, as Core tables (typed columns)
_A = SQLModel.metadata.tables["assignment"]
_V = SQLModel.metadata.tables["vote"]

ME, CRITERION, TRIPLET, ANCHOR, OVERLAP, LIMIT = (bindparam(name, type_=Integer())
                                                  for name in ("me", "c", "tid", "anchor", "k", "n"))
FRESH: BindParameter[datetime] = bindparam("fresh", type_=DateTime(timezone=True))


def fresh_since() -> datetime:
    """Pending slots updated before this stopped counting (their session never came back)."""
    return utcnow() - PENDING_TTL


def params(me: int, overlap: int, **kw: Any) -> dict[str, Any]:
    """The parameters of a claim statement (``c``, ``tid``, ``anchor``, ``n`` as the statement needs)."""
    return {"me": me, "k": overlap, "fresh": fresh_since(), **kw}


def coverage(tid: ColumnElement[Any] | BindParameter[Any]) -> ColumnElement[int]:
    """How many distinct annotators hold triplet ``tid``: pending slots + active human non-skip votes.

    A pending slot older than :data:`PENDING_TTL` (a session that never came back) stops
    counting, so an abandoned claim cannot block a triplet for good; if its owner does come
    back, the resumed answer is one extra vote, never a lost one."""
    m2, v2, m3 = _A.alias("m2"), _V.alias("v2"), _A.alias("m3")
    pending = (select(func.count()).select_from(m2)
               .where(m2.c.triplet_id == tid, m2.c.state == "pending",
                      or_(m2.c.updated_at.is_(None), m2.c.updated_at >= FRESH))
               .correlate_except(m2).scalar_subquery())
    also_pending = exists().where(m3.c.triplet_id == tid, m3.c.annotator_id == v2.c.annotator_id,
                                  m3.c.state == "pending").correlate_except(m3)  # to v2 and the outer triplet
    voters = (select(func.count(distinct(v2.c.annotator_id))).select_from(v2)
              .where(v2.c.triplet_id == tid, v2.c.state == "active", v2.c.choice != "skip",
                     v2.c.source.in_(HUMAN_SOURCES), ~also_pending)
              .correlate_except(v2).scalar_subquery())
    return pending + voters


@lru_cache(maxsize=32)
def needed(*, attention: bool = False, by_criterion: bool = True, by_triplet: bool = False,
           by_anchor: bool = False) -> Select[Any]:
    """``SELECT t.id FROM triplet t`` of the triplets annotator ``:me`` may still be given (unordered),
    of criterion ``:c`` / triplet ``:tid`` / anchor ``:anchor`` as asked."""
    t, m, v = _T.alias("t"), _A.alias("m"), _V.alias("v")
    q = select(t.c.id).select_from(t)
    if by_criterion:
        q = q.where(t.c.criterion_id == CRITERION)
    if by_triplet:
        q = q.where(t.c.id == TRIPLET)
    if by_anchor:
        q = q.where(t.c.anchor_id == ANCHOR)
    q = q.where(
        t.c.is_attention_check == attention,
        ~exists().where(m.c.triplet_id == t.c.id, m.c.annotator_id == ME, m.c.state != "released").correlate_except(m),
        ~exists().where(v.c.triplet_id == t.c.id, v.c.annotator_id == ME, v.c.state != "undone").correlate_except(v),
    )
    if not attention:  # attention checks do not count against the overlap: everybody may get each once
        q = q.where(coverage(t.c.id) < OVERLAP)
    return q


def _lock_skipping(q: Select[Any], dialect: str) -> Select[Any]:
    """Lock the selected triplet rows, passing over those another claim holds (PostgreSQL only).

    NO KEY UPDATE: claimers exclude each other, but an answer's vote/assignment insert (which takes
    KEY SHARE on the triplet through its foreign key) does not hide the triplet from a claimer.
    SQLite serialises claims with ``BEGIN IMMEDIATE`` instead."""
    if dialect != "postgresql":
        return q
    return q.with_for_update(of=q.get_final_froms()[0], skip_locked=True, key_share=True)


@lru_cache(maxsize=32)
def claim(dialect: str, *, attention: bool, by_anchor: bool = False) -> Select[Any]:
    """Up to ``:n`` needed triplets of ``:c``, locked: highest priority first, newest first among
    equals; attention checks in random order."""
    q = needed(attention=attention, by_anchor=by_anchor)
    t = q.get_final_froms()[0]
    order = (func.random(),) if attention else (t.c.priority.desc(), t.c.id.desc())
    return _lock_skipping(q.order_by(*order).limit(LIMIT), dialect)


@lru_cache(maxsize=8)
def claim_one(dialect: str) -> Select[Any]:
    """Triplet ``:tid`` if it is still needed, locked (a calibration run's uncertain ones)."""
    return _lock_skipping(needed(by_criterion=False, by_triplet=True), dialect)


@lru_cache(maxsize=1)
def any_needed() -> Select[Any]:
    """One needed triplet of ``:c``, unlocked (was one passed over by SKIP LOCKED?)."""
    return needed().limit(1)


@lru_cache(maxsize=1)
def held_by() -> Select[Any]:
    """How many annotators hold triplet ``:tid`` now (the re-count under the row lock)."""
    return select(coverage(TRIPLET))


@lru_cache(maxsize=1)
def available_count() -> Select[Any]:
    """Still needed + already pending for ``:me`` under ``:c``, in one statement (one snapshot).

    Two separate counts could count a look-ahead claim committed between them twice."""
    need = needed().subquery()
    still = select(func.count()).select_from(need).scalar_subquery()
    a, t = _A.alias("a"), _T.alias("t2")
    mine = (select(func.count()).select_from(a.join(t, t.c.id == a.c.triplet_id))
            .where(a.c.annotator_id == ME, a.c.state == "pending", t.c.criterion_id == CRITERION)
            .scalar_subquery())
    return select(still + mine)
