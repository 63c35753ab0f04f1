"""Candidate pools: for each anchor, the documents worth comparing, and every method's score of them.

The pool of an anchor is the union of every dense method's top-k, a few mid-rank documents of
the main criterion-aware method (found by sampling, not sorting), a few random ones and (once
calibrated) every document x whose pair {a, x} has a fitted score.  :meth:`AnchorPool.features`
turns a pool into the per-comparison numbers the pure selection ranks by.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .calibration import Calibration
from .context import ProposeContext
from .information import entropy2
from .registry import DenseMethod, RerankMethod

UNCERTAINTY_WEIGHT = 2.0  # priority per unit of the model's value (the committee score is <= 1.75)
COMMITTEE_WEIGHT = 0.25  # the committee's share where the model decides
GOLD_WEIGHT = 2.0  # priority per unit of expected new gold (rank "gold")
GOLD_COMMITTEE_WEIGHT = 0.05  # with rank "gold" the committee only breaks ties


def zscore(S: np.ndarray) -> np.ndarray:
    mu = S.mean(axis=-1, keepdims=True)
    sd = S.std(axis=-1, keepdims=True)
    return (S - mu) / np.where(sd > 1e-9, sd, 1.0)


@dataclass
class AnchorPool:
    anchor: int  # document position
    pos: np.ndarray  # candidate positions [P]
    src: list  # where each candidate came from
    S: np.ndarray  # [M, P] raw scores, one row per method
    G: np.ndarray | None  # [P] criterion-blind similarity (for contrast), or None
    Z: np.ndarray | None = None
    GZ: np.ndarray | None = None
    # the calibrated model, per candidate: s({a, x}), its stderr, its component (NaN / -1: not scored)
    ms: np.ndarray | None = None
    mse: np.ndarray | None = None
    mc: np.ndarray | None = None
    cal: Calibration | None = None
    pm: np.ndarray | None = None  # the feature prior's mean of s({a, x}) per candidate (rank "gold")

    def finish(self, cal: Calibration | None = None, names: list[str] | None = None) -> None:
        """Standardise the scores and attach the model's view of each candidate pair: its fitted score, or (rank
        "gold", a run with feature weights, ``names`` the rows of S) the feature prior's prediction."""
        self.cal = cal
        self.Z = zscore(self.S)
        self.GZ = zscore(self.G) if self.G is not None else None
        part = cal.partners.get(self.anchor) if cal is not None else None
        if cal is not None and cal.prior is not None and names is not None:
            self.ms, self.mse = cal.prior.predict(self.S, names)
            self.pm = self.ms.copy()
            self.mc = np.full(len(self.pos), -1, dtype=np.int64)
            for q, x in enumerate(self.pos.tolist()):
                v = (part or {}).get(x)
                if v is not None:
                    self.ms[q], self.mse[q], self.mc[q] = v
        elif part:
            P = len(self.pos)
            self.ms = np.full(P, np.nan)
            self.mse = np.zeros(P)
            self.mc = np.full(P, -1, dtype=np.int64)
            for q, x in enumerate(self.pos.tolist()):
                v = part.get(x)
                if v is not None:
                    self.ms[q], self.mse[q], self.mc[q] = v

    def add_member(self, x: int, col: np.ndarray, g: float | None) -> None:
        """Put document x in the pool with its method scores ``col`` (bridges need the other anchor)."""
        self.pos = np.append(self.pos, x)
        self.src.append("bridge")
        self.S = np.concatenate([self.S, col[:, None]], axis=1)
        if self.G is not None and g is not None:
            self.G = np.append(self.G, float(g))

    def features(self, i: np.ndarray, j: np.ndarray, aware: np.ndarray) -> dict[str, np.ndarray]:
        """Committee features of comparisons (x = pos[i], y = pos[j]) and, once calibrated, the model's."""
        assert self.Z is not None
        M = self.S.shape[0]
        raw = self.S[:, i] - self.S[:, j]
        zm = (self.Z[:, i] - self.Z[:, j]) / math.sqrt(2)
        fused = zm.mean(axis=0)
        if M > 1:
            H = entropy2(((raw > 0).sum(axis=0) + 0.5 * (raw == 0).sum(axis=0)) / M)
        else:
            H = np.zeros(raw.shape[1])
        if self.GZ is not None and aware.any():
            g = (self.GZ[i] - self.GZ[j]) / math.sqrt(2)
            contrast = np.tanh(np.maximum(0.0, -g * zm[aware].mean(axis=0)))
        else:
            contrast = np.zeros(raw.shape[1])
        dis = (H + 0.25) * np.exp(-np.abs(fused))
        con = 0.5 * contrast
        committee = dis + con
        out = {"raw": raw, "fused": fused, "entropy": H, "contrast": contrast, "priority": committee,
               "is_contrast": con > dis}
        if self.ms is not None and self.mse is not None and self.mc is not None and self.cal is not None:
            si, sj = self.ms[i], self.ms[j]
            both = np.isfinite(si) & np.isfinite(sj)
            if both.any():
                out.update(self._model(i, j, both, committee))
        return out

    def _model(self, i: np.ndarray, j: np.ndarray, both: np.ndarray, committee: np.ndarray) -> dict[str, np.ndarray]:
        """The fitted model's view of the comparisons whose two pairs are scored (computed only for those)."""
        assert self.cal is not None and self.ms is not None and self.mse is not None and self.mc is not None
        b = np.flatnonzero(both)
        ib, jb = i[b], j[b]
        prior_d = self.pm[ib] - self.pm[jb] if self.pm is not None else None
        m = self.cal.comparisons(self.ms[ib], self.ms[jb], self.mse[ib], self.mse[jb], self.mc[ib], self.mc[jb],
                                 prior_d)
        n = len(i)
        priority, model_p, bits = committee.copy(), np.full(n, np.nan), np.full(n, np.nan)
        defined, cross, gold = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.full(n, np.nan)
        if "gold" in m:
            priority[b] = GOLD_WEIGHT * self.cal.votes * m["value"] + GOLD_COMMITTEE_WEIGHT * committee[b]
            gold[b] = m["gold"]
        else:
            priority[b] = UNCERTAINTY_WEIGHT * m["value"] + COMMITTEE_WEIGHT * committee[b]
        defined[b], cross[b] = m["defined"], m["cross"]
        model_p[b] = np.where(m["defined"], m["p"], np.nan)
        bits[b] = m["info"]
        return {"priority": priority, "model_p": model_p, "information": bits, "expected_gold": gold,
                "defined": defined, "cross": cross}


