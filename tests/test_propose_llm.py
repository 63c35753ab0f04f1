"""The LLM members (rewrite-bm25, in-one-word, lm-judge) against the project's OpenAI-compatible test
server, and the cross-encoder member with a tiny CrossEncoder built locally from the bundled MiniLM."""

from __future__ import annotations

import json
import re

import pytest
from helpers import propose_margins as margins
from helpers import propose_triplets as triplets
from helpers import seed_propose as seed
from openai_server import OpenAIServer, documents
from sqlalchemy import select

from condsim_annot.llm.templates import escape_document
from condsim_annot.propose.select import propose
from condsim_annot.propose.tables import TripletMargin

N_DOCS = 60


@pytest.fixture(scope="session")
def small_champ(champ_problems, tmp_path_factory):
    recs = champ_problems[:N_DOCS]
    p = tmp_path_factory.mktemp("champ-small") / "champ-small.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return str(p), recs


@pytest.fixture(scope="session")
def cache(champ_cache_session):
    """One embedding cache for these tests, CHAMP's documents already embedded (conftest)."""
    return champ_cache_session


def silver_rule(recs):
    """Answers from CHAMP's concepts: one word = the first concept, rewrite = all concepts, judge = more shared
    concepts."""
    concepts = {escape_document(r["text"]): set(r["concepts"]) for r in recs}

    def word(c: str) -> str:
        return re.sub(r"[^a-z0-9]", "", c.lower()) or "none"

    def rule(req, n):
        docs = documents(req)
        if "document" in docs:
            cs = sorted(concepts[docs["document"]])
            if req.get("max_tokens") == 24:
                return json.dumps({"text": word(cs[0]) if cs else "none"})
            return json.dumps({"text": "technique " + " ".join(word(c) for c in cs)})
        a, x, y = (concepts.get(docs.get(k, ""), set()) for k in ("anchor", "A", "B"))
        return json.dumps({"answer": "A" if len(a & x) >= len(a & y) else "B"})

    return rule


@pytest.mark.backends("sqlite")  # MiniLM/CHAMP behaviour; the backends are tested where they matter
def test_llm_methods_join_the_committee_and_are_cached(store, small_champ, cache, monkeypatch):
    for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CONDSIM_LLM_MODEL"):
        monkeypatch.delenv(v, raising=False)
    path, recs = small_champ
    seed(store, path)
    methods = ["embedding", "bm25", "rewrite-bm25", "in-one-word"]
    with OpenAIServer(silver_rule(recs)) as srv:
        s = propose(store, "same-technique", methods=methods, budget=30, llm_model="test-model", base_url=srv.base_url,
                    cache_dir=cache)
        assert s.skipped == {} and s.methods == methods and s.added == 30
        assert srv.calls == 2 * N_DOCS  # every document rewritten and condensed once
        assert s.method_info["in-one-word"]["distinct_words"] > 5
        ts = triplets(store)
        ms = margins(store)
        assert all(set(ms[t.id]) == set(methods) for t in ts)
        # in-one-word on silver words: same first concept -> cosine 1
        assert any(m.score_first == pytest.approx(1.0, abs=1e-5) for t in ts for m in [ms[t.id]["in-one-word"]])
        # raising the budget: the LLM answers come from the call log, no new calls
        s2 = propose(store, "same-technique", methods=methods, budget=45, llm_model="test-model", base_url=srv.base_url,
                     cache_dir=cache)
        assert s2.added == 15 and srv.calls == 2 * N_DOCS
        assert s2.method_info["rewrite-bm25"]["llm"]["calls"] == 0
        # the lm-judge member: pairs of each anchor's best few candidates, both orders
        before = srv.calls
        s3 = propose(store, "same-topic", methods=["embedding", "lm-judge"], budget=8, llm_model="test-model",
                     base_url=srv.base_url, cache_dir=cache)
        assert s3.added == 8 and s3.methods == ["embedding", "lm-judge"]
        info = s3.method_info["lm-judge"]["llm"]
        assert info["failed"] == 0 and srv.calls - before == 2 * info["triples"] > 0
    with store.session() as sess:
        judged = sess.scalars(select(TripletMargin).where(TripletMargin.method == "lm-judge")).all()
    assert len(judged) == 8 and all(-1 <= m.score_first <= 1 for m in judged)


def test_llm_endpoint_given_but_no_model_is_a_clear_skip(sqlite_store, small_champ, tmp_path, monkeypatch):
    monkeypatch.delenv("CONDSIM_LLM_MODEL", raising=False)
    path, _ = small_champ
    seed(sqlite_store, path)
    s = propose(sqlite_store, "same-technique", methods=["bm25", "in-one-word"], budget=5, base_url="http://127.0.0.1:9/v1",
                cache_dir=str(tmp_path / "c"))
    assert s.methods == ["bm25"] and "--llm-model" in s.skipped["in-one-word"]


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory):
    """A CrossEncoder built from the bundled MiniLM weights (fresh 1-logit head, fixed seed)."""
    import torch
    from sentence_transformers import CrossEncoder

    from condsim_annot.propose.embedding import default_model_path

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ce") / "tiny-cross-encoder"
    CrossEncoder(default_model_path(), num_labels=1, max_length=256).save(str(path))
    return str(path)


def test_cross_encoder_rescores_the_pools(sqlite_store, small_champ, tiny_cross_encoder, cache):
    path, _ = small_champ
    seed(sqlite_store, path)
    s = propose(sqlite_store, "same-technique", methods=["embedding", "bm25"], cross_encoder=tiny_cross_encoder,
                budget=12, top_k=4, n_mid=2, n_random=2, cache_dir=cache)
    assert s.methods == ["embedding", "bm25", "cross-encoder"] and s.added == 12
    ms = margins(sqlite_store)
    ts = triplets(sqlite_store)
    assert all(set(ms[t.id]) == {"embedding", "bm25", "cross-encoder"} for t in ts)
    assert all(t.method == "ensemble:embedding+bm25+cross-encoder" for t in ts)
    # without a model the member is skipped, with the reason
    s2 = propose(sqlite_store, "same-topic", methods=["bm25", "cross-encoder"], budget=5, cache_dir=cache)
    assert s2.methods == ["bm25"] and "--cross-encoder" in s2.skipped["cross-encoder"]
