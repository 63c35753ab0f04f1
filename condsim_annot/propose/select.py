"""Proposing triplets: pool candidates from every method, rank by committee disagreement (or,
once the criterion is calibrated, by the fitted model's uncertainty), write.

The algorithm (one call of :func:`propose`):

1. **Budget.**  ``budget`` is the criterion's *total* number of triplets: the run adds
   ``budget - existing`` (nothing when that is <= 0, so re-running is a no-op).
2. **Anchors.**  Documents of the criterion's corpus with room under the per-anchor cap,
   fewest existing triplets first (ties broken by the seed), about
   ``remaining / per_anchor * 1.15`` of them, so triplets spread across anchors.  Once
   the criterion is calibrated, up to as many again are added: the anchors with room whose
   scored pairs hold the most uncertain comparison (see 5b), most uncertain first.
3. **Methods.**  Each method is prepared (models loaded, document embeddings read from
   or written to the cache, indexes built).  One that cannot run here (no LLM endpoint,
   no cross-encoder given) is skipped with its reason.
4. **Pools.**  For each block of anchors, every dense method scores all documents
   (exact k-NN, numpy, in blocks); the pool is the union of every method's top-k, a few
   mid-rank documents (ranks k..max(4k, n/10) of the main criterion-aware method, found by
   sampling, not sorting) and a
   few random ones, plus (once calibrated) every document x whose pair {a, x} has a fitted
   score.  Re-rank methods (cross-encoder, LM judge) then score the pools.
5. **Features.**  For each pair (x, y) of an anchor's pool and each method m:
   ``margin_m = s_m(a, x) - s_m(a, y)``; the scores z-normalised within the pool give a
   fused margin ``f``; ``H`` = vote entropy of the methods' preferences (bits);
   ``contrast`` = how much a criterion-blind similarity (bi-encoder without prompt, or
   BM25) disagrees with the criterion-aware methods.  ``priority = (H + 0.25) * exp(-|f|)
   + 0.5 * tanh(contrast)``: disagreement with a fused margin near 0 first, criterion-
   contrast negatives favoured.

   5b. **Model uncertainty, once calibration exists.**  The latest calibration run of the
   criterion (table ``pairscore``: s({a, x}) and its standard error per unordered pair,
   with the component of the comparison graph it belongs to) is the model.  For a pair
   (x, y) of a's pool where both {a, x} and {a, y} are scored:
   ``P = Phi((s_ax - s_ay) / sqrt(se_ax^2 + se_ay^2))`` and ``u`` = its binary entropy
   (bits; 1 at P = .5).  Such pairs are ranked by the model, the committee only breaking
   ties: ``priority = 2 u + 0.25 committee`` where ``committee`` is the score above
   (<= 1.75), so a comparison the model is unsure of (P within ~.25-.75) beats every
   committee-only pair and one it is sure of (u ~ 0) falls below them: no vote is spent
   on what the model already knows.  Strategy ``uncertainty``, ``model_p`` and
   ``uncertainty`` in the triplet's meta.
   *Components.*  A fit with a prior (the default) puts every component on one scale
   (each shrunk towards 0, posteriors independent across components), so P is defined
   for any two scored pairs; a comparison that joins two components also makes the
   graph connected, so it gets a bonus: ``u + 0.25 (1 - u)`` (meta ``bridges_components``).
   A fit without a prior compares scores only inside a component: across components P is
   undefined, the comparison counts as u = 1 and its strategy is ``bridge``.  Pairs with
   at most one scored side keep the committee priority.  Anchors: up to as many again as
   step 2 picks are added from those with room and an unasked comparison among their
   scored pairs, most uncertain first; their pools include every scored partner.
   Without a calibration run (or without the calibration stage) nothing of this applies
   and results are those of the committee alone.
6. **Selection.**  Attention checks (all methods agree by a wide margin; ``expected``
   set), bridge triplets ({a, b} asked both as (a; b, ·) and (b; a, ·)), a uniformly
   random audit slice of the pools, then the highest-priority pairs round-robin across
   anchors (cap per anchor, a candidate at most twice per anchor, never a triplet twice).
7. **Writing.**  In batches of 500, each one committed with its proposal-run counter and
   every method's margins (``tripletmargin``), so Ctrl-C leaves a consistent store and
   re-running resumes.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from ..criteria import default_instruction, get_criterion
from ..db import Store
from ..errors import CondsimError
from ..models import Document, Triplet, utcnow
from ..store_api import add_triplet, canonical, to_canonical_choice
from .cache import cache_root
from .registry import REGISTRY, DenseMethod, Method, RerankMethod, SkipMethod, parse_methods
from .tables import ProposalRun, TripletMargin

Progress = Callable[[str, int, Optional[int]], Any]
WRITE_BATCH = 500
STRATEGIES = ("disagreement", "contrast", "uncertainty", "audit", "attention", "bridge")
RANKED = ("disagreement", "contrast", "uncertainty")  # strategies of the priority ranking (a candidate <= 2x per anchor)
UNCERTAINTY_WEIGHT = 2.0  # priority per bit of model uncertainty (the committee score is <= 1.75)
COMMITTEE_WEIGHT = 0.25  # the committee's share where the model decides
BRIDGE_BONUS = 0.25  # a comparison across components of the comparison graph counts as u + 0.25 (1 - u) bits



@dataclass
class ProposeSummary:
    criterion: str
    budget: int
    existing: int
    added: int = 0
    run_id: Optional[int] = None
    by_strategy: dict = field(default_factory=dict)
    methods: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    method_info: dict = field(default_factory=dict)
    anchors: int = 0
    candidates: int = 0
    shortfall: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    message: str = ""
    proposals: Optional[list] = None  # dry runs only: what would be written, margins in (x, y) terms
    calibration: Optional[dict] = None  # the calibration run whose uncertainty ranked comparisons, if any

    @property
    def total(self) -> int:
        return self.existing + self.added

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


class ProposeContext:
    """What methods see: the documents (positions 0..n-1), the criterion, anchors, options."""

    def __init__(self, store: Store, criterion, doc_ids: np.ndarray, hashes: list[str], *, options: dict,
                 cache: Path, progress: Optional[Progress]):
        self.store = store
        self.criterion = criterion
        self.criterion_name = criterion.name
        self.doc_ids = doc_ids
        self.content_hashes = hashes
        self.options = options
        self.cache_root = cache
        self.prompt = default_instruction(criterion)
        self.anchor_pos: np.ndarray = np.zeros(0, dtype=np.int64)
        self._progress = progress
        self._texts: Optional[list[str]] = None
        self._pos = {int(d): i for i, d in enumerate(doc_ids)}

    def progress_fn(self, name: str) -> Callable[[int, Optional[int]], None]:
        def cb(done: int, total: Optional[int]) -> None:
            if self._progress:
                self._progress(name, done, total)

        return cb

    def all_texts(self) -> list[str]:
        if self._texts is None:
            texts: list[Optional[str]] = [None] * len(self.doc_ids)
            with self.store.session() as s:
                lo, hi = int(self.doc_ids.min()), int(self.doc_ids.max())
                q = select(Document.id, Document.text).where(Document.id >= lo, Document.id <= hi)
                if self.criterion.corpus_id is not None:
                    q = q.where(Document.corpus_id == self.criterion.corpus_id)
                for did, text in s.execute(q):
                    p = self._pos.get(int(did))
                    if p is not None:
                        texts[p] = text
            self._texts = [t or "" for t in texts]
        return self._texts

    def texts_map(self, positions: set[int] | Sequence[int]) -> dict[int, str]:
        positions = [int(p) for p in positions]
        if self._texts is not None:
            return {p: self._texts[p] for p in positions}
        out: dict[int, str] = {}
        ids = [int(self.doc_ids[p]) for p in positions]
        with self.store.session() as s:
            for i in range(0, len(ids), 900):
                for did, text in s.execute(select(Document.id, Document.text).where(Document.id.in_(ids[i : i + 900]))):
                    out[self._pos[int(did)]] = text
        return out

    def texts_at(self, positions: Sequence[int]) -> list[str]:
        m = self.texts_map(positions)
        return [m[int(p)] for p in positions]


# --------------------------------------------------------------------------- helpers


def _entropy2(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def _ndtr(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


def _model_uncertainty(si, sj, sei, sej, ci, cj, across: bool) -> dict[str, np.ndarray]:
    """The fitted model on comparisons s_i vs s_j (arrays): ``p`` = P(s_i > s_j) = Phi(d / sqrt(se_i^2 + se_j^2)),
    ``bits`` = its binary entropy, ``cross`` = the two pairs lie in different components, ``defined`` = the model
    compares them (same component, or any two when the fit had a prior), ``value`` = what the ranking uses."""
    si, sj = np.asarray(si, dtype=np.float64), np.asarray(sj, dtype=np.float64)
    cross = np.asarray(ci) != np.asarray(cj)
    defined = ~cross if not across else np.ones_like(cross)
    sd = np.sqrt(np.maximum(np.asarray(sei) ** 2 + np.asarray(sej) ** 2, 1e-12))
    p = np.where(defined, _ndtr((si - sj) / sd), np.nan)
    bits = np.where(defined, _entropy2(np.clip(np.nan_to_num(p, nan=0.5), 0.0, 1.0)), 1.0)
    value = np.where(cross, bits + BRIDGE_BONUS * (1.0 - bits), bits)  # bits = 1 where undefined
    return {"p": p, "bits": bits, "cross": cross, "defined": defined, "value": value}


@dataclass
class Calibration:
    """The criterion's latest calibration run, as the proposer needs it."""

    run_id: int
    n_pairs: int  # scored pairs among this corpus' documents
    n_components: int
    partners: dict  # document position -> {partner position: (score, stderr, component)}
    across: bool = True  # fitted with a prior: scores of different components share one scale

    def info(self) -> dict:
        return {"run_id": self.run_id, "pairs": self.n_pairs, "components": self.n_components,
                "across_components": self.across}

    def anchor_uncertainty(self, a: int, taken: set, doc_ids: np.ndarray) -> float:
        """The largest model uncertainty (bits; 1 for a pair across components) of a not-yet-asked
        comparison (a; x, y) among a's scored partners."""
        part = self.partners.get(a)
        if not part or len(part) < 2:
            return 0.0
        xs = list(part)
        v = np.asarray([part[x] for x in xs])
        s, se, c = v[:, 0], v[:, 1], v[:, 2]
        iu, ju = np.triu_indices(len(xs), 1)
        u = _model_uncertainty(s[iu], s[ju], se[iu], se[ju], c[iu], c[ju], self.across)["value"]
        A = int(doc_ids[a])
        for q in np.argsort(-u):
            x, y = int(doc_ids[xs[iu[q]]]), int(doc_ids[xs[ju[q]]])
            if canonical(A, x, y)[:3] not in taken:
                return float(u[q])
        return 0.0