@dataclass
class Committee:
    """The prepared methods, by role."""

    dense: list[DenseMethod]
    rerank: list[RerankMethod]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.dense] + [m.name for m in self.rerank]

    @property
    def aware(self) -> np.ndarray:
        return np.asarray([m.criterion_aware for m in self.dense] + [m.criterion_aware for m in self.rerank])

    @property
    def primary(self) -> DenseMethod:
        return next((m for m in self.dense if m.criterion_aware), self.dense[0])

    @property
    def generic_src(self) -> DenseMethod | None:
        return next((m for m in self.dense if not m.criterion_aware), None)

    @property
    def generic_emb(self) -> DenseMethod | None:
        return next((m for m in self.dense if getattr(m, "has_generic", False)), None)

    def generic_rows(self, blk: np.ndarray, rows: list[np.ndarray]) -> np.ndarray | None:
        """Criterion-blind similarity of a block of anchors to every document, if a method has one."""
        if self.generic_src is not None:
            return rows[self.dense.index(self.generic_src)]
        if self.generic_emb is not None:
            return self.generic_emb.generic_scores(blk)
        return None

    def generic_pair(self, u: int, v: int) -> float | None:
        if self.generic_src is not None:
            return float(self.generic_src.score_pairs(u, np.asarray([v]))[0])
        if self.generic_emb is not None:
            g = self.generic_emb.generic_scores(np.asarray([u]))
            return float(g[0, v]) if g is not None else None
        return None


