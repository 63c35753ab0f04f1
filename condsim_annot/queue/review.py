"""Review mode: adjudicate triplets whose active votes disagree (human vs human, human vs LM judge,
or flagged for adjudication), most split first; an adjudication is a vote with source ``review``."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as core_select  # five columns: past sqlmodel.select's typed overloads
from sqlmodel import Session, col, select

from ..errors import InputError
from ..models import Annotator, Triplet, Vote
from ..store_api import to_canonical_choice
from .base import Mode, Undone
from .items import PRESENTED, SHOWN_LETTER, AnyItem, Doc, ReviewItem, VoteInfo, pk

Stances = dict[str, dict[int, list[str]]]  # "human" | "llm" -> annotator id -> their choices


def _stances(s: Session, crit_ids: list[int]) -> tuple[dict[int, Stances], set[int]]:
    """Every triplet's decisive active votes by annotator kind, and the triplets already adjudicated."""
    rows = s.execute(
        core_select(col(Vote.triplet_id), col(Vote.annotator_id), col(Annotator.kind), col(Vote.choice),
                    col(Vote.source))
        .join(Triplet, col(Triplet.id) == Vote.triplet_id).join(Annotator, col(Annotator.id) == Vote.annotator_id)
        .where(col(Triplet.criterion_id).in_(crit_ids), col(Vote.state) == "active",
               col(Vote.choice).in_(("first", "second", "tie")))
    ).all()
    reviewed = set(s.scalars(
        select(Vote.triplet_id).join(Triplet, col(Triplet.id) == Vote.triplet_id)
        .where(col(Triplet.criterion_id).in_(crit_ids), Vote.state == "active", Vote.source == "review")).all())
    by_t: dict[int, Stances] = defaultdict(lambda: {"human": defaultdict(list), "llm": defaultdict(list)})
    for tid, aid, kind, choice, source in rows:
        if source != "review":
            by_t[tid]["llm" if kind == "llm" else "human"][aid].append(choice)
    return by_t, reviewed


def _flagged(s: Session, ids: list[int]) -> set[int]:
    """Triplets whose meta asks for adjudication (looked up in chunks: bound-parameter limits)."""
    flagged = set()
    for i in range(0, len(ids), 900):
        for tid, meta in s.execute(select(Triplet.id, Triplet.meta).where(col(Triplet.id).in_(ids[i:i + 900]))).all():
            if meta and (meta.get("needs_adjudication") or meta.get("adjudication") == "pending"):
                flagged.add(tid)
    return flagged


def _disagreement(g: Stances, flagged: bool) -> tuple[float, str] | None:
    """(how split, why) when a triplet needs review, else None."""
    human = [vs[-1] for vs in g["human"].values()]
    llm = [vs[0] for vs in g["llm"].values() if len(set(vs)) == 1]  # an LM judge's stance: its votes agree
    hh = len(set(human)) > 1
    hl = bool(human) and bool(llm) and len(set(human) | set(llm)) > 1
    if not (hh or hl or flagged):
        return None
    cnt = Counter(human + llm)
    split = 1.0 - (max(cnt.values()) / sum(cnt.values())) if cnt else 0.0
    return split, ("human vs human" if hh else "human vs LM judge" if hl else "flagged for adjudication")


class ReviewMode(Mode):
    """Walks the disagreements found when the session starts; another reviewer's adjudication is skipped."""

    name = "review"

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.todo: list[tuple[int, str]] | None = None  # (triplet id, reason), most split first
        self.total = 0
        self.pos = 0

    def done_before(self) -> int:
        return 0

    def load(self) -> None:
        with self.ctx.store.session() as s:
            by_t, reviewed = _stances(s, list(self.ctx.criteria))
            flagged = _flagged(s, [t for t in by_t if t not in reviewed])
        out = []
        for tid, g in by_t.items():
            found = None if tid in reviewed else _disagreement(g, tid in flagged)
            if found is not None:
                out.append((-found[0], tid, found[1]))
        out.sort()
        self.todo = [(tid, reason) for _, tid, reason in out]
        self.total = len(self.todo)

    def next(self, exclude: tuple[int, ...] = ()) -> ReviewItem | None:
        if self.todo is None:
            self.load()
        assert self.todo is not None
        while self.pos < len(self.todo):
            tid, reason = self.todo[self.pos]
            with self.ctx.store.session() as s:
                done = s.scalar(select(func.count()).select_from(Vote).where(
                    Vote.triplet_id == tid, Vote.state == "active", Vote.source == "review"))
            if done:  # another reviewer got there first
                self.pos += 1
                continue
            item = self.item_for(tid, self.ctx.rng.random() < 0.5)
            if isinstance(item, ReviewItem):
                item.reason = reason
                return item
            self.pos += 1
        return None

    def _make_item(self, s: Session, t: Triplet, docs: dict[int, Doc], swapped: bool, resumed: bool) -> AnyItem:
        a, b = (docs[t.second_id], docs[t.first_id]) if swapped else (docs[t.first_id], docs[t.second_id])
        return ReviewItem(pk(t), self.ctx.criteria[t.criterion_id], docs[t.anchor_id], a, b, swapped,
                          _votes_as_shown(s, pk(t), swapped), "", resumed=resumed)

    def answer(self, item: AnyItem, choice: str | int, latency_ms: float) -> list[int]:
        if not isinstance(item, ReviewItem):
            return super().answer(item, choice, latency_ms)
        presented = PRESENTED.get(choice) if isinstance(choice, str) else None
        if presented is None:
            raise InputError(f"unknown answer {choice!r}")
        if presented == "skip":  # leaves no vote: the triplet stays open for other reviewers
            self.pos += 1
            self.ctx.stats.skipped_without_vote()
            return []
        ids = [self.record_pair(item, presented, latency_ms)]
        self.pos += 1
        return ids

    def slot_answered(self, s: Session, tid: int) -> None:
        """Reviewers hold no slots."""

    def reopen(self, s: Session, u: Undone) -> None:
        """Reviewers hold no slots."""

    def after_undo(self) -> None:
        self.pos = max(0, self.pos - 1)


def _votes_as_shown(s: Session, tid: int, swapped: bool) -> list[VoteInfo]:
    """Every active vote on the triplet, its choice in the A/B terms of this screen."""
    rows = s.execute(
        select(Vote, Annotator.name, Annotator.kind).join(Annotator, col(Annotator.id) == Vote.annotator_id)
        .where(Vote.triplet_id == tid, Vote.state == "active").order_by(Vote.id)
    ).all()
    out = []
    for v, name, kind in rows:
        shown = to_canonical_choice(v.choice, swapped)  # canonical -> presented is the same map
        out.append(VoteInfo(name, kind, v.source, SHOWN_LETTER.get(shown, shown), v.rationale, v.confidence))
    return out