def _load_calibration(store: Store, criterion_id: int, pos_of: dict[int, int]) -> Optional[Calibration]:
    """The latest calibration run's pair scores, or None (no run, or no calibration stage here)."""
    try:
        from ..calibrate.tables import PairScore
        from ..models import CalibrationRun
    except ImportError:  # pragma: no cover - the calibration stage is not installed
        return None
    from sqlalchemy.exc import DBAPIError

    try:
        with store.session() as s:
            run = s.execute(select(CalibrationRun.id, CalibrationRun.params).where(CalibrationRun.criterion_id == criterion_id)
                            .order_by(CalibrationRun.id.desc()).limit(1)).first()
            if run is None:
                return None
            run_id, params = run
            rows = s.execute(select(PairScore.anchor_id, PairScore.candidate_id, PairScore.score, PairScore.stderr,
                                    PairScore.component).where(PairScore.calibration_run_id == run_id)).all()
    except DBAPIError:  # pragma: no cover - a store without the calibration tables
        return None
    partners: dict[int, dict[int, tuple]] = defaultdict(dict)
    comps = set()
    n = 0
    for a, c, score, se, comp in rows:
        pa, pc = pos_of.get(int(a)), pos_of.get(int(c))
        if pa is None or pc is None or score is None or not math.isfinite(score):
            continue
        v = (float(score), float(se or 0.0), int(comp))
        partners[pa][pc] = v  # the pair is unordered: usable with either document as anchor
        partners[pc][pa] = v
        comps.add(int(comp))
        n += 1
    if not n:
        return None
    return Calibration(int(run_id), n, len(comps), dict(partners), across=bool((params or {}).get("prior", 2.0)))


