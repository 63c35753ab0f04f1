"""Best-of-k grids: built from claimed triplets of one anchor, answered as k-1 comparisons (one Luce
choice, tied by ``vote.group_id``), rebuilt from a stored answer after an undo."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from ..db import write_turn
from ..errors import InputError
from ..models import Document, Triplet
from ..store_api import add_triplet, record_vote
from .context import QueueContext
from .items import PRESENTED, GroupItem, get_triplet, load_docs, pk


def group_from(ctx: QueueContext, meta: dict[str, Any], *, resumed: bool) -> GroupItem:
    """A grid rebuilt from a stored answer's meta (same candidates, same order)."""
    seeds = list(meta.get("seeds") or [])
    cands = list(meta["candidates"])
    anchor = meta["anchor"]
    with ctx.store.session() as s:
        docs = load_docs(s, [anchor, *cands])
        c = meta.get("criterion_id") or get_triplet(s, seeds[0]).criterion_id
    return GroupItem(uuid.uuid4().hex, ctx.criteria[c], docs[anchor], [docs[d] for d in cands], seeds, resumed=resumed)


def build_group(ctx: QueueContext, seeds: list[int], *, resumed: bool) -> GroupItem:
    """The anchor of ``seeds[0]`` with k candidates: the seeds' own, more needed triplets of the same
    anchor (claimed too), documents it was compared with, then random documents of the corpus."""
    with ctx.store.session() as s:
        t0 = get_triplet(s, seeds[0])
        anchor, c = t0.anchor_id, t0.criterion_id
        cands: list[int] = []
        for tid in seeds:
            t = get_triplet(s, tid)
            for d in (t.first_id, t.second_id):
                if d not in cands:
                    cands.append(d)
    if len(cands) < ctx.k and not resumed:
        _widen_with_claims(ctx, c, anchor, seeds, cands)
    if len(cands) < ctx.k:
        with ctx.store.session() as s:
            _fill_from_neighbours(ctx, s, c, anchor, cands)
            _fill_at_random(ctx, s, c, anchor, cands)
    order = list(cands)
    ctx.rng.shuffle(order)
    with ctx.store.session() as s:
        docs = load_docs(s, [anchor, *order])
    return GroupItem(uuid.uuid4().hex, ctx.criteria[c], docs[anchor], [docs[d] for d in order], list(seeds),
                     resumed=resumed)


def _widen_with_claims(ctx: QueueContext, c: int, anchor: int, seeds: list[int], cands: list[int]) -> None:
    """Claim more needed triplets of the same anchor while their candidates fit in the grid."""
    with ctx.claims.claiming() as conn:
        for tid, _sw, _att in ctx.claims.claim_in(conn, c, ctx.k, False, anchor=anchor):
            pair = conn.execute(select(Triplet.first_id, Triplet.second_id).where(Triplet.id == tid)).one()
            new = [d for d in pair if d not in cands]
            if len(cands) + len(new) > ctx.k:
                ctx.claims.release(conn, tid)
                continue
            seeds.append(tid)
            cands += new
            if len(cands) >= ctx.k:
                break


def _fill_from_neighbours(ctx: QueueContext, s: Session, c: int, anchor: int, cands: list[int]) -> None:
    """Candidates this anchor was already compared with under the criterion, in random order."""
    more = s.execute(select(Triplet.first_id, Triplet.second_id)
                     .where(Triplet.criterion_id == c, Triplet.anchor_id == anchor).limit(50)).all()
    pool = [d for row in more for d in row if d not in cands and d != anchor]
    ctx.rng.shuffle(pool)
    for d in pool:
        if len(cands) >= ctx.k:
            break
        if d not in cands:
            cands.append(d)


