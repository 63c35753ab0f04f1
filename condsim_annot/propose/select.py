"""Proposing triplets: pick anchors -> build pools -> pure selection -> write.

The stages (one call of :func:`propose`), each in its own module:

1. **Budget.**  ``budget`` is the criterion's *total* number of triplets: the run adds
   ``budget - existing`` (nothing when that is <= 0, so re-running is a no-op).  Runs left
   ``running`` by a killed process are first marked ``interrupted (stale)`` (:mod:`.write`).
2. **Anchors** (:mod:`.anchors`).  Documents with room under the per-anchor cap, fewest existing
   triplets first; once the criterion is calibrated, up to as many again whose scored pairs hold
   the most valuable comparison.
3. **Methods** (:mod:`.registry`).  Each method is prepared (models loaded, document embeddings
   read from or written to the cache, indexes built); one that cannot run here is skipped with
   its reason.
4. **Pools** (:mod:`.pools`).  Every dense method's top-k, a few mid-rank and random documents
   and (once calibrated) every scored partner; re-rank methods then score the pools.
5. **Features.**  Per comparison (x, y) of an anchor's pool: the committee's disagreement
   (vote entropy of the methods x fused margin near 0) and criterion contrast; once a
   calibration run exists, by default (``rank="gold"``) the *expected new gold triplets per
   vote* under the fitted model (:func:`.information.expected_gold`: the chance that P(label)
   reaches the run's tau with its min-votes after ``votes`` more votes; a true tie, a settled
   one or an already gold one is worth ~0) plus the model's lean, for every comparison (pairs
   nobody asked yet predicted by the run's feature weights, :mod:`.prior`):
   ``priority = 2 votes value + 0.05 committee``.  With ``rank="information"``, for comparisons
   whose two pairs are scored, the *expected information of one more vote* (Davidson ties
   included), relative to a pair nobody voted on, with a bonus for joining components:
   ``priority = 2 value + 0.25 committee``.
6. **Selection** (:mod:`.choose`, pure).  Attention checks, bridge triplets where they join
   components, a uniform audit slice, then the best comparisons round-robin across anchors,
   an anchor's triplets chained so they share pairs.
7. **Writing** (:mod:`.write`).  In committed batches with every method's margins; the summary
   reports the comparison graph's components before and after.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from ..criteria import get_criterion
from ..db import Store
from ..errors import CondsimError
from ..models import Criterion
from . import context, write
from .anchors import all_anchors, calibrated_anchors, pick_anchors
from .cache import cache_root
from .calibration import Calibration, load_calibration
from .choose import Picks, choose_bridge_pairs, select_triplets
from .context import Progress, ProposeContext, existing_triplets, load_docs
from .graph import UnionFind, components
from .options import RANKED, STRATEGIES, ProposeOptions, ProposeSummary
from .pools import AnchorPool, Committee, add_bridge_members, build_pools, rerank_pools
from .registry import REGISTRY, DenseMethod, Method, RerankMethod, SkipMethod
from .write import WRITE_BATCH, mark_stale_runs, proposal_runs, write_chosen

__all__ = ["RANKED", "STRATEGIES", "WRITE_BATCH", "AnchorPool", "Calibration", "ProposeContext", "ProposeOptions",
           "ProposeSummary", "existing_triplets", "load_docs", "proposal_runs", "propose", "write"]


def _id(crit: Criterion) -> int:
    assert crit.id is not None  # a stored criterion
    return int(crit.id)


def _prepare_methods(ctx: ProposeContext, names: list[str], summary: ProposeSummary, timings: dict) -> Committee:
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
    com = Committee([m for m in active if isinstance(m, DenseMethod)],
                    [m for m in active if isinstance(m, RerankMethod)])
    if not com.dense:
        raise CondsimError(
            "re-rank methods (cross-encoder, lm-judge) need at least one retrieval method, e.g. embedding or bm25")
    return com


def _anchors(store: Store, crit: Criterion, doc_ids: np.ndarray, keys: set, per_anchor_existing: Counter,
             opts: ProposeOptions, remaining: int, rng: np.random.Generator,
             summary: ProposeSummary) -> tuple[np.ndarray, np.ndarray, Calibration | None]:
    """Stage 2: the anchors, their room under the cap, and the calibration run (if any)."""
    used = np.asarray([per_anchor_existing.get(int(d), 0) for d in doc_ids])
    picked, eligible, n_anchors = pick_anchors(used, opts.per_anchor, remaining, rng, crit.name)
    cal = load_calibration(store, _id(crit), {int(d): i for i, d in enumerate(doc_ids)}, rank=opts.rank,
                           votes=opts.votes)
    extra = None
    if cal is not None:
        t = time.perf_counter()
        extra = calibrated_anchors(cal, eligible, used, keys, doc_ids, n_anchors, rng)
        summary.calibration = {**cal.info(), "anchors": len(extra)}
        summary.timings["calibration"] = round(time.perf_counter() - t, 3)
    return all_anchors(picked, extra), opts.per_anchor - used, cal


def _joined(keys: set, pos_of: dict[int, int]) -> UnionFind:
    """Documents the existing triplets already connect (a bridge between them joins nothing new)."""
    uf = UnionFind()
    for a, f, s in keys:
        if a in pos_of and f in pos_of and s in pos_of:
            uf.union(pos_of[a], pos_of[f])
            uf.union(pos_of[a], pos_of[s])
    return uf


def _pools(ctx: ProposeContext, com: Committee, anchors: np.ndarray, cal: Calibration | None, keys: set,
           opts: ProposeOptions, remaining: int, rng: np.random.Generator,
           summary: ProposeSummary) -> tuple[list[AnchorPool], list[tuple[int, int]]]:
    """Stage 4: pools, bridge members, re-rank scores, features ready."""
    t = time.perf_counter()
    pools = build_pools(ctx, anchors, com, top_k=opts.top_k, n_mid=opts.n_mid, n_random=opts.n_random, cal=cal, rng=rng)
    summary.timings["pools"] = round(time.perf_counter() - t, 3)
    n_bridge = int(round(remaining * opts.bridge)) if len(anchors) > 1 else 0
    pos_of = {int(d): i for i, d in enumerate(ctx.doc_ids)}
    bridge_pairs = choose_bridge_pairs(pools, n_bridge, rng, _joined(keys, pos_of))
    add_bridge_members(pools, bridge_pairs, com)
    rerank_pools(ctx, pools, com, summary.timings, summary.method_info)
    for p in pools:
        p.finish(cal, com.names)
    summary.candidates = int(sum(len(p.pos) for p in pools))
    return pools, bridge_pairs


def _components(keys: set, chosen: list[dict], doc_ids: np.ndarray) -> dict:
    """Components of the comparison graph before and after the chosen triplets."""
    old = list(keys)
    new = [(int(doc_ids[c["a"]]), int(doc_ids[c["x"]]), int(doc_ids[c["y"]])) for c in chosen]
    before = components([k[0] for k in old], [k[1] for k in old], [k[2] for k in old])
    both = old + new
    after = components([k[0] for k in both], [k[1] for k in both], [k[2] for k in both])
    return {"before": before["components"], "after": after["components"], "largest_before": before["largest"],
            "largest_after": after["largest"], "pairs_before": before["pairs"], "pairs_after": after["pairs"]}


def _dry_run(summary: ProposeSummary, chosen: list[dict], doc_ids: np.ndarray, names: list[str],
             crit: Criterion) -> None:
    summary.by_strategy = dict(Counter(c["strategy"] for c in chosen))
    summary.message = f"dry run: would add {len(chosen)} triplets to {crit.name!r} (nothing written)"
    summary.proposals = [
        {"anchor_id": int(doc_ids[c["a"]]), "x_id": int(doc_ids[c["x"]]), "y_id": int(doc_ids[c["y"]]),
         "strategy": c["strategy"], "priority": round(c["priority"], 6), "expected": c.get("expected"),
         "margins": {m: float(c["sx"][k] - c["sy"][k]) for k, m in enumerate(names)}, **c["meta"]}
        for c in chosen]


def _start(store: Store, criterion_name: str, opts: ProposeOptions) -> tuple[Criterion, set, Counter, ProposeSummary]:
    names = opts.validate()
    with store.session() as s:
        crit = get_criterion(s, criterion_name)
    stale = mark_stale_runs(store, _id(crit))
    keys, per_anchor_existing = context.existing_triplets(store, _id(crit))
    summary = ProposeSummary(criterion=crit.name, budget=opts.budget, existing=len(keys), methods=names,
                             stale_runs=stale)
    return crit, keys, per_anchor_existing, summary


def propose(store: Store, criterion_name: str, options: ProposeOptions | None = None, *,
            progress: Progress | None = None, **kw: Any) -> ProposeSummary:
    """Propose triplets for ``criterion_name`` until it has ``options.budget`` in total.

    Options as a :class:`ProposeOptions` or as its fields by keyword (``budget=200, methods=["embedding"]``;
    keywords override ``options``).  ``progress(task, done, total)`` is called during embedding, scoring and
    writing.  Returns a :class:`ProposeSummary`.
    """
    t0 = time.perf_counter()
    opts = ProposeOptions.from_kwargs(**kw) if options is None else options.updated(**kw)
    crit, keys, per_anchor_existing, summary = _start(store, criterion_name, opts)
    remaining = opts.budget - len(keys)
    if remaining <= 0:
        summary.message = (f"criterion {crit.name!r} already has {len(keys)} triplets (budget {opts.budget}): "
                           "nothing to add")
        summary.seconds = time.perf_counter() - t0
        return summary
    doc_ids, hashes = load_docs(store, crit)
    if len(doc_ids) < 3:
        raise CondsimError(f"criterion {crit.name!r} has {len(doc_ids)} documents; a triplet needs at least 3 "
                           "(ingest some first)")
    rng = np.random.default_rng([int(opts.seed), _id(crit)])
    anchors, room, cal = _anchors(store, crit, doc_ids, keys, per_anchor_existing, opts, remaining, rng, summary)
    summary.anchors = len(anchors)
    ctx = ProposeContext(store, crit, doc_ids, hashes, options=opts.method_options(),
                         cache=cache_root(store.url, opts.cache_dir), progress=progress)
    ctx.anchor_pos = anchors
    com = _prepare_methods(ctx, summary.methods, summary, summary.timings)
    pools, bridge_pairs = _pools(ctx, com, anchors, cal, keys, opts, remaining, rng, summary)

    t = time.perf_counter()
    picks = Picks(attention=int(round(remaining * opts.attention)), audit=int(round(remaining * opts.audit)),
                  bridge=len(bridge_pairs), target=remaining, per_anchor=opts.per_anchor, chain=opts.chain)
    chosen = select_triplets(pools, doc_ids, keys, {p.anchor: int(room[p.anchor]) for p in pools}, com.aware, picks,
                             bridge_pairs, rng)
    summary.timings["select"] = round(time.perf_counter() - t, 3)
    summary.components = _components(keys, chosen, doc_ids)
    if summary.calibration is not None:
        summary.calibration["bridging"] = sum(1 for c in chosen if c["meta"].get("bridges_components"))
    summary.shortfall = max(0, remaining - len(chosen))
    if opts.dry_run:
        _dry_run(summary, chosen, doc_ids, com.names, crit)
        summary.seconds = time.perf_counter() - t0
        return summary

    t = time.perf_counter()
    params = {**opts.run_params(), "calibration_run": cal.run_id if cal is not None else None,
              "requested_methods": opts.method_names(), "skipped": summary.skipped}
    summary.added, summary.by_strategy = write_chosen(store, crit, chosen, doc_ids, com.names, summary, ctx, params)
    summary.timings["write"] = round(time.perf_counter() - t, 3)
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.shortfall = max(0, remaining - summary.added)
    summary.message = f"added {summary.added} triplets to {crit.name!r} ({summary.total} of budget {opts.budget})"
    if summary.shortfall:
        summary.message += (f"; {summary.shortfall} short: the corpus has too few new pairs under "
                            f"--per-anchor {opts.per_anchor}")
    return summary