def _z(S: np.ndarray) -> np.ndarray:
    mu = S.mean(axis=-1, keepdims=True)
    sd = S.std(axis=-1, keepdims=True)
    return (S - mu) / np.where(sd > 1e-9, sd, 1.0)


@dataclass
class AnchorPool:
    anchor: int  # document position
    pos: np.ndarray  # candidate positions [P]
    src: list  # where each candidate came from
    S: np.ndarray  # [M, P] raw scores, one row per method
    G: Optional[np.ndarray]  # [P] criterion-blind similarity (for contrast), or None
    Z: Optional[np.ndarray] = None
    GZ: Optional[np.ndarray] = None
    # the calibrated model, per candidate: s({a, x}), its stderr, its component (NaN / -1: not scored)
    ms: Optional[np.ndarray] = None
    mse: Optional[np.ndarray] = None
    mc: Optional[np.ndarray] = None

    cal: Optional["Calibration"] = None

    def finish(self, cal: Optional["Calibration"] = None) -> None:
        self.cal = cal
        self.Z = _z(self.S)
        self.GZ = _z(self.G) if self.G is not None else None
        part = cal.partners.get(self.anchor) if cal is not None else None
        if part:
            P = len(self.pos)
            self.ms = np.full(P, np.nan)
            self.mse = np.zeros(P)
            self.mc = np.full(P, -1, dtype=np.int64)
            for q, x in enumerate(self.pos.tolist()):
                v = part.get(x)
                if v is not None:
                    self.ms[q], self.mse[q], self.mc[q] = v

    def features(self, i: np.ndarray, j: np.ndarray, aware: np.ndarray) -> dict[str, np.ndarray]:
        M = self.S.shape[0]
        raw = self.S[:, i] - self.S[:, j]
        zm = (self.Z[:, i] - self.Z[:, j]) / math.sqrt(2)
        fused = zm.mean(axis=0)
        if M > 1:
            p = ((raw > 0).sum(axis=0) + 0.5 * (raw == 0).sum(axis=0)) / M
            H = _entropy2(p)
        else:
            H = np.zeros(raw.shape[1])
        closeness = np.exp(-np.abs(fused))
        if self.GZ is not None and aware.any():
            g = (self.GZ[i] - self.GZ[j]) / math.sqrt(2)
            fa = zm[aware].mean(axis=0)
            contrast = np.tanh(np.maximum(0.0, -g * fa))
        else:
            contrast = np.zeros(raw.shape[1])
        dis = (H + 0.25) * closeness
        con = 0.5 * contrast
        committee = dis + con
        out = {"raw": raw, "fused": fused, "entropy": H, "contrast": contrast, "priority": committee, "is_contrast": con > dis}
        if self.ms is not None and self.cal is not None:
            si, sj = self.ms[i], self.ms[j]
            both = np.isfinite(si) & np.isfinite(sj)
            if both.any():
                m = _model_uncertainty(np.where(both, si, 0.0), np.where(both, sj, 0.0), self.mse[i], self.mse[j],
                                       self.mc[i], self.mc[j], self.cal.across)
                out["priority"] = np.where(both, UNCERTAINTY_WEIGHT * m["value"] + COMMITTEE_WEIGHT * committee, committee)
                out["model_p"] = np.where(both & m["defined"], m["p"], np.nan)
                out["uncertainty"] = np.where(both & m["defined"], m["bits"], np.nan)
                out["defined"] = both & m["defined"]
                out["cross"] = both & m["cross"]
        return out


