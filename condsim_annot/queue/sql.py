"""The claim statements, composed with SQLAlchemy Core (one builder per question the queue asks).

A triplet is *needed* by an annotator while it is neither assigned to nor voted by them and
fewer than ``overlap`` distinct annotators hold it (:func:`coverage`).  The claim walks
``ix_triplet_queue`` (criterion, attention flag, priority, id) in order and stops after a few rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, distinct, exists, func, or_, select
from sqlmodel import SQLModel

from ..models import utcnow

HUMAN_SOURCES = ("tui", "argilla", "import")
PENDING_TTL = timedelta(hours=12)

_T = SQLModel.metadata.tables["triplet"]  # the foundation tables, as Core tables (typed columns)
_A = SQLModel.metadata.tables["assignment"]
_V = SQLModel.metadata.tables["vote"]


def fresh_since() -> datetime:
    """Pending slots updated before this stopped counting (their session never came back)."""
    return utcnow() - PENDING_TTL


def coverage(tid: int | ColumnElement[int], fresh: datetime) -> ColumnElement[int]:
    """How many distinct annotators hold triplet ``tid``: pending slots + active human non-skip votes.

    A pending slot older than :data:`PENDING_TTL` (a session that never came back) stops
    counting, so an abandoned claim cannot block a triplet for good; if its owner does come
    back, the resumed answer is one extra vote, never a lost one."""
    m2, v2, m3 = _A.alias("m2"), _V.alias("v2"), _A.alias("m3")
    pending = (select(func.count()).select_from(m2)
               .where(m2.c.triplet_id == tid, m2.c.state == "pending",
                      or_(m2.c.updated_at.is_(None), m2.c.updated_at >= fresh))
               .correlate_except(m2).scalar_subquery())
    also_pending = exists().where(m3.c.triplet_id == tid, m3.c.annotator_id == v2.c.annotator_id,
                                  m3.c.state == "pending").correlate_except(m3)  # to v2 and the outer triplet
    voters = (select(func.count(distinct(v2.c.annotator_id))).select_from(v2)
              .where(v2.c.triplet_id == tid, v2.c.state == "active", v2.c.choice != "skip",
                     v2.c.source.in_(HUMAN_SOURCES), ~also_pending)
              .correlate_except(v2).scalar_subquery())
    return pending + voters


def needed(me: int, *, overlap: int, fresh: datetime, attention: bool = False, criterion: int | None = None,
           triplet: int | None = None, anchor: int | None = None) -> Select:
    """``SELECT t.id FROM triplet t`` of the triplets annotator ``me`` may still be given (unordered)."""
    t, m, v = _T.alias("t"), _A.alias("m"), _V.alias("v")
    q = select(t.c.id).select_from(t)
    if criterion is not None:
        q = q.where(t.c.criterion_id == criterion)
    if triplet is not None:
        q = q.where(t.c.id == triplet)
    if anchor is not None:
        q = q.where(t.c.anchor_id == anchor)
    q = q.where(
        t.c.is_attention_check == attention,
        ~exists().where(m.c.triplet_id == t.c.id, m.c.annotator_id == me, m.c.state != "released").correlate_except(m),
        ~exists().where(v.c.triplet_id == t.c.id, v.c.annotator_id == me, v.c.state != "undone").correlate_except(v),
    )
    if not attention:  # attention checks do not count against the overlap: everybody may get each once
        q = q.where(coverage(t.c.id, fresh) < overlap)
    return q


def lock_skipping(q: Select, dialect: str) -> Select:
    """Lock the selected triplet rows, passing over those another claim holds (PostgreSQL only).

    NO KEY UPDATE: claimers exclude each other, but an answer's vote/assignment insert (which takes
    KEY SHARE on the triplet through its foreign key) does not hide the triplet from a claimer.
    SQLite serialises claims with ``BEGIN IMMEDIATE`` instead."""
    if dialect != "postgresql":
        return q
    t = q.get_final_froms()[0]
    return q.with_for_update(of=t, skip_locked=True, key_share=True)


def in_queue_order(q: Select, n: int, *, attention: bool) -> Select:
    """Highest priority first, newest first among equals; attention checks in random order."""
    t = q.get_final_froms()[0]
    order = (func.random(),) if attention else (t.c.priority.desc(), t.c.id.desc())
    return q.order_by(*order).limit(n)


def available_count(me: int, criterion: int, *, overlap: int, fresh: datetime) -> Select:
    """Still needed + already pending for ``me`` under ``criterion``, in one statement (one snapshot).

    Two separate counts could count a look-ahead claim committed between them twice."""
    need = needed(me, overlap=overlap, fresh=fresh, criterion=criterion).subquery()
    still = select(func.count()).select_from(need).scalar_subquery()
    a, t = _A.alias("a"), _T.alias("t2")
    mine = (select(func.count()).select_from(a.join(t, t.c.id == a.c.triplet_id))
            .where(a.c.annotator_id == me, a.c.state == "pending", t.c.criterion_id == criterion)
            .scalar_subquery())
    return select(still + mine)
