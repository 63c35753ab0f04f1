"""Proposers on the real CHAMP corpus (270 competition problems, concepts = silver "same technique")."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from helpers import propose_margins as margins
from helpers import propose_triplets as triplets
from helpers import seed_propose as seed
from sqlalchemy import func, select

from condsim_annot.demo import DEMO_CRITERIA
from condsim_annot.errors import CondsimError
from condsim_annot.models import Document, Triplet
from condsim_annot.propose import select as sel
from condsim_annot.propose.select import propose
from condsim_annot.propose.tables import ProposalRun, TripletMargin

EB = ["embedding", "bm25"]


class EncodeCounter:
    """Wraps ``encode`` of the real model object: counts calls and texts (no mock: the model still runs)."""

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.texts = 0
        self._orig = model.encode

        def encode(inputs, *a, **kw):
            self.calls += 1
            self.texts += 1 if isinstance(inputs, str) else len(inputs)
            return self._orig(inputs, *a, **kw)

        model.encode = encode

    def reset(self):
        self.calls = self.texts = 0


@pytest.fixture(scope="session")
def embedder():
    """The bundled MiniLM, loaded once for the whole session, with an encode counter."""
    from condsim_annot.propose.embedding import load_embedder

    return EncodeCounter(load_embedder())


@pytest.fixture(scope="session")
def emb_cache(champ_cache_session):
    """One embedding cache for these tests, CHAMP already embedded (conftest); the cold cache has its own test."""
    return champ_cache_session


@pytest.fixture(scope="session")
def champ_jsonl(champ_problems, tmp_path_factory):
    p = tmp_path_factory.mktemp("champ") / "champ.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in champ_problems) + "\n")
    return str(p)


def concepts_by_id(store) -> dict[int, set]:
    with store.session() as s:
        return {d.id: set((d.meta or {}).get("concepts") or []) for d in s.scalars(select(Document)).all()}


# --------------------------------------------------------------------------- well-formed, budget semantics


@pytest.mark.backends("sqlite")  # MiniLM/CHAMP behaviour; the backends are tested where they matter
def test_proposals_are_well_formed_and_budget_is_a_total(store, champ_jsonl, embedder, emb_cache):
    seed(store, champ_jsonl)
    s1 = propose(store, "same-technique", methods=EB, budget=120, per_anchor=5, cache_dir=emb_cache, seed=1)
    assert s1.added == 120 and s1.total == 120 and s1.shortfall == 0
    assert set(s1.methods) == set(EB) and s1.skipped == {}
    ts = triplets(store)
    assert len(ts) == 120
    keys = {(t.anchor_id, t.first_id, t.second_id) for t in ts}
    assert len(keys) == 120  # never twice
    per_anchor = Counter(t.anchor_id for t in ts)
    assert max(per_anchor.values()) <= 5 and len(per_anchor) >= 24  # spread across anchors
    strategies = Counter(t.strategy for t in ts)
    assert set(strategies) <= {"disagreement", "contrast", "audit", "attention", "bridge"}
    assert strategies["audit"] == 12  # 10% audit slice
    assert 1 <= strategies["attention"] <= 6
    assert strategies["disagreement"] + strategies["contrast"] >= 80
    for t in ts:
        assert t.first_id < t.second_id and t.anchor_id not in (t.first_id, t.second_id)
        assert t.proposal_run == s1.run_id and t.method.startswith("ensemble:")
        if t.is_attention_check:
            assert t.strategy == "attention" and t.expected in ("first", "second")
        else:
            assert t.expected is None
    # bridges: {a, b} asked with a and with b as anchor
    bridges = [t for t in ts if t.strategy == "bridge"]
    assert bridges
    bridged = {(t.anchor_id, d) for t in bridges for d in (t.first_id, t.second_id)}
    assert any((b, a) in bridged for a, b in bridged)
    # every method's margin, canonical: score_first - score_second
    ms = margins(store)
    assert set(ms) == {t.id for t in ts}
    for t in ts:
        assert set(ms[t.id]) == set(EB)
        for m in ms[t.id].values():
            assert m.margin == pytest.approx(m.score_first - m.score_second, abs=1e-6)
            assert m.proposal_run_id == s1.run_id
    # attention checks: every method agrees with `expected`
    for t in ts:
        if t.is_attention_check:
            sign = 1 if t.expected == "first" else -1
            assert all(sign * m.margin > 0 for m in ms[t.id].values())
    with store.session() as s:
        run = s.get(ProposalRun, s1.run_id)
        assert run.status == "done" and run.n_added == 120 and run.budget == 120 and run.methods == EB
    # re-running the same command: a no-op (no run recorded)
    s2 = propose(store, "same-technique", methods=EB, budget=120, cache_dir=emb_cache, seed=1)
    assert s2.added == 0 and s2.run_id is None and "nothing to add" in s2.message
    assert len(triplets(store)) == 120
    # raising the budget adds the difference, still never twice, still capped per anchor
    s3 = propose(store, "same-technique", methods=EB, budget=170, cache_dir=emb_cache, seed=1)
    assert s3.added == 50 and s3.existing == 120
    ts = triplets(store)
    assert len(ts) == 170 and len({(t.anchor_id, t.first_id, t.second_id) for t in ts}) == 170
    assert max(Counter(t.anchor_id for t in ts).values()) <= 5
    # the other criterion is independent
    assert triplets(store, "same-topic") == []


def test_bad_inputs_are_clear_errors(sqlite_store, champ_jsonl, emb_cache):
    seed(sqlite_store, champ_jsonl)
    with pytest.raises(CondsimError, match="no criterion named 'nope'"):
        propose(sqlite_store, "nope", methods=EB, budget=10, cache_dir=emb_cache)
    with pytest.raises(CondsimError, match="unknown method.*bogus"):
        propose(sqlite_store, "same-technique", methods="embedding,bogus", budget=10, cache_dir=emb_cache)
    with pytest.raises(CondsimError, match="--budget"):
        propose(sqlite_store, "same-technique", methods=EB, budget=-1, cache_dir=emb_cache)
    with pytest.raises(CondsimError, match="--audit"):
        propose(sqlite_store, "same-technique", methods=EB, budget=10, audit=1.5, cache_dir=emb_cache)
    with pytest.raises(CondsimError, match="cannot load embedding model"):
        propose(sqlite_store, "same-technique", methods=["embedding"], budget=10, model="/no/such/model",
                cache_dir=emb_cache)
    with pytest.raises(CondsimError, match="need at least one retrieval method"):
        propose(sqlite_store, "same-technique", methods=["cross-encoder"], cross_encoder="x", budget=10,
                cache_dir=emb_cache)


def test_llm_methods_are_skipped_without_an_endpoint(sqlite_store, champ_jsonl, emb_cache, monkeypatch):
    for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CONDSIM_LLM_MODEL"):
        monkeypatch.delenv(v, raising=False)
    seed(sqlite_store, champ_jsonl)
    s = propose(sqlite_store, "same-technique", budget=20, cache_dir=emb_cache)  # default methods
    assert s.methods == ["embedding", "bm25"]
    assert set(s.skipped) == {"rewrite-bm25", "in-one-word"}
    assert all("no LLM endpoint configured" in why for why in s.skipped.values())
    assert s.added == 20
    with pytest.raises(CondsimError, match="no proposal method can run.*no LLM endpoint"):
        propose(sqlite_store, "same-topic", methods=["in-one-word"], budget=5, cache_dir=emb_cache)


# --------------------------------------------------------------------------- the embedding cache


def test_cached_embeddings_are_reused(tmp_path, champ_problems, embedder):
    from condsim_annot.db import open_store

    n_docs = 20  # a fresh cache: keep the encoding short
    small = tmp_path / "champ80.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in champ_problems[:n_docs]) + "\n")
    champ_jsonl = str(small)
    cache = str(tmp_path / "cache")
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    b = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    seed(a, champ_jsonl)
    seed(b, champ_jsonl)
    embedder.reset()
    s1 = propose(a, "same-technique", methods=["embedding"], budget=20, cache_dir=cache)
    assert embedder.texts == n_docs + s1.anchors  # every document once, anchors once with the prompt
    assert s1.method_info["embedding"]["documents_encoded"] == n_docs
    npy = next((tmp_path / "cache" / "emb").glob("*.query.npy")).with_suffix("").with_suffix(".npy")
    arr = np.load(npy, mmap_mode="r")  # a real .npy, memory-mapped
    assert arr.shape == (n_docs, 384) and arr.dtype == np.float32
    assert np.allclose(np.linalg.norm(arr, axis=1), 1, atol=1e-4)
    # the same proposal on another store sharing the cache: no encode at all
    embedder.reset()
    s2 = propose(b, "same-technique", methods=["embedding"], budget=20, cache_dir=cache)
    assert embedder.calls == 0 and s2.added == 20
    assert np.load(npy, mmap_mode="r").shape == (n_docs, 384)
    # a new criterion re-embeds only its anchors (with its own prompt)
    embedder.reset()
    s3 = propose(b, "same-topic", methods=["embedding"], budget=20, cache_dir=cache)
    assert embedder.texts == s3.anchors and s3.method_info["embedding"]["documents_encoded"] == 0
    # a document whose text changes is embedded again, alone
    with b.transaction() as s:
        d = s.scalars(select(Document).order_by(Document.id)).first()
        d.text = d.text + " (edited)"
        from condsim_annot.ingest import content_hash

        d.content_hash = content_hash(d.text)
    embedder.reset()
    s4 = propose(b, "same-topic", methods=["embedding"], budget=21, cache_dir=cache)
    assert s4.method_info["embedding"]["documents_encoded"] == 1
    a.close()
    b.close()


def test_cache_survives_torn_writes(tmp_path):
    from condsim_annot.propose.cache import EmbeddingCache

    c = EmbeddingCache(tmp_path, "m", model="x")
    v = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    c.append([f"k{i}" for i in range(5)], v)
    c.append(["k3", "k4", "k5"], np.ones((3, 4)))  # known keys are skipped
    assert len(c) == 6 and np.allclose(c.get(["k0", "k4"]), v[[0, 4]])
    with open(tmp_path / "m.npy", "ab") as fh:  # a crash mid-append: half a row, a partial key
        fh.write(b"\0" * 7)
    with open(tmp_path / "m.index", "a") as fh:
        fh.write("k6-partial")
    c2 = EmbeddingCache(tmp_path, "m")
    assert len(c2) == 6 and "k6-partial" not in c2
    c2.append(["k7"], np.full((1, 4), 2.0))
    c3 = EmbeddingCache(tmp_path, "m")
    assert len(c3) == 7 and np.allclose(c3.get(["k7"]), 2.0) and np.allclose(c3.get(["k1"]), v[1])
    assert np.load(tmp_path / "m.npy").shape == (7, 4)


def test_bm25_index_is_cached_and_loaded_not_rebuilt(tmp_path, champ_jsonl, monkeypatch):
    """The second run over the same texts loads the BM25 index (no tokenizing, no indexing, no text read)
    and scores exactly as the built one; a changed document gives a new index."""
    import bm25s

    from condsim_annot.db import open_store
    from condsim_annot.propose.bm25 import list_bm25_caches

    calls = Counter()
    real_index, real_load = bm25s.BM25.index, bm25s.BM25.load  # counted, the real code still runs

    def index(self, *a, **k):
        calls["index"] += 1
        return real_index(self, *a, **k)

    def load(cls, *a, **k):
        calls["load"] += 1
        return real_load(*a, **k)

    monkeypatch.setattr(bm25s.BM25, "index", index)
    monkeypatch.setattr(bm25s.BM25, "load", classmethod(load))
    cache = str(tmp_path / "cache")
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    seed(store, champ_jsonl)
    kw = dict(methods=["bm25"], budget=40, cache_dir=cache, seed=4, dry_run=True)
    s1 = propose(store, "same-technique", **kw)
    assert calls == Counter(index=1) and s1.method_info["bm25"]["index"] == "built"
    (entry,) = list_bm25_caches(tmp_path / "cache")
    assert entry["documents"] == 270
    texts_read = Counter()
    real_all_texts = sel.ProposeContext.all_texts
    monkeypatch.setattr(sel.ProposeContext, "all_texts",
                        lambda self: texts_read.update(["all"]) or real_all_texts(self))
    s2 = propose(store, "same-technique", **kw)
    assert calls == Counter(index=1, load=1) and s2.method_info["bm25"]["index"] == "cached"
    assert texts_read["all"] == 0  # the cached index needs no text at all
    assert s2.proposals == s1.proposals  # same scores, same selection
    # another store with the same texts shares it; an edited document makes a new index
    with store.transaction() as s:
        from condsim_annot.ingest import content_hash

        d = s.scalars(select(Document).order_by(Document.id)).first()
        d.text = d.text + " pigeonhole"
        d.content_hash = content_hash(d.text)
    s3 = propose(store, "same-technique", **kw)
    assert calls["index"] == 2 and s3.method_info["bm25"]["index"] == "built"
    assert len(list_bm25_caches(tmp_path / "cache")) == 2
    store.close()


# --------------------------------------------------------------------------- ranking quality on silver labels


def test_disagreement_ranking_finds_more_silver_errors_than_random(sqlite_store, champ_jsonl, emb_cache):
    store = sqlite_store
    seed(store, champ_jsonl)
    conc = concepts_by_id(store)

    def silver_wrong(props):
        """Per proposal with a silver answer (exactly one candidate shares a concept with the anchor):
        how many methods answer against it."""
        out = []
        for p in props:
            ca = conc[p["anchor_id"]]
            fx, fy = bool(ca & conc[p["x_id"]]), bool(ca & conc[p["y_id"]])
            if fx != fy:
                silver = 1 if fx else -1
                out.append(sum(1 for m in p["margins"].values() if np.sign(m) != silver))
        return out

    kw = dict(methods=EB, attention=0.0, bridge=0.0, cache_dir=emb_cache, seed=3, dry_run=True)
    ranked = propose(store, "same-technique", budget=300, audit=0.0, **kw)
    rand = propose(store, "same-technique", budget=800, audit=1.0, **kw)  # uniform pairs of the same pools
    assert ranked.added == 0 and triplets(store) == []  # a dry run writes nothing
    assert {p["strategy"] for p in ranked.proposals} <= {"disagreement", "contrast"}
    assert {p["strategy"] for p in rand.proposals} == {"audit"}
    wr, wa = silver_wrong(ranked.proposals), silver_wrong(rand.proposals)
    print("silver-wrong answers per triplet: ranked", np.mean(wr), np.mean(np.asarray(wr) > 0), len(wr),
          "random", np.mean(wa), np.mean(np.asarray(wa) > 0), len(wa))
    assert len(wr) >= 25 and len(wa) >= 60
    # the committee's disagreement ranking puts more silver-wrong method answers first than random order
    # (on CHAMP both members are weak: a random pair already holds ~0.8 wrong answers of 2)
    assert np.mean(wr) > np.mean(wa) + 0.1, (np.mean(wr), np.mean(wa))
    any_wrong = lambda w: np.mean(np.asarray(w) > 0)  # noqa: E731
    assert any_wrong(wr) > any_wrong(wa) + 0.15, (any_wrong(wr), any_wrong(wa))
    # and within the ranking, priority order matters: its first half holds at least as many errors as random
    top = sorted(ranked.proposals, key=lambda p: -p["priority"])[: len(ranked.proposals) // 2]
    assert np.mean(silver_wrong(top)) > np.mean(wa)


# --------------------------------------------------------------------------- Ctrl-C


def test_interrupt_leaves_a_consistent_store_and_resumes(sqlite_store, champ_jsonl, emb_cache, monkeypatch):
    store = sqlite_store
    seed(store, champ_jsonl)
    monkeypatch.setattr(sel.write, "WRITE_BATCH", 20)

    def progress(name, done, total):
        if name == "writing triplets" and done >= 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        propose(store, "same-technique", methods=EB, budget=100, cache_dir=emb_cache, progress=progress)
    ts = triplets(store)
    assert len(ts) == 40  # two committed batches
    ms = margins(store)
    assert all(set(ms[t.id]) == set(EB) for t in ts)  # each triplet with its margins, none orphaned
    with store.session() as s:
        run = s.scalars(select(ProposalRun)).one()
        assert run.status == "interrupted" and run.n_added == 40
        assert s.scalar(select(func.count()).select_from(TripletMargin)) == 80
    s2 = propose(store, "same-technique", methods=EB, budget=100, cache_dir=emb_cache)
    assert s2.added == 60 and s2.existing == 40
    ts = triplets(store)
    assert len({(t.anchor_id, t.first_id, t.second_id) for t in ts}) == 100


# --------------------------------------------------------------------------- CLI


@pytest.mark.backends("sqlite")  # MiniLM/CHAMP behaviour; the backends are tested where they matter
def test_cli_propose_and_methods(cli, champ_jsonl, tmp_path, monkeypatch, emb_cache):
    monkeypatch.setenv("CONDSIM_CACHE", emb_cache)
    for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(v, raising=False)
    cli("ingest", champ_jsonl, "--corpus", "champ")
    c = DEMO_CRITERIA[0]
    cli("criteria", "add", c["name"], "-d", c["description"], "--instruction", c["instruction"])
    res = cli("propose", "same-technique", "--budget", "30", "--json")
    d = json.loads(res.stdout)
    assert d["added"] == 30 and d["total"] == 30 and d["methods"] == ["embedding", "bm25"]
    assert "skipped method rewrite-bm25" in res.stderr and "no LLM endpoint" in res.stderr
    res = cli("propose", "same-technique", "--budget", "30", "--methods", "embedding,bm25")
    assert "nothing to add" in res.stdout
    res = cli("propose", "same-technique", "--budget", "45", "--methods", "embedding,bm25", "--per-anchor", "3")
    assert "added 15 triplets" in res.stdout
    st = json.loads(cli("status", "--json").stdout)
    assert "45" in json.dumps(st)
    res = cli("propose", "same-technique", "--budget", "55", "--methods", "embedding,bm25", "--dry-run", "--json")
    d = json.loads(res.stdout)
    assert d["added"] == 0 and len(d["proposals"]) == 10 and "nothing written" in d["message"]
    assert all(set(p["margins"]) == {"embedding", "bm25"} for p in d["proposals"])
    assert "would add 10" in cli("propose", "same-technique", "--budget", "55", "--methods", "bm25", "--dry-run").stdout
    res = cli("propose", "same-technique", "--budget", "50", "--methods", "embedding,nope", expect_ok=False)
    assert res.exit_code == 1 and "unknown method" in res.output and "Traceback" not in res.output
    res = cli("propose", "no-such", "--budget", "5", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named" in res.output
    m = json.loads(cli("methods", "--json").stdout)
    names = [x["name"] for x in m["methods"]]
    # (later stages append theirs)
    assert names[:6] == ["embedding", "bm25", "cross-encoder", "rewrite-bm25", "in-one-word", "lm-judge"]
    assert {x["name"] for x in m["methods"] if x["default"]} == {"embedding", "bm25", "rewrite-bm25", "in-one-word"}
    assert m["cache_dir"] == emb_cache and any(c["rows"] >= 270 for c in m["caches"])
    assert any(c["documents"] == 270 for c in m["bm25_caches"])
    assert "Examples:" in cli("propose", "--help").stdout
    assert "Example:" in cli("methods", "--help").stdout
    assert "embedding" in cli("methods").stdout


def test_a_concurrent_proposer_never_doubles_a_triplet(store, champ_jsonl, emb_cache, monkeypatch):
    """Another process wrote some of the same triplets after this run read the existing ones: the batch
    falls back to the shared add_triplet helper, skips them, and the canonical unique constraint holds."""
    from condsim_annot.store_api import add_triplet

    seed(store, champ_jsonl)
    kw = dict(methods=EB, budget=30, cache_dir=emb_cache, seed=5)
    preview = propose(store, "same-technique", dry_run=True, **kw).proposals
    with store.transaction() as s:
        from condsim_annot.criteria import get_criterion

        cid = get_criterion(s, "same-technique").id
        for p in preview[:5]:
            add_triplet(s, cid, p["anchor_id"], p["x_id"], p["y_id"], method="other-process")
    real_existing = sel.context.existing_triplets
    # as if read before the other wrote
    monkeypatch.setattr(sel.context, "existing_triplets", lambda st, c: (set(), Counter()))
    s = propose(store, "same-technique", **kw)
    monkeypatch.setattr(sel.context, "existing_triplets", real_existing)
    assert s.added == 25
    ts = triplets(store)
    assert len(ts) == 30 and len({(t.anchor_id, t.first_id, t.second_id) for t in ts}) == 30
    ms = margins(store)
    assert all((t.id in ms) == (t.method != "other-process") for t in ts)


# --------------------------------------------------------------------------- once calibrated: the model's uncertainty


def _silver_votes(store, conc, *, run_id, seed=0, n_annotators=3):
    """Simulated annotators answer each triplet of a proposal run by a noisy silver similarity
    (Jaccard overlap of the problems' concepts plus a fixed per-pair offset)."""
    from condsim_annot.store_api import get_or_create_annotator, record_vote

    rng = np.random.default_rng(seed)
    offset: dict = {}

    def sim(a, x):
        k = (min(a, x), max(a, x))
        if k not in offset:
            offset[k] = float(rng.normal(0, 0.4))
        ca, cx = conc[a], conc[x]
        return (len(ca & cx) / len(ca | cx) if ca | cx else 0.0) * 4 + offset[k]

    with store.transaction() as s:
        anns = [get_or_create_annotator(s, f"sim-{i}").id for i in range(n_annotators)]
        rows = s.execute(select(Triplet.id, Triplet.anchor_id, Triplet.first_id, Triplet.second_id)
                         .where(Triplet.proposal_run == run_id)).all()
        for tid, a, f, sec in rows:
            p_first = 1 / (1 + np.exp(-(sim(a, f) - sim(a, sec))))
            for ann in anns:
                record_vote(s, tid, ann, "first" if rng.random() < p_first else "second", source="import")
    return len(rows)


@pytest.mark.backends("sqlite")  # MiniLM/CHAMP behaviour; the backends are tested where they matter
def test_once_calibrated_new_triplets_are_what_a_vote_would_teach(store, cli, champ_jsonl, emb_cache):
    """propose -> votes -> calibrate -> propose more: the new triplets among scored pairs are ranked by the
    expected information of one more vote under the stored fit (pair means/sds, annotators' betas, tie
    parameter), so what they teach is well above the average over every comparison it could ask (where a
    random selection would sit)."""
    from scipy.special import ndtr

    from condsim_annot.calibrate.pipeline import calibrate
    from condsim_annot.calibrate.tables import AnnotatorStat, PairScore
    from condsim_annot.models import CalibrationRun
    from condsim_annot.propose.information import expected_information

    seed(store, champ_jsonl)
    conc = concepts_by_id(store)
    kw = dict(methods=EB, cache_dir=emb_cache, seed=2)
    s1 = propose(store, "same-technique", budget=150, per_anchor=5, **kw)
    assert s1.added == 150 and s1.calibration is None and "uncertainty" not in s1.by_strategy
    assert _silver_votes(store, conc, run_id=s1.run_id) == 150
    cal = calibrate(store, "same-technique", alpha_bootstrap=0)
    before = {(t.anchor_id, t.first_id, t.second_id) for t in triplets(store)}

    s2 = propose(store, "same-technique", budget=300, per_anchor=10, rank="information", **kw)
    assert s2.added == 150 and s2.calibration["run_id"] == cal["run_id"] and s2.calibration["anchors"] > 0
    assert s2.by_strategy.get("uncertainty", 0) >= 15, s2.by_strategy
    assert set(s2.by_strategy) <= set(sel.STRATEGIES)
    with store.session() as s:
        ps = {(min(p.anchor_id, p.candidate_id), max(p.anchor_id, p.candidate_id)): (p.score, p.stderr)
              for p in s.scalars(select(PairScore).where(PairScore.calibration_run_id == cal["run_id"])).all()}
        stats = s.execute(select(AnnotatorStat.beta, AnnotatorStat.n_fitted)
                          .where(AnnotatorStat.calibration_run_id == cal["run_id"])).all()
        nu = float(s.get(CalibrationRun, cal["run_id"]).summary.get("tie_parameter") or 0.0)
        assert s.get(ProposalRun, s2.run_id).params["calibration_run"] == cal["run_id"]
    beta = np.asarray([b for b, n in stats if n], dtype=float)
    w = np.asarray([n for b, n in stats if n], dtype=float)

    def pair(a, x):
        return ps.get((min(a, x), max(a, x)))

    def info(a, f, sec):
        pf, psec = pair(a, f), pair(a, sec)
        return None if pf is None or psec is None else float(
            expected_information(pf[0], pf[1], psec[0], psec[1], beta, nu, w)[0])

    new = [t for t in triplets(store) if t.proposal_run == s2.run_id]
    for t in (t for t in new if t.strategy == "uncertainty"):  # what the proposer recorded, in canonical terms
        pf, psec = pair(t.anchor_id, t.first_id), pair(t.anchor_id, t.second_id)
        p = float(ndtr((pf[0] - psec[0]) / np.sqrt(max(pf[1] ** 2 + psec[1] ** 2, 1e-12))))
        assert t.meta["model_p"] == pytest.approx(p, abs=2e-3)
        assert t.meta["information"] == pytest.approx(info(t.anchor_id, t.first_id, t.second_id), abs=1e-4)
    chosen = [v for t in new if t.strategy == "uncertainty" and (v := info(t.anchor_id, t.first_id, t.second_id))
              is not None]
    # every comparison the model could have asked: pairs of each anchor's scored partners, not asked before
    partners: dict = defaultdict(set)
    for u, v in ps:
        partners[u].add(v)
        partners[v].add(u)
    pool = [v for a, xs in partners.items() for x in xs for y in xs
            if x < y and (a, x, y) not in before and (v := info(a, x, y)) is not None]
    # where each chosen comparison ranks among all askable ones (a random choice would average .5)
    rank = float(np.mean([np.mean(np.asarray(pool) < v) for v in chosen]))
    print(f"expected information of a vote (bits): chosen {np.mean(chosen):.4f} (n={len(chosen)}), "
          f"all askable {np.mean(pool):.4f} (n={len(pool)}); chosen rank among askable {rank:.2f}")
    assert len(chosen) >= 15 and len(pool) >= 3 * len(chosen)
    assert rank >= 0.7 and np.mean(chosen) > np.mean(pool), (rank, np.mean(chosen), np.mean(pool))
    # the CLI says which calibration run ranked them
    res = cli("propose", "same-technique", "--budget", "340", "--per-anchor", "10", "--methods", "embedding,bm25",
              "--cache-dir", emb_cache, "--seed", "2", "--rank", "information", "--dry-run")
    text = " ".join(res.stdout.split())
    assert f"calibration run {cal['run_id']}" in text and "ranked by the expected information of one more vote" in text
    assert "comparison graph:" in text and "components" in text
    # the default ranking: expected new gold per vote; it asks what the model leans on, not what it is unsure of
    res = cli("propose", "same-technique", "--budget", "340", "--per-anchor", "10", "--methods", "embedding,bm25",
              "--cache-dir", emb_cache, "--seed", "2", "--dry-run", "--json")
    props = json.loads(res.stdout)["proposals"]
    gold = [p for p in props if p["strategy"] == "expected-gold"]
    assert len(gold) >= 15 and all(0 <= p["expected_gold"] <= 1 for p in gold)
    lean_gold = np.mean([abs(p["model_p"] - 0.5) for p in gold])
    lean_info = np.mean([abs(t.meta["model_p"] - 0.5) for t in new if t.strategy == "uncertainty"])
    assert lean_gold > lean_info, (lean_gold, lean_info)


@pytest.mark.backends("sqlite")
def test_propose_with_every_vector_cached_loads_no_model(db_url, champ_jsonl, champ_cache):
    """A corpus already embedded (documents, and anchors under the criterion's prompt) proposes without importing
    sentence-transformers: the model is loaded only when a vector is missing (seconds of start-up otherwise)."""
    import subprocess
    import sys

    from condsim_annot.db import open_store

    store = open_store(db_url)
    seed(store, champ_jsonl)
    store.close()
    code = (
        "import sys\n"
        "from condsim_annot.db import open_store\n"
        "from condsim_annot.propose import propose\n"
        f"s = propose(open_store({db_url!r}), 'same-technique', methods=['embedding', 'bm25'], budget=30, "
        f"cache_dir={champ_cache!r}, seed=1)\n"
        "assert s.added == 30, s.added\n"
        "e = s.method_info['embedding']\n"
        "print('encoded', e['documents_encoded'], e['anchors_encoded'])\n"
        "print('loaded', 'sentence_transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "encoded 0 0" in out and "loaded False" in out, out
