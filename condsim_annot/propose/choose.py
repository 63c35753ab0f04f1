"""The pure selection: pools with their features in, chosen triplets out (no store, no methods).

Order of the picks: attention checks (every method agrees by a wide margin; ``expected`` set),
bridge triplets ({a, b} asked both as (a; b, .) and (b; a, .), the pairs {a, b} chosen where they
join components of the comparison graph), a uniformly random audit slice of the pools, then the
highest-priority comparisons round-robin across anchors (cap per anchor, never a triplet twice).
With ``chain`` an anchor's ranked triplets share candidates: after (x, y) the next touches x or y,
and one that closes a triangle ((x, y), (y, z), (x, z)) is preferred, so the anchor's pairs form
one component whose transitivity the votes can check.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store_api import canonical
from .graph import UnionFind
from .options import RANKED
from .pools import AnchorPool

CLOSE_BONUS = 0.5  # a chained comparison that closes a triangle counts 1.5x its priority
CHAIN_USES = 3  # with chaining a candidate appears at most this often per anchor (2 without)


@dataclass
class Picks:
    """How many of each kind to pick, and the run's limits."""

    attention: int
    audit: int
    bridge: int
    target: int
    per_anchor: int
    chain: bool = True


@dataclass
class Selection:
    """State of one selection: what is taken, the room left per anchor, candidates' use per anchor."""

    doc_ids: np.ndarray
    taken: set
    cap_left: dict
    aware: np.ndarray
    chosen: list = field(default_factory=list)
    uses: dict = field(default_factory=lambda: defaultdict(Counter))

    def take(self, p: AnchorPool, i: int, j: int, strategy: str, feats: dict, col: int, *,
             max_uses: int | None = None, **extra: Any) -> bool:
        """Choose (a; pos[i], pos[j]) unless it is degenerate, taken, over the cap or over-used."""
        a = p.anchor
        x, y = int(p.pos[i]), int(p.pos[j])
        if x == y or a in (x, y) or self.cap_left[a] <= 0:
            return False
        key = canonical(int(self.doc_ids[a]), int(self.doc_ids[x]), int(self.doc_ids[y]))[:3]
        if key in self.taken:
            return False
        if max_uses is not None and (self.uses[a][x] >= max_uses or self.uses[a][y] >= max_uses):
            return False
        self.taken.add(key)
        self.cap_left[a] -= 1
        self.uses[a][x] += 1
        self.uses[a][y] += 1
        self.chosen.append({"a": a, "x": x, "y": y, "strategy": strategy, "priority": float(feats["priority"][col]),
                            "sx": p.S[:, i].tolist(), "sy": p.S[:, j].tolist(), "meta": _meta(p, i, j, feats, col),
                            **extra})
        return True

    def feats(self, p: AnchorPool, i: Any, j: Any) -> dict:
        return p.features(np.atleast_1d(np.asarray(i)), np.atleast_1d(np.asarray(j)), self.aware)


def _meta(p: AnchorPool, i: int, j: int, feats: dict, col: int) -> dict:
    meta = {"entropy": round(float(feats["entropy"][col]), 4), "fused": round(float(feats["fused"][col]), 4),
            "contrast": round(float(feats["contrast"][col]), 4), "sources": [p.src[i], p.src[j]]}
    if "model_p" in feats and (feats["defined"][col] or feats["cross"][col]):
        mp, ub = float(feats["model_p"][col]), float(feats["information"][col])
        meta["model_p"] = round(mp, 4) if math.isfinite(mp) else None  # None: no common scale for them
        meta["information"] = round(ub, 5) if math.isfinite(ub) else None  # bits, of one more vote
        eg = float(feats["expected_gold"][col])
        if math.isfinite(eg):
            meta["expected_gold"] = round(eg, 4)  # P(gold after the next votes), rank "gold"
        if feats["cross"][col]:
            meta["bridges_components"] = True
    return meta