def _fill_at_random(ctx: QueueContext, s: Session, c: int, anchor: int, cands: list[int]) -> None:
    """Random documents of the criterion's corpus (probing ids; at most 50 tries)."""
    corpus = ctx.corpus.get(c)
    in_corpus = [Document.corpus_id == corpus] if corpus else []
    lo, hi = s.execute(select(func.min(Document.id), func.max(Document.id)).where(*in_corpus)).one()
    tries = 0
    while len(cands) < ctx.k and lo is not None and hi is not None and tries < 50:
        tries += 1
        r = ctx.rng.randint(lo, hi)
        d = s.scalar(select(Document.id).where(col(Document.id) >= r, *in_corpus).order_by(col(Document.id)).limit(1))
        if d is not None and d != anchor and d not in cands:
            cands.append(d)


def answer_group(ctx: QueueContext, item: GroupItem, choice: str | int, latency_ms: float) -> list[int]:
    """Record a grid's answer: the pick as k-1 comparisons, or can't tell / skip on every seed."""
    cands = [d.id for d in item.candidates]
    meta = {"best_of_k": len(cands), "candidates": cands, "seeds": item.seeds, "anchor": item.anchor.id,
            "criterion_id": item.criterion.id, "answer_latency_ms": latency_ms}
    picked: int | None = None
    if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
        picked = int(choice)
        if not 0 <= picked < len(cands):
            raise InputError(f"no candidate {picked + 1}")
    elif PRESENTED.get(str(choice)) not in ("cant_tell", "skip"):
        raise InputError(f"unknown best-of-k answer {choice!r}")
    with write_turn(ctx.store.engine), ctx.store.transaction() as s:
        if picked is not None:
            ids = _record_pick(ctx, s, item, picked, latency_ms, meta)
            ctx.stats.answered(s, "first", latency_ms, rationale=bool(item.rationale), comparisons=len(ids))
        else:
            presented = PRESENTED[str(choice)]
            ids = _record_pass(ctx, s, item, presented, latency_ms, meta)
            ctx.stats.answered(s, presented, latency_ms, rationale=bool(item.rationale), comparisons=len(ids))
    return ids


def _record_pick(ctx: QueueContext, s: Session, item: GroupItem, w: int, latency_ms: float,
                 meta: dict[str, Any]) -> list[int]:
    """The winner against each other candidate; seeds the answer does not decide go back to the pool."""
    cands = meta["candidates"]
    win = cands[w]
    per = latency_ms / max(len(cands) - 1, 1)
    ids: list[int] = []
    voted: set[int] = set()
    for j, other in enumerate(cands):
        if j == w:
            continue
        x, y = (win, other) if w < j else (other, win)  # the pair in shown order
        t, _ = add_triplet(s, item.criterion.id, item.anchor.id, x, y, method="best-of-k", strategy="best-of-k")
        swapped = x > y  # canonical second shown first
        canon = "first" if t.first_id == win else "second"
        v = record_vote(s, pk(t), ctx.annotator_id, canon, source="tui", swapped=swapped, latency_ms=per,
                        rationale=item.rationale, group_id=item.group_id, session_id=ctx.key, meta=meta)
        ids.append(pk(v))
        voted.add(pk(t))
        ctx.claims.set_state(s, pk(t), "done", swapped)
    for tid in item.seeds:
        if tid not in voted:  # shown, but the answer does not decide it: back to the pool
            ctx.claims.set_state(s, tid, "released")
    return ids


def _record_pass(ctx: QueueContext, s: Session, item: GroupItem, presented: str, latency_ms: float,
                 meta: dict[str, Any]) -> list[int]:
    """Can't tell / skip: one vote per seed, in the order the grid showed its candidates."""
    pos = {d: i for i, d in enumerate(meta["candidates"])}
    ids: list[int] = []
    for tid in item.seeds:
        t = get_triplet(s, tid)
        swapped = pos.get(t.second_id, 0) < pos.get(t.first_id, 0)
        v = record_vote(s, tid, ctx.annotator_id, presented, source="tui", swapped=swapped, latency_ms=latency_ms,
                        rationale=item.rationale, group_id=item.group_id, session_id=ctx.key, meta=meta)
        ids.append(pk(v))
        ctx.claims.set_state(s, tid, "done")
    return ids