def _load_docs(store: Store, criterion) -> tuple[np.ndarray, list[str]]:
    with store.session() as s:
        q = select(Document.id, Document.content_hash).order_by(Document.id)
        if criterion.corpus_id is not None:
            q = q.where(Document.corpus_id == criterion.corpus_id)
        rows = s.execute(q).all()
    return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]


def _existing(store: Store, criterion_id: int) -> tuple[set, Counter]:
    keys: set = set()
    per_anchor: Counter = Counter()
    with store.session() as s:
        for a, f, sec in s.execute(
            select(Triplet.anchor_id, Triplet.first_id, Triplet.second_id).where(Triplet.criterion_id == criterion_id)
        ):
            keys.add((a, f, sec))
            per_anchor[a] += 1
    return keys, per_anchor


# --------------------------------------------------------------------------- the entry point


def propose(
    store: Store,
    criterion_name: str,
    *,
    methods: Optional[Sequence[str] | str] = None,
    budget: int = 100,
    per_anchor: int = 5,
    audit: float = 0.1,
    attention: float = 0.05,
    bridge: float = 0.05,
    top_k: int = 10,
    n_mid: int = 4,
    n_random: int = 4,
    model: Optional[str] = None,
    cross_encoder: Optional[str] = None,
    llm_model: Optional[str] = None,
    base_url: Optional[str] = None,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    batch_size: int = 64,
    progress: Optional[Progress] = None,
    dry_run: bool = False,
) -> ProposeSummary:
    """Propose triplets for ``criterion_name`` until it has ``budget`` in total.

    ``methods``: names from :data:`REGISTRY` (list or comma-separated; default
    embedding, bm25, rewrite-bm25, in-one-word; giving ``cross_encoder`` adds the
    cross-encoder).  ``progress(task, done, total)`` is called during embedding,
    scoring and writing.  Returns a :class:`ProposeSummary`.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    names = parse_methods(methods)
    if cross_encoder and "cross-encoder" not in names:
        names.append("cross-encoder")
    if budget < 0:
        raise CondsimError("--budget must be >= 0 (it is the criterion's total number of triplets)")
    if per_anchor < 1:
        raise CondsimError("--per-anchor must be >= 1")
    for label, frac in (("--audit", audit), ("--attention", attention), ("--bridge", bridge)):
        if not 0 <= frac <= 1:
            raise CondsimError(f"{label} is a fraction of the budget, between 0 and 1 (got {frac})")
    if audit + attention + bridge > 1:
        raise CondsimError("--audit + --attention + --bridge exceed the whole budget")

    if not any(REGISTRY[n].kind == "dense" for n in names):
        raise CondsimError("re-rank methods (cross-encoder, lm-judge) need at least one retrieval method, e.g. embedding or bm25")
    with store.session() as s:
        crit = get_criterion(s, criterion_name)
    keys, per_anchor_existing = _existing(store, crit.id)
    existing = len(keys)
    summary = ProposeSummary(criterion=crit.name, budget=budget, existing=existing, methods=names)
    remaining = budget - existing
    if remaining <= 0:
        summary.message = f"criterion {crit.name!r} already has {existing} triplets (budget {budget}): nothing to add"
        summary.seconds = time.perf_counter() - t0
        return summary

    doc_ids, hashes = _load_docs(store, crit)
    N = len(doc_ids)
    if N < 3:
        raise CondsimError(f"criterion {crit.name!r} has {N} documents; a triplet needs at least 3 (ingest some first)")
    rng = np.random.default_rng([int(seed), int(crit.id)])

    # ---- anchors: room under the cap, fewest existing triplets first
    used = np.asarray([per_anchor_existing.get(int(d), 0) for d in doc_ids])
    room = per_anchor - used
    eligible = np.flatnonzero(room > 0)
    if len(eligible) == 0:
        raise CondsimError(
            f"every document already anchors {per_anchor} triplets of {crit.name!r}: raise --per-anchor to add more"
        )
    order = np.lexsort((rng.random(len(eligible)), used[eligible]))
    n_anchors = min(len(eligible), int(math.ceil(remaining / per_anchor * 1.15)) + 2)
    picked = eligible[order[:n_anchors]]
    # ---- once calibrated: also the anchors whose scored pairs hold the most uncertain comparisons
    cal = _load_calibration(store, crit.id, {int(d): i for i, d in enumerate(doc_ids)})
    if cal is not None:
        t = time.perf_counter()
        cand = np.asarray([a for a in eligible.tolist() if len(cal.partners.get(a, ())) >= 2], dtype=np.int64)
        unc = np.asarray([cal.anchor_uncertainty(int(a), keys, doc_ids) for a in cand], dtype=np.float64)
        cal_order = np.lexsort((rng.random(len(cand)), used[cand], -unc))
        extra = [int(cand[q]) for q in cal_order if unc[q] > 0][:n_anchors]
        picked = np.union1d(picked, np.asarray(extra, dtype=np.int64))
        summary.calibration = {**cal.info(), "anchors": len(extra)}
        timings["calibration"] = round(time.perf_counter() - t, 3)
    anchors = np.sort(picked).astype(np.int64)
    summary.anchors = len(anchors)

    options = {"model": model, "cross_encoder": cross_encoder, "llm_model": llm_model, "base_url": base_url,
               "batch_size": batch_size, "seed": seed}
    ctx = ProposeContext(store, crit, doc_ids, hashes, options=options, cache=cache_root(store.url, cache_dir), progress=progress)
    ctx.anchor_pos = anchors

    # ---- prepare methods
    active: list[Method] = []
    for name in names:
        spec = REGISTRY[name]
        t = time.perf_counter()
        m = spec.load()(ctx, spec)
        try:
            m.prepare()
        except SkipMethod as exc:
            summary.skipped[name] = str(exc)
            continue
        active.append(m)
        summary.method_info[name] = m.info()
        timings[f"prepare {name}"] = round(time.perf_counter() - t, 3)
    if not active:
        reasons = "; ".join(f"{k}: {v}" for k, v in summary.skipped.items())
        raise CondsimError(f"no proposal method can run ({reasons})")
    summary.methods = [m.name for m in active]
    dense = [m for m in active if isinstance(m, DenseMethod)]
    rerank = [m for m in active if isinstance(m, RerankMethod)]
    if not dense:
        raise CondsimError("re-rank methods (cross-encoder, lm-judge) need at least one retrieval method, e.g. embedding or bm25")
    M = len(dense) + len(rerank)
    aware = np.asarray([m.criterion_aware for m in dense + rerank])
    primary = next((m for m in dense if m.criterion_aware), dense[0])
    generic_src = next((m for m in dense if not m.criterion_aware), None)
    generic_emb = next((m for m in dense if getattr(m, "has_generic", False)), None)

    # ---- pools (exact k-NN over all documents, in blocks)
    t = time.perf_counter()
    k = max(1, min(top_k, N - 1))
    upper = min(N - 1, max(4 * k, N // 10))
    block = max(1, min(256, (1 << 24) // max(N, 1)))
    pools: list[AnchorPool] = []
    cb = ctx.progress_fn("scoring anchors")
    cb(0, len(anchors))
    for b0 in range(0, len(anchors), block):
        blk = anchors[b0 : b0 + block]
        rows = [m.scores(blk).astype(np.float32, copy=False) for m in dense]
        if generic_src is not None:
            grows = rows[dense.index(generic_src)]
        elif generic_emb is not None:
            grows = generic_emb.generic_scores(blk)
        else:
            grows = None
        ar = np.arange(len(blk))
        tops = []
        for R in rows:
            R[ar, blk] = -np.inf
            tops.append(np.argpartition(-R, k - 1, axis=1)[:, :k])
        Rp = rows[dense.index(primary)]
        mids = None
        if upper > k and n_mid:
            # mid-rank (ranks k..upper of the primary method) without sorting 100k scores per anchor:
            # the upper-th score is estimated from a column sample, then random columns are kept
            # when they fall between it and the k-th score
            ti = tops[dense.index(primary)]
            t_k = np.take_along_axis(Rp, ti, axis=1).min(axis=1)
            sample = Rp[:, rng.integers(0, N, size=min(N, 1024))]
            t_up = np.nanquantile(np.where(np.isfinite(sample), sample, np.nan), 1 - upper / N, axis=1, method="lower")
            draw = rng.integers(0, N, size=(len(blk), 16 * n_mid))
            vals = np.take_along_axis(Rp, draw, axis=1)
            ok = (vals >= t_up[:, None]) & (vals < t_k[:, None])
            mids = [draw[i][ok[i]][:n_mid] for i in range(len(blk))]
        for i, a in enumerate(blk):
            src: dict[int, str] = {}
            for m, top in zip(dense, tops):
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
        cb(min(b0 + block, len(anchors)), len(anchors))
    timings["pools"] = round(time.perf_counter() - t, 3)
    pool_of = {p.anchor: p for p in pools}
    anchor_set = set(pool_of)

    # ---- bridges: pick {a, b} pairs of anchors, make sure each is in the other's pool
    n_att = int(round(remaining * attention))
    n_audit = int(round(remaining * audit))
    n_bridge = int(round(remaining * bridge)) if len(anchors) > 1 else 0
    bridge_pairs: list[tuple[int, int]] = []
    if n_bridge:
        cands = sorted({(min(p.anchor, int(x)), max(p.anchor, int(x))) for p in pools for x in p.pos if int(x) in anchor_set})
        if cands:
            idx = rng.permutation(len(cands))[: int(math.ceil(n_bridge / 2))]
            bridge_pairs = [cands[i] for i in idx]
        for a, b in bridge_pairs:
            for u, v in ((a, b), (b, a)):
                pu = pool_of[u]
                if v in set(pu.pos.tolist()):
                    continue
                col = np.asarray([float(m.score_pairs(u, np.asarray([v]))[0]) for m in dense])
                pu.pos = np.append(pu.pos, v)
                pu.src.append("bridge")
                pu.S = np.concatenate([pu.S, col[:, None]], axis=1)
                if pu.G is not None:
                    gsrc = generic_src or generic_emb
                    g = gsrc.score_pairs(u, np.asarray([v]))[0] if gsrc is generic_src else float(
                        generic_emb.generic_scores(np.asarray([u]))[0, v])
                    pu.G = np.append(pu.G, float(g))

    # ---- re-rank methods score the pools
    for m in rerank:
        t = time.perf_counter()
        prior = [_z(p.S[: len(dense)]).mean(axis=0) for p in pools]
        scored = m.score_pools([p.anchor for p in pools], [p.pos for p in pools], progress=ctx.progress_fn(f"scoring pools ({m.name})"),
                               prior=prior)
        for p, sc in zip(pools, scored):
            p.S = np.concatenate([p.S, np.asarray(sc, dtype=np.float64)[None, :]], axis=0)
        timings[f"score {m.name}"] = round(time.perf_counter() - t, 3)
        summary.method_info[m.name] = m.info()
    for p in pools:
        p.finish(cal)
    method_names = [m.name for m in dense + rerank]
    summary.candidates = int(sum(len(p.pos) for p in pools))

    # ---- selection
    t = time.perf_counter()
    taken = set(keys)
    cap_left = {p.anchor: int(room[p.anchor]) for p in pools}
    use_in_anchor: dict[int, Counter] = defaultdict(Counter)
    chosen: list[dict] = []

    def try_take(p: AnchorPool, i: int, j: int, strategy: str, feats: dict, col: int, *, ranked: bool = False, **extra) -> bool:
        a = p.anchor
        x, y = int(p.pos[i]), int(p.pos[j])
        if x == y or a in (x, y) or cap_left[a] <= 0:
            return False
        key = canonical(int(doc_ids[a]), int(doc_ids[x]), int(doc_ids[y]))[:3]
        if key in taken:
            return False
        if ranked and (use_in_anchor[a][x] >= 2 or use_in_anchor[a][y] >= 2):
            return False
        taken.add(key)
        cap_left[a] -= 1
        use_in_anchor[a][x] += 1
        use_in_anchor[a][y] += 1
        meta = {"entropy": round(float(feats["entropy"][col]), 4), "fused": round(float(feats["fused"][col]), 4),
                "contrast": round(float(feats["contrast"][col]), 4), "sources": [p.src[i], p.src[j]]}
        if "model_p" in feats and (feats["defined"][col] or feats["cross"][col]):
            mp, ub = float(feats["model_p"][col]), float(feats["uncertainty"][col])
            meta["model_p"] = round(mp, 4) if math.isfinite(mp) else None  # None: the fit has no common scale for them
            meta["uncertainty"] = round(ub, 4) if math.isfinite(ub) else None
            if feats["cross"][col]:
                meta["bridges_components"] = True
        chosen.append({
            "a": a, "x": x, "y": y, "strategy": strategy, "priority": float(feats["priority"][col]),
            "sx": p.S[:, i].tolist(), "sy": p.S[:, j].tolist(), "meta": meta, **extra,
        })
        return True

    def feats_for(p: AnchorPool, i, j) -> dict:
        return p.features(np.atleast_1d(np.asarray(i)), np.atleast_1d(np.asarray(j)), aware)

    # attention checks: every method prefers x by a wide margin
    if n_att:
        got = 0
        for ai in rng.permutation(len(pools)):
            if got >= n_att:
                break
            p = pools[ai]
            if len(p.pos) < 3:
                continue
            i = int(np.argmax(p.Z.min(axis=0)))
            j = int(np.argmin(p.Z.max(axis=0)))
            if i == j:
                continue
            f = feats_for(p, i, j)
            if (f["raw"][:, 0] > 0).all() and f["fused"][0] >= 1.5:
                got += try_take(p, i, j, "attention", f, 0, is_attention_check=True, expected="first")

    # bridges: (a; b, z) and (b; a, w), each with the best-priority partner
    for a, b in bridge_pairs:
        for u, v in ((a, b), (b, a)):
            p = pool_of[u]
            vi = int(np.flatnonzero(p.pos == v)[0])
            others = np.asarray([q for q in range(len(p.pos)) if q != vi])
            if not len(others):
                continue
            f = p.features(np.full(len(others), vi), others, aware)
            for col in np.argsort(-f["priority"]):
                if try_take(p, vi, int(others[col]), "bridge", f, int(col)):
                    break

    # the audit slice: uniform over anchors and pairs of their pools
    tries = 0
    n_before = len(chosen)
    while len(chosen) - n_before < n_audit and tries < n_audit * 30:
        tries += 1
        p = pools[int(rng.integers(len(pools)))]
        if len(p.pos) < 2:
            continue
        i, j = (int(v) for v in rng.choice(len(p.pos), size=2, replace=False))
        try_take(p, i, j, "audit", feats_for(p, i, j), 0)

    # disagreement (and contrast) pairs, round-robin across anchors
    ranked: list[tuple[AnchorPool, dict, np.ndarray, np.ndarray, np.ndarray]] = []
    for p in pools:
        P = len(p.pos)
        if P < 2 or cap_left[p.anchor] <= 0:
            continue
        iu, ju = np.triu_indices(P, 1)
        f = p.features(iu, ju, aware)
        L = min(len(iu), max(4 * per_anchor, 20))
        top = np.argpartition(-f["priority"], L - 1)[:L] if L < len(iu) else np.arange(len(iu))
        top = top[np.argsort(-f["priority"][top])]
        ranked.append((p, f, iu, ju, top))
    cursor = [0] * len(ranked)
    target = remaining
    while len(chosen) < target:
        heads = []
        for r, (p, f, iu, ju, top) in enumerate(ranked):
            if cap_left[p.anchor] > 0 and cursor[r] < len(top):
                heads.append((float(f["priority"][top[cursor[r]]]), r))
        if not heads:
            break
        heads.sort(reverse=True)
        for _prio, r in heads:
            if len(chosen) >= target:
                break
            p, f, iu, ju, top = ranked[r]
            while cursor[r] < len(top) and cap_left[p.anchor] > 0:
                col = int(top[cursor[r]])
                cursor[r] += 1
                if "defined" in f and f["defined"][col]:
                    strategy = "uncertainty"
                elif "cross" in f and f["cross"][col]:
                    strategy = "bridge"  # joins two components the fit cannot compare
                else:
                    strategy = "contrast" if f["is_contrast"][col] else "disagreement"
                if try_take(p, int(iu[col]), int(ju[col]), strategy, f, col, ranked=True):
                    break
    # audit and attention triplets are interleaved in the queue: priorities drawn from the chosen ones
    dis_prio = [c["priority"] for c in chosen if c["strategy"] in RANKED + ("bridge",)] or [0.5]
    for c in chosen:
        if c["strategy"] in ("audit", "attention"):
            c["priority"] = float(rng.choice(dis_prio))
    chosen.sort(key=lambda c: -c["priority"])
    timings["select"] = round(time.perf_counter() - t, 3)
    if summary.calibration is not None:
        summary.calibration["bridging"] = sum(1 for c in chosen if c["meta"].get("bridges_components"))
    summary.shortfall = max(0, remaining - len(chosen))
    if dry_run:
        summary.by_strategy = dict(Counter(c["strategy"] for c in chosen))
        summary.timings = timings
        summary.seconds = time.perf_counter() - t0
        summary.message = f"dry run: would add {len(chosen)} triplets to {crit.name!r} (nothing written)"
        summary.proposals = [
            {"anchor_id": int(doc_ids[c["a"]]), "x_id": int(doc_ids[c["x"]]), "y_id": int(doc_ids[c["y"]]),
             "strategy": c["strategy"], "priority": round(c["priority"], 6), "expected": c.get("expected"),
             "margins": {m: float(c["sx"][k] - c["sy"][k]) for k, m in enumerate(method_names)}, **c["meta"]}
            for c in chosen
        ]
        return summary

    # ---- write, one committed batch at a time
    t = time.perf_counter()
    summary.added, by_strategy = _write(store, crit, chosen, doc_ids, method_names, names, summary, ctx, dict(
        budget=budget, per_anchor=per_anchor, audit=audit, attention=attention, bridge=bridge, top_k=top_k, n_mid=n_mid,
        n_random=n_random, model=model, cross_encoder=cross_encoder, llm_model=llm_model, seed=seed,
        calibration_run=cal.run_id if cal is not None else None))
    timings["write"] = round(time.perf_counter() - t, 3)
    summary.by_strategy = by_strategy
    summary.timings = timings
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.shortfall = max(0, remaining - summary.added)
    summary.message = f"added {summary.added} triplets to {crit.name!r} ({summary.total} of budget {budget})"
    if summary.shortfall:
        summary.message += f"; {summary.shortfall} short: the corpus has too few new pairs under --per-anchor {per_anchor}"
    return summary


def _write(store: Store, crit, chosen: list[dict], doc_ids: np.ndarray, method_names: list[str], requested: list[str],
           summary: ProposeSummary, ctx: ProposeContext, params: dict) -> tuple[int, dict]:
    method_label = ("ensemble:" + "+".join(method_names))[:100]
    with store.transaction() as s:
        run = ProposalRun(criterion_id=crit.id, criterion_version=crit.version, methods=method_names,
                          params={**params, "requested_methods": requested, "skipped": summary.skipped}, budget=summary.budget)
        s.add(run)
        s.flush()
        run_id = run.id
    summary.run_id = run_id
    added = 0
    by_strategy: Counter = Counter()
    cb = ctx.progress_fn("writing triplets")
    cb(0, len(chosen))
    try:
        for b0 in range(0, len(chosen), WRITE_BATCH):
            batch = chosen[b0 : b0 + WRITE_BATCH]
            rows = []
            for c in batch:
                a, x, y = int(doc_ids[c["a"]]), int(doc_ids[c["x"]]), int(doc_ids[c["y"]])
                a, f, sec, swapped = canonical(a, x, y)
                sf, ss = (c["sy"], c["sx"]) if swapped else (c["sx"], c["sy"])
                meta = dict(c["meta"])
                if swapped:
                    meta["sources"] = meta["sources"][::-1]
                    meta["fused"] = -meta["fused"]
                    if meta.get("model_p") is not None:
                        meta["model_p"] = round(1.0 - meta["model_p"], 4)
                exp = to_canonical_choice(c["expected"], swapped) if c.get("expected") else None
                rows.append((c, dict(criterion_id=crit.id, anchor_id=a, first_id=f, second_id=sec, method=method_label,
                                     strategy=c["strategy"], proposal_run=run_id, priority=c["priority"],
                                     is_attention_check=bool(c.get("is_attention_check")), expected=exp, meta=meta), sf, ss))
            with store.transaction() as s:
                created: list[tuple[Triplet, list, list]] = []
                try:
                    with s.begin_nested():
                        objs = [Triplet(**r) for _c, r, _sf, _ss in rows]
                        s.add_all(objs)
                        s.flush()
                        created = [(o, sf, ss) for o, (_c, _r, sf, ss) in zip(objs, rows)]
                except IntegrityError:
                    # someone else proposed some of these meanwhile: one at a time through the shared helper
                    created = []
                    for c, r, sf, ss in rows:
                        kw = {k: v for k, v in r.items() if k not in ("criterion_id", "anchor_id", "first_id", "second_id")}
                        t, new = add_triplet(s, r["criterion_id"], r["anchor_id"], r["first_id"], r["second_id"], **kw)
                        if new:
                            created.append((t, sf, ss))
                margins = [
                    {"triplet_id": t.id, "proposal_run_id": run_id, "method": mname, "score_first": float(sf[k]),
                     "score_second": float(ss[k]), "margin": float(sf[k] - ss[k])}
                    for t, sf, ss in created for k, mname in enumerate(method_names)
                ]
                if margins:
                    s.execute(insert(TripletMargin), margins)
                run = s.get(ProposalRun, run_id)
                run.n_added += len(created)
                s.add(run)
            added += len(created)
            by_strategy.update(t.strategy for t, _sf, _ss in created)
            cb(min(b0 + WRITE_BATCH, len(chosen)), len(chosen))
    except BaseException as exc:
        _finish_run(store, run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", added, dict(by_strategy))
        raise
    _finish_run(store, run_id, "done", added, dict(by_strategy), summary)
    return added, dict(by_strategy)


def _finish_run(store: Store, run_id: int, status: str, added: int, by_strategy: dict, summary: Optional[ProposeSummary] = None) -> None:
    try:
        with store.transaction() as s:
            run = s.get(ProposalRun, run_id)
            run.status = status
            run.finished_at = utcnow()
            run.summary = {"added": added, "by_strategy": by_strategy, **(
                {"anchors": summary.anchors, "candidates": summary.candidates, "skipped": summary.skipped,
                 "method_info": summary.method_info} if summary else {})}
            s.add(run)
    except Exception:  # pragma: no cover - the store is unreachable; the triplets already written stand
        pass


def proposal_runs(store: Store, criterion_name: Optional[str] = None) -> list[ProposalRun]:
    with store.session() as s:
        q = select(ProposalRun).order_by(ProposalRun.id)
        if criterion_name:
            q = q.where(ProposalRun.criterion_id == get_criterion(s, criterion_name).id)
        return list(s.scalars(q).all())
