"""What every mode shares: the session context, a pairwise question built from a triplet, a pairwise
answer recorded with its slot and statistics, and undo (a new vote state, the question shown again)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from ..db import write_turn
from ..errors import InputError
from ..models import Triplet, Vote
from ..store_api import record_vote, to_canonical_choice, undo_vote
from .context import QueueContext
from .groups import answer_group, group_from
from .items import PRESENTED, SHOWN_LETTER, AnyItem, Doc, GroupItem, Item, ReviewItem, get_triplet, load_docs, pk


@dataclass(frozen=True)
class Undone:
    """The answer an undo took back: its first vote, the triplets of its group, the winner of a grid."""

    triplet_id: int
    choice: str
    swapped: bool
    group_id: str | None
    meta: dict[str, Any]
    triplet_ids: list[int]
    winner: int | None


def undo_latest(s: Session, ctx: QueueContext) -> Undone | None:
    """Mark this annotator's latest answer (all comparisons of a best-of-k answer) ``undone``."""
    last = s.scalars(
        select(Vote).join(Triplet, col(Triplet.id) == Vote.triplet_id)
        .where(Vote.annotator_id == ctx.annotator_id, Vote.source == ctx.source, Vote.state == "active",
               col(Triplet.criterion_id).in_(list(ctx.criteria)))
        .order_by(col(Vote.id).desc()).limit(1)
    ).first()
    if last is None:
        return None
    group = [last]
    if last.group_id:
        group = list(s.scalars(select(Vote).where(Vote.group_id == last.group_id,
                                                  Vote.annotator_id == ctx.annotator_id,
                                                  Vote.state == "active")).all())
    for v in group:
        undo_vote(s, pk(v))
    winner = None
    if last.group_id and last.choice in ("first", "second"):
        t = get_triplet(s, last.triplet_id)
        winner = t.first_id if last.choice == "first" else t.second_id
    return Undone(last.triplet_id, last.choice, bool(last.swapped), last.group_id, dict(last.meta or {}),
                  [v.triplet_id for v in group], winner)


class Mode:
    """A way of asking (pairwise, best-of-k, review); subclasses say how the next question is found."""

    name = "pairwise"
    prefetches = False  # whether the next question may be claimed ahead in the background

    def __init__(self, ctx: QueueContext):
        self.ctx = ctx

    def next(self, exclude: tuple[int, ...] = ()) -> AnyItem | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def done_before(self) -> int:
        """Triplets this annotator answered before the session (the progress bar starts there)."""
        return self.ctx.claims.count_done()

    # ------------------------------------------------------------------ pairwise questions

    def item_for(self, tid: int, swapped: bool | None, *, resumed: bool = False) -> AnyItem | None:
        """The pairwise question of triplet ``tid`` (A/B order drawn when not given)."""
        with self.ctx.store.session() as s:
            t = s.get(Triplet, tid)
            if t is None:
                return None
            docs = load_docs(s, [t.anchor_id, t.first_id, t.second_id])
            if swapped is None:
                swapped = self.ctx.rng.random() < 0.5
            return self._make_item(s, t, docs, bool(swapped), resumed)

    def _make_item(self, s: Session, t: Triplet, docs: dict[int, Doc], swapped: bool, resumed: bool) -> AnyItem:
        a, b = (docs[t.second_id], docs[t.first_id]) if swapped else (docs[t.first_id], docs[t.second_id])
        return Item(pk(t), self.ctx.criteria[t.criterion_id], docs[t.anchor_id], a, b, swapped,
                    attention=bool(t.is_attention_check), expected=t.expected, resumed=resumed)

    # ------------------------------------------------------------------ answers

    def answer(self, item: AnyItem, choice: str | int, latency_ms: float) -> list[int]:
        if isinstance(item, GroupItem):  # e.g. undo brought back a grid of an earlier best-of-k session
            return answer_group(self.ctx, item, choice, latency_ms)
        presented = PRESENTED.get(choice) if isinstance(choice, str) else None
        if presented is None:
            raise InputError(f"unknown answer {choice!r}")
        return [self.record_pair(item, presented, latency_ms)]

    def record_pair(self, item: Item | ReviewItem, presented: str, latency_ms: float) -> int:
        """Vote, slot and statistics in one transaction (retried on a transient lock timeout)."""
        ctx = self.ctx
        canon = to_canonical_choice(presented, item.swapped)
        attention = isinstance(item, Item) and item.attention
        correct = None
        if isinstance(item, Item) and attention and item.expected in ("first", "second") and canon != "skip":
            correct = canon == item.expected
        for attempt in range(5):
            try:
                with write_turn(ctx.store.engine), ctx.store.transaction() as s:
                    v = record_vote(s, item.triplet_id, ctx.annotator_id, canon, source=ctx.source,
                                    swapped=item.swapped, latency_ms=latency_ms, rationale=item.rationale,
                                    session_id=ctx.key, meta={"attention": True} if attention else None)
                    self.slot_answered(s, item.triplet_id)
                    ctx.stats.answered(s, canon, latency_ms, rationale=bool(item.rationale), attention=correct,
                                       comparisons=1)
                return pk(v)
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def slot_answered(self, s: Session, tid: int) -> None:
        self.ctx.claims.set_state(s, tid, "done")

    # ------------------------------------------------------------------ undo

    def reopen(self, s: Session, u: Undone) -> None:
        """Give the undone answer's triplets back to this annotator (a grid's non-seeds to nobody)."""
        seeds = set(u.meta.get("seeds") or [])
        for tid in (seeds if u.group_id else set(u.triplet_ids)):
            self.ctx.claims.set_state(s, tid, "pending")
        if u.group_id:
            for tid in u.triplet_ids:
                if tid not in seeds:
                    self.ctx.claims.set_state(s, tid, "released")

    def after_undo(self) -> None:
        """Mode bookkeeping once an undo is committed."""

    def shown_again(self, u: Undone) -> AnyItem | None:
        """The undone question, to show again, with the answer that was undone as shown."""
        if u.group_id and u.meta.get("candidates"):
            back = group_from(self.ctx, u.meta, resumed=True)
            if u.winner in u.meta["candidates"]:
                back.previous = str(u.meta["candidates"].index(u.winner) + 1)
            elif u.choice in ("cant_tell", "skip"):
                back.previous = u.choice
            return back
        item = self.item_for(u.triplet_id, u.swapped, resumed=True)
        if item is not None:
            shown = to_canonical_choice(u.choice, u.swapped)  # the same flip maps canonical to shown
            item.previous = SHOWN_LETTER.get(shown, shown)
        return item
