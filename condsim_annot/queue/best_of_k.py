"""Best-of-k mode: the anchor with k candidates; the pick is stored as k-1 comparisons."""

from __future__ import annotations

from sqlmodel import col, select

from ..models import Triplet
from .base import Mode
from .groups import build_group
from .items import GroupItem, get_triplet


class BestOfKMode(Mode):
    """A grid from the annotator's pending slots of one anchor (a resumed grid), else from a fresh claim."""

    name = "best-of-k"

    def next(self, exclude: tuple[int, ...] = ()) -> GroupItem | None:
        ctx = self.ctx
        seeds = [tid for tid, _ in ctx.claims.pending(exclude, limit=ctx.k)]
        resumed = bool(seeds)
        if seeds:
            with ctx.store.session() as s:
                first = get_triplet(s, seeds[0])
                rows = s.execute(select(Triplet.id, Triplet.anchor_id).where(col(Triplet.id).in_(seeds))).all()
            seeds = [tid for tid, a in rows if a == first.anchor_id]
        else:
            claimed = ctx.claims.claim(1)
            if not claimed:
                return None
            seeds = [claimed[0][0]]
        return build_group(ctx, seeds, resumed=resumed)