def _mid_ranks(Rp: np.ndarray, top_primary: np.ndarray, k: int, upper: int, n_mid: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Mid-rank documents (ranks k..upper of the primary method) without sorting every score per anchor:
    the upper-th score is estimated from a column sample, then random columns are kept when they fall
    between it and the k-th score."""
    N = Rp.shape[1]
    t_k = np.take_along_axis(Rp, top_primary, axis=1).min(axis=1)
    sample = Rp[:, rng.integers(0, N, size=min(N, 1024))]
    t_up = np.nanquantile(np.where(np.isfinite(sample), sample, np.nan), 1 - upper / N, axis=1, method="lower")
    draw = rng.integers(0, N, size=(len(Rp), 16 * n_mid))
    vals = np.take_along_axis(Rp, draw, axis=1)
    ok = (vals >= t_up[:, None]) & (vals < t_k[:, None])
    return [draw[i][ok[i]][:n_mid] for i in range(len(Rp))]


def _block_pools(blk: np.ndarray, com: Committee, *, k: int, upper: int, n_mid: int, n_random: int,
                 cal: Calibration | None, rng: np.random.Generator) -> list[AnchorPool]:
    rows = [m.scores(blk).astype(np.float32, copy=False) for m in com.dense]
    N = rows[0].shape[1]
    grows = com.generic_rows(blk, rows)
    ar = np.arange(len(blk))
    tops = []
    for R in rows:
        R[ar, blk] = -np.inf
        tops.append(np.argpartition(-R, k - 1, axis=1)[:, :k])
    ip = com.dense.index(com.primary)
    mids = _mid_ranks(rows[ip], tops[ip], k, upper, n_mid, rng) if upper > k and n_mid else None
    pools = []
    for i, a in enumerate(blk):
        src: dict[int, str] = {}
        for m, top in zip(com.dense, tops, strict=False):
            for x in top[i]:
                src.setdefault(int(x), m.name)
        if mids is not None:
            for x in mids[i]:
                src.setdefault(int(x), "mid")
        if n_random:
            for x in rng.integers(0, N, size=n_random + 1):  # O(1) per draw, even over 1M documents
                src.setdefault(int(x), "random")
        if cal is not None:
            for x in cal.partners.get(int(a), ()):  # every document the model has a score with
                src.setdefault(int(x), "scored")
        src.pop(int(a), None)
        pos = np.fromiter(src.keys(), dtype=np.int64)
        S = np.stack([R[i, pos] for R in rows]) if rows else np.zeros((0, len(pos)))
        G = grows[i, pos].astype(np.float64) if grows is not None else None
        pools.append(AnchorPool(int(a), pos, list(src.values()), S.astype(np.float64), G))
    return pools


def build_pools(ctx: ProposeContext, anchors: np.ndarray, com: Committee, *, top_k: int, n_mid: int, n_random: int,
                cal: Calibration | None, rng: np.random.Generator) -> list[AnchorPool]:
    """Every anchor's pool with the dense methods' scores (exact k-NN over all documents, in blocks)."""
    N = len(ctx.doc_ids)
    k = max(1, min(top_k, N - 1))
    upper = min(N - 1, max(4 * k, N // 10))
    block = max(1, min(256, (1 << 24) // max(N, 1)))
    pools: list[AnchorPool] = []
    cb = ctx.progress_fn("scoring anchors")
    cb(0, len(anchors))
    for b0 in range(0, len(anchors), block):
        blk = anchors[b0 : b0 + block]
        pools += _block_pools(blk, com, k=k, upper=upper, n_mid=n_mid, n_random=n_random, cal=cal, rng=rng)
        cb(min(b0 + block, len(anchors)), len(anchors))
    return pools


def add_bridge_members(pools: list[AnchorPool], bridge_pairs: list[tuple[int, int]], com: Committee) -> None:
    """Each bridge {a, b} is asked with a and with b as anchor: b must be in a's pool and a in b's."""
    pool_of = {p.anchor: p for p in pools}
    for a, b in bridge_pairs:
        for u, v in ((a, b), (b, a)):
            pu = pool_of[u]
            if v in set(pu.pos.tolist()):
                continue
            col = np.asarray([float(m.score_pairs(u, np.asarray([v]))[0]) for m in com.dense])
            pu.add_member(v, col, com.generic_pair(u, v) if pu.G is not None else None)


def rerank_pools(ctx: ProposeContext, pools: list[AnchorPool], com: Committee, timings: dict, info: dict) -> None:
    """Re-rank methods (cross-encoder, LM judge) score the pools; their rows are appended."""
    for m in com.rerank:
        t = time.perf_counter()
        prior = [zscore(p.S[: len(com.dense)]).mean(axis=0) for p in pools]
        scored = m.score_pools([p.anchor for p in pools], [p.pos for p in pools],
                               progress=ctx.progress_fn(f"scoring pools ({m.name})"), prior=prior)
        for p, sc in zip(pools, scored, strict=False):
            p.S = np.concatenate([p.S, np.asarray(sc, dtype=np.float64)[None, :]], axis=0)
        timings[f"score {m.name}"] = round(time.perf_counter() - t, 3)
        info[m.name] = m.info()