def pick_attention(sel: Selection, pools: list[AnchorPool], n: int, rng: np.random.Generator) -> None:
    """Attention checks: every method prefers x by a wide margin (the expected answer is known)."""
    got = 0
    for ai in rng.permutation(len(pools)) if n else []:
        if got >= n:
            break
        p = pools[ai]
        if len(p.pos) < 3 or p.Z is None:
            continue
        i, j = int(np.argmax(p.Z.min(axis=0))), int(np.argmin(p.Z.max(axis=0)))
        if i == j:
            continue
        f = sel.feats(p, i, j)
        if (f["raw"][:, 0] > 0).all() and f["fused"][0] >= 1.5:
            got += sel.take(p, i, j, "attention", f, 0, is_attention_check=True, expected="first")


def choose_bridge_pairs(pools: list[AnchorPool], n_bridge: int, rng: np.random.Generator,
                        joined: UnionFind | None = None) -> list[tuple[int, int]]:
    """Pairs of anchors {a, b} (b in a's pool) to ask both ways, ``ceil(n_bridge / 2)`` of them, taken in random
    order where they join two components (an anchor's pairs count as one component; ``joined`` knows which
    anchors the existing triplets already connect), then at random among the rest."""
    anchors = {p.anchor for p in pools}
    if not n_bridge or len(anchors) < 2:
        return []
    cands = sorted({(min(p.anchor, int(x)), max(p.anchor, int(x))) for p in pools for x in p.pos if int(x) in anchors})
    want = int(math.ceil(n_bridge / 2))
    uf = joined if joined is not None else UnionFind()
    first: list[tuple[int, int]] = []
    rest: list[tuple[int, int]] = []
    for q in rng.permutation(len(cands)):
        a, b = cands[q]
        (first if uf.union(a, b) else rest).append((a, b))
    return (first + rest)[:want]


def pick_bridges(sel: Selection, pools: list[AnchorPool], bridge_pairs: list[tuple[int, int]]) -> None:
    """(a; b, z) and (b; a, w), each with the best-priority partner."""
    pool_of = {p.anchor: p for p in pools}
    for a, b in bridge_pairs:
        for u, v in ((a, b), (b, a)):
            p = pool_of[u]
            vi = int(np.flatnonzero(p.pos == v)[0])
            others = np.asarray([q for q in range(len(p.pos)) if q != vi])
            if not len(others):
                continue
            f = p.features(np.full(len(others), vi), others, sel.aware)
            for col in np.argsort(-f["priority"]):
                if sel.take(p, vi, int(others[col]), "bridge", f, int(col)):
                    break


def pick_audit(sel: Selection, pools: list[AnchorPool], n: int, rng: np.random.Generator) -> None:
    """The audit slice: uniform over anchors and pairs of their pools (the unbiased sample)."""
    tries, n_before = 0, len(sel.chosen)
    while len(sel.chosen) - n_before < n and tries < n * 30:
        tries += 1
        p = pools[int(rng.integers(len(pools)))]
        if len(p.pos) < 2:
            continue
        i, j = (int(v) for v in rng.choice(len(p.pos), size=2, replace=False))
        sel.take(p, i, j, "audit", sel.feats(p, i, j), 0)


def _strategy(f: dict, col: int) -> str:
    if "defined" in f and f["defined"][col]:
        return "expected-gold" if math.isfinite(f["expected_gold"][col]) else "uncertainty"
    if "cross" in f and f["cross"][col]:
        return "bridge"  # joins two components the fit cannot compare
    return "contrast" if f["is_contrast"][col] else "disagreement"


