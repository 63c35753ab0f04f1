"""Pairwise mode: one triplet at a time, A and B in a random order drawn at claim time."""

from __future__ import annotations

from .base import Mode
from .items import AnyItem


class PairwiseMode(Mode):
    """The annotator's pending slot first (a resumed screen), else a fresh claim."""

    name = "pairwise"
    prefetches = True

    def next(self, exclude: tuple[int, ...] = ()) -> AnyItem | None:
        got = self.ctx.claims.pending(exclude, limit=1)
        if got:
            tid, sw = got[0]
            return self.item_for(tid, sw, resumed=True)
        claimed = self.ctx.claims.claim(1)
        if not claimed:
            return None
        tid, sw, _attention = claimed[0]
        return self.item_for(tid, sw)
