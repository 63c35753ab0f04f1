"""The proposer's pure parts on arrays (selection, expected information, chaining, components) and stale runs.

Fast: no model is loaded; the one end-to-end run uses BM25 on a tiny corpus.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from condsim_annot.criteria import add_criterion, get_criterion
from condsim_annot.ingest import ingest
from condsim_annot.models import Triplet, utcnow
from condsim_annot.propose import write as pwrite
from condsim_annot.propose.calibration import Calibration
from condsim_annot.propose.choose import Picks, select_triplets
from condsim_annot.propose.graph import components
from condsim_annot.propose.information import expected_information, outcome_probabilities, tie_probability
from condsim_annot.propose.options import ProposeOptions
from condsim_annot.propose.pools import AnchorPool
from condsim_annot.propose.select import propose
from condsim_annot.propose.tables import ProposalRun

# --------------------------------------------------------------------------- expected information


def test_information_matches_brute_force_monte_carlo():
    rng = np.random.default_rng(0)
    for mu, sd, beta, nu in [(0.7, 1.3, 1.5, 0.8), (0.0, 2.0, 1.0, 0.0), (-1.5, 0.6, 3.0, 2.0)]:
        d = rng.normal(mu, sd, 400_000)
        pf, pt, ps = outcome_probabilities(d, beta, nu)

        def h(*p):
            return -sum(np.where(x > 0, x * np.log2(np.where(x > 0, x, 1)), 0) for x in p)

        mc = float(h(pf.mean(), pt.mean(), ps.mean()) - np.mean(h(pf, pt, ps)))
        assert expected_information(mu, sd, 0.0, 0.0, beta, nu)[0] == pytest.approx(mc, abs=4e-3)


def test_settled_ties_and_settled_orders_teach_nothing_an_unknown_pair_most():
    beta, w, nu = np.array([2.0, 1.2, 0.05]), np.array([3.0, 2.0, 1.0]), 1.2
    unknown = expected_information(0.0, 3.0, 0.0, 3.0, beta, nu, w)[0]
    settled_tie = expected_information(1.0, 0.02, 1.0, 0.02, beta, nu, w)[0]
    settled_order = expected_information(4.0, 0.05, -2.0, 0.05, beta, nu, w)[0]
    assert settled_tie < 0.005 and settled_order < 0.005
    # P(x closer) of the settled tie is .5 and the next vote is often a tie: that is not "ask again"
    assert tie_probability(1.0, 0.02, 1.0, 0.02, beta, nu, w)[0] > 0.3
    grid = [expected_information(m, s, 0.0, 0.0, beta, nu, w)[0] for m in (-3, -1, 0, 0.5, 2) for s in (0.1, 0.5, 1, 2)]
    assert unknown > max(grid) and unknown > 0.5
    # more uncertainty, more to learn; without the tie term a tie-free model agrees in the limits
    assert expected_information(0.0, 0.3, 0, 0, 1.0, 0.0)[0] < expected_information(0.0, 1.5, 0, 0, 1.0, 0.0)[0]


def test_information_weights_are_checked():
    with pytest.raises(ValueError, match="weights"):
        expected_information(0.0, 1.0, 0.0, 1.0, [1.0, 2.0], 0.0, [1.0])


# --------------------------------------------------------------------------- pure selection on arrays


def _pool(anchor: int, cands: list[int], rng: np.random.Generator, cal: Calibration | None = None) -> AnchorPool:
    S = rng.normal(size=(2, len(cands)))
    p = AnchorPool(anchor, np.asarray(cands, dtype=np.int64), ["embedding"] * len(cands), S, None)
    p.finish(cal)
    return p


def _select(pools, per_anchor=5, target=None, chain=True, audit=0, attention=0, seed=0):
    doc_ids = np.arange(1000, 1100, dtype=np.int64)
    cap = {p.anchor: per_anchor for p in pools}
    picks = Picks(attention=attention, audit=audit, bridge=0, target=target or per_anchor * len(pools),
                  per_anchor=per_anchor, chain=chain)
    return select_triplets(pools, doc_ids, set(), cap, np.array([True, False]), picks, [], np.random.default_rng(seed))


def test_selection_respects_caps_and_never_repeats_a_triplet():
    rng = np.random.default_rng(1)
    pools = [_pool(a, [c for c in range(20, 32) if c != a], rng) for a in range(6)]
    chosen = _select(pools, per_anchor=4, audit=3)
    per_anchor = defaultdict(int)
    keys = set()
    for c in chosen:
        per_anchor[c["a"]] += 1
        key = (c["a"], min(c["x"], c["y"]), max(c["x"], c["y"]))
        assert key not in keys and c["x"] != c["y"] and c["a"] not in (c["x"], c["y"])
        keys.add(key)
    assert len(chosen) == 24 and max(per_anchor.values()) == 4
    assert sum(c["strategy"] == "audit" for c in chosen) == 3
    prio = [c["priority"] for c in chosen]
    assert prio == sorted(prio, reverse=True)


def _candidate_components(chosen, anchor):
    edges = [(c["x"], c["y"]) for c in chosen if c["a"] == anchor]
    return components([anchor] * len(edges), [e[0] for e in edges], [e[1] for e in edges])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chaining_makes_an_anchors_triplets_share_pairs(seed):
    rng = np.random.default_rng(seed)
    pools = [_pool(a, list(range(10, 40)), rng) for a in range(8)]
    chained = _select(pools, per_anchor=5, chain=True, seed=seed)
    plain = _select(pools, per_anchor=5, chain=False, seed=seed)
    for a in range(8):
        assert _candidate_components(chained, a)["components"] == 1  # every pair {a, x} joined
    # triangles (x, y), (y, z), (x, z): comparisons whose two candidates were both already asked with a
    assert _triangles(chained) >= 8, _triangles(chained)  # about one triangle per anchor at 5 triplets
    assert components(*zip(*[(c["a"], c["x"], c["y"]) for c in chained], strict=False))["components"] < \
        components(*zip(*[(c["a"], c["x"], c["y"]) for c in plain], strict=False))["components"]


def _triangles(chosen) -> int:
    by_anchor = defaultdict(set)
    for c in chosen:
        by_anchor[c["a"]].add(frozenset((c["x"], c["y"])))
    n = 0
    for edges in by_anchor.values():
        nodes = set().union(*edges)
        for x in nodes:
            for y in nodes:
                for z in nodes:
                    if x < y < z and {frozenset((x, y)), frozenset((y, z)), frozenset((x, z))} <= edges:
                        n += 1
    return n


def test_model_value_ranks_unknown_comparisons_above_settled_ones():
    """With a calibration, a comparison of two well-known pairs (settled tie or order) is not asked while an
    unsettled one is."""
    cands = [10, 11, 12, 13, 14]
    part = {10: (0.0, 0.02, 0), 11: (0.0, 0.02, 0), 12: (5.0, 0.02, 0), 13: (0.3, 1.5, 0), 14: (-0.2, 1.5, 0)}
    cal = Calibration(1, 5, 1, {0: part}, beta=np.array([1.5]), beta_weight=np.ones(1), nu=1.0, prior_sd=2.0)
    pool = _pool(0, cands, np.random.default_rng(0), cal)
    chosen = _select([pool], per_anchor=1, chain=False)
    assert {chosen[0]["x"], chosen[0]["y"]} == {13, 14}
    assert chosen[0]["strategy"] == "uncertainty" and chosen[0]["meta"]["information"] > 0.1
    f = pool.features(np.array([0, 0]), np.array([1, 2]), np.array([True, False]))
    assert (f["information"] < 0.005).all()  # the settled tie (10, 11) and the settled order (10, 12)


def test_options_are_one_frozen_value_and_unknown_names_are_errors():
    o = ProposeOptions.from_kwargs(budget=10, methods=["bm25"])
    assert o.methods == ("bm25",) and o.updated(seed=3).seed == 3 and o.updated(seed=3).budget == 10
    with pytest.raises(Exception, match="unknown propose option"):
        ProposeOptions.from_kwargs(budgte=10)
    with pytest.raises(AttributeError):
        o.budget = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- components in a real run; stale runs


def _tiny_corpus(store, tmp_path, n=40):
    topics = ["prime modular divisor integer", "triangle circle angle polygon", "sum sequence series limit",
              "count choose arrangement graph"]
    rows = [{"id": f"d{i}", "text": f"problem {i} about {topics[i % 4]} and {topics[(i * 7) % 4].split()[i % 4]}"}
            for i in range(n)]
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ingest(store, [str(p)], corpus="tiny")
    add_criterion(store, "topic", "The two problems share a topic.")


def test_propose_reports_components_before_and_after(sqlite_store, tmp_path):
    _tiny_corpus(sqlite_store, tmp_path)
    kw = dict(methods=["bm25"], per_anchor=4, cache_dir=str(tmp_path / "cache"), seed=0)
    s1 = propose(sqlite_store, "topic", budget=30, **kw)
    assert s1.components["before"] == 0 and s1.components["after"] >= 1
    s2 = propose(sqlite_store, "topic", budget=60, **kw)
    with sqlite_store.session() as s:
        rows = s.execute(select(Triplet.anchor_id, Triplet.first_id, Triplet.second_id)).all()
    assert s2.components["before"] == s1.components["after"]
    assert s2.components["after"] == components(*zip(*rows, strict=False))["components"]
    assert s2.to_dict()["components"]["after"] == s2.components["after"]  # what --json prints


def test_a_killed_run_is_marked_stale_and_a_live_one_is_not(store, tmp_path):
    _tiny_corpus(store, tmp_path, n=12)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    with store.transaction() as s:
        cid = get_criterion(s, "topic").id
        old = (utcnow() - timedelta(hours=2)).isoformat()
        runs = [ProposalRun(criterion_id=cid, params={"process": {"host": host, "pid": dead_pid}},
                            summary={"heartbeat": utcnow().isoformat()}),  # killed: its process is gone
                ProposalRun(criterion_id=cid, params={"process": {"host": "elsewhere", "pid": 1}},
                            summary={"heartbeat": old}),  # another machine, silent for 2 h
                ProposalRun(criterion_id=cid, params={"process": {"host": host, "pid": os.getpid()}},
                            summary={"heartbeat": utcnow().isoformat()}),  # alive
                ProposalRun(criterion_id=cid, status="done")]
        s.add_all(runs)
        s.flush()
        ids = [r.id for r in runs]
    assert sorted(pwrite.mark_stale_runs(store)) == sorted(ids[:2])
    by_id = {r.id: r.status for r in pwrite.proposal_runs(store)}
    assert [by_id[i] for i in ids] == [pwrite.STALE, pwrite.STALE, "running", "done"]
    # propose itself cleans up (and says so); the live run stays running
    with store.transaction() as s:
        r = ProposalRun(criterion_id=cid, params={"process": {"host": host, "pid": dead_pid}})
        s.add(r)
        s.flush()
        rid = r.id
    sm = propose(store, "topic", methods=["bm25"], budget=3, per_anchor=2, cache_dir=str(tmp_path / "c"))
    assert sm.stale_runs == [rid] and {r.id: r.status for r in pwrite.proposal_runs(store)}[ids[2]] == "running"