@dataclass
class _Ranked:
    """An anchor's comparisons, best first (``top`` indexes the pair arrays iu, ju)."""

    p: AnchorPool
    f: dict
    iu: np.ndarray
    ju: np.ndarray
    top: np.ndarray
    done: np.ndarray  # per entry of top: consumed

    def next_plain(self) -> int | None:
        left = np.flatnonzero(~self.done)
        return int(left[0]) if len(left) else None

    def next_chained(self, used: set) -> int | None:
        """The best entry touching a candidate already used (closing a triangle preferred); any at the start."""
        left = np.flatnonzero(~self.done)
        if not len(left) or not used:
            return int(left[0]) if len(left) else None
        x, y = self.p.pos[self.iu[self.top[left]]], self.p.pos[self.ju[self.top[left]]]
        ux, uy = np.isin(x, list(used)), np.isin(y, list(used))
        touch = ux | uy
        if not touch.any():
            return int(left[0])  # nothing connects: start a new chain
        eff = self.f["priority"][self.top[left]] * (1.0 + CLOSE_BONUS * (ux & uy))
        return int(left[np.argmax(np.where(touch, eff, -np.inf))])


def _ranked_lists(sel: Selection, pools: list[AnchorPool], per_anchor: int, chain: bool) -> list[_Ranked]:
    out = []
    for p in pools:
        P = len(p.pos)
        if P < 2 or sel.cap_left[p.anchor] <= 0:
            continue
        iu, ju = np.triu_indices(P, 1)
        f = p.features(iu, ju, sel.aware)
        L = min(len(iu), max(10 * per_anchor, 60) if chain else max(4 * per_anchor, 20))
        top = np.argpartition(-f["priority"], L - 1)[:L] if L < len(iu) else np.arange(len(iu))
        top = top[np.argsort(-f["priority"][top])]
        out.append(_Ranked(p, f, iu, ju, top, np.zeros(len(top), dtype=bool)))
    return out


def _take_one(sel: Selection, r: _Ranked, chain: bool) -> None:
    """Take the anchor's next comparison (skipping ones that cannot be taken)."""
    a = r.p.anchor
    used = {x for x, n in sel.uses[a].items() if n} if chain else set()
    while sel.cap_left[a] > 0:
        q = r.next_chained(used) if chain else r.next_plain()
        if q is None:
            return
        r.done[q] = True
        col = int(r.top[q])
        if sel.take(r.p, int(r.iu[col]), int(r.ju[col]), _strategy(r.f, col), r.f, col,
                    max_uses=CHAIN_USES if chain else 2):
            return


def pick_ranked(sel: Selection, pools: list[AnchorPool], target: int, per_anchor: int, chain: bool) -> None:
    """The highest-priority comparisons, one per anchor per round, anchors with the best next one first."""
    ranked = _ranked_lists(sel, pools, per_anchor, chain)
    while len(sel.chosen) < target:
        heads = []
        for k, r in enumerate(ranked):
            q = r.next_plain()
            if sel.cap_left[r.p.anchor] > 0 and q is not None:
                heads.append((float(r.f["priority"][r.top[q]]), k))
        if not heads:
            break
        heads.sort(reverse=True)
        for _prio, k in heads:
            if len(sel.chosen) >= target:
                break
            _take_one(sel, ranked[k], chain)


def select_triplets(pools: list[AnchorPool], doc_ids: np.ndarray, taken: set, cap_left: dict, aware: np.ndarray,
                    picks: Picks, bridge_pairs: list[tuple[int, int]], rng: np.random.Generator) -> list[dict]:
    """All picks of a run, in priority order (audit and attention ones get priorities drawn from the others,
    so they are interleaved in the queue)."""
    sel = Selection(doc_ids, set(taken), dict(cap_left), aware)
    pick_attention(sel, pools, picks.attention, rng)
    pick_bridges(sel, pools, bridge_pairs)
    pick_audit(sel, pools, picks.audit, rng)
    pick_ranked(sel, pools, picks.target, picks.per_anchor, picks.chain)
    chosen = sel.chosen
    dis_prio = [c["priority"] for c in chosen if c["strategy"] in RANKED + ("bridge",)] or [0.5]
    for c in chosen:
        if c["strategy"] in ("audit", "attention"):
            c["priority"] = float(rng.choice(dis_prio))
    chosen.sort(key=lambda c: -c["priority"])
    return chosen
