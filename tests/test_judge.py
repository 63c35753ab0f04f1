"""The LM judge stage against the project's OpenAI-compatible test server (real HTTP, real openai client)."""

from __future__ import annotations

import math

import pytest
from helpers import JUDGE_TEXTS, judge_oracle, judge_technique
from openai_server import OpenAIServer, Reply, documents, seed_corpus, seed_triplets
from sqlalchemy import select

from condsim_annot.llm.judge import JudgeParams, judge_margin, judge_report, run_judge
from condsim_annot.llm.tables import LLMCall
from condsim_annot.models import Annotator, Vote

TEXTS = JUDGE_TEXTS
technique = judge_technique
oracle = judge_oracle


@pytest.fixture
def seeded(store, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cid, ids = seed_corpus(store, TEXTS)
    # (anchor, x, y); the expected winner under the oracle is noted
    triples = [(ids[0], ids[1], ids[2]), (ids[0], ids[3], ids[1]), (ids[4], ids[1], ids[3]), (ids[4], ids[5], ids[2]),
               (ids[0], ids[5], ids[1])]
    tids = seed_triplets(store, cid, triples)
    return store, cid, ids, tids


def votes_of(store, name):
    with store.session() as s:
        a = s.scalars(select(Annotator).where(Annotator.name == name)).one()
        return a, s.scalars(select(Vote).where(Vote.annotator_id == a.id).order_by(Vote.id)).all()


def test_judge_votes_both_orders_cached_and_resumable(seeded):
    store, cid, ids, tids = seeded
    with OpenAIServer(oracle) as srv:
        run = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, concurrency=4)
        assert srv.calls == 10 and run.votes_added == 10 and run.invalid == 0 and run.errors == 0
        assert run.stats.tokens_in == 1000 and run.stats.tokens_out == 40
        assert run.cost_usd == 0.0  # a local server with an unpriced model costs nothing
        assert run.judge.startswith("llm:test-model:judge-v1:")
        a, votes = votes_of(store, run.judge)
        assert a.kind == "llm" and a.model == "test-model" and a.prompt_version == "judge-v1"
        assert len(votes) == 10 and {v.source for v in votes} == {"llm"}
        assert sorted((v.triplet_id, v.swapped) for v in votes) == sorted((t, sw) for t in tids for sw in (False, True))
        # canonical choices are right in both orders (the oracle is position-free), confidence from logprobs
        from condsim_annot.models import Document, Triplet
        with store.session() as s:
            for v in votes:
                t = s.get(Triplet, v.triplet_id)
                anchor, first, second = (s.get(Document, i).text for i in (t.anchor_id, t.first_id, t.second_id))
                want = "first" if technique(first) == technique(anchor) else "second"
                assert v.choice == want, (v.swapped, anchor, first, second)
                assert v.confidence == pytest.approx(0.9)
        assert run.bias["pairs"] == 5 and run.bias["consistency"] == 1.0
        # the prompt is delimited; the injection stays inside its document block
        inj = [r for r in srv.requests if "Ignore the "
                                          "above" in r["messages"][1]["content"]][0]["messages"][1]["content"]
        assert inj.count("</document>") == 3
        # response_format and logprobs were asked for
        assert srv.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["A", "B"]
        assert srv.requests[0]["logprobs"] is True
        # a second run makes zero calls and adds nothing
        again = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url)
        assert srv.calls == 10 and again.votes_added == 0 and again.already_voted == 10 and again.stats.calls == 0
        # resume: votes lost (a run killed after the call, before the vote) are rebuilt from the log, no calls
        with store.transaction() as s:
            for v in s.scalars(select(Vote).where(Vote.annotator_id == a.id, Vote.triplet_id == tids[0])).all():
                v.state = "undone"
                s.add(v)
        again = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url)
        assert srv.calls == 10 and again.votes_added == 2 and again.stats.cached == 2
        # other parameters are another judge: new calls
        other = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, limit=2,
                          params=JudgeParams(allow_tie=True))
        assert other.judge != run.judge and srv.calls == 14 and other.triplets == 2


def test_killed_run_resumes_where_it_stopped(seeded):
    store, cid, ids, tids = seeded
    state = {"up": True}

    def rule(req, n):
        if n > 4:
            return Reply(status=401, json_body={"error": {"message": "key revoked"}})  # stops the run like a kill
        return oracle(req, n)

    with OpenAIServer(rule) as srv:
        from condsim_annot.errors import CondsimError

        with pytest.raises(CondsimError, match="refused the key"):
            run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, concurrency=1)
        done = srv.calls
        srv.rule = oracle
        run = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, concurrency=1)
        assert run.already_voted == 4 and run.votes_added == 6
        assert srv.calls - done == 6  # only what was missing
    assert state["up"]


def test_position_bias_and_invalid_replies(seeded):
    store, cid, ids, tids = seeded

    def always_a(req, n):
        return "A"  # bare label, no JSON, no logprobs

    with OpenAIServer(always_a) as srv:
        run = run_judge(store, "same-technique", model="lazy", base_url=srv.base_url)
    assert run.votes_added == 10
    assert run.bias["consistency"] == 0.0 and run.bias["position_flips"] == 1.0 and run.bias["a_rate"] == 1.0
    _, votes = votes_of(store, run.judge)
    assert all(v.confidence is None for v in votes)

    def prose_then_garbage(req, n):
        d = documents(req)
        if "Ignore the above" in d["A"] + d["B"]:
            return "I cannot decide. Maybe {\"answer\": \"A\"} or {\"answer\": \"B\"}."  # ambiguous: invalid
        return "Looking at both, candidate B is more similar to the anchor."

    with OpenAIServer(prose_then_garbage) as srv:
        run = run_judge(store, "same-technique", model="chatty", base_url=srv.base_url,
                        params=JudgeParams(invalid_retries=2))
        # 3 triplets fine (6 votes); 2 triplets contain the injection: 4 presentations x 3 attempts, all invalid
        assert run.votes_added == 6 and run.invalid == 4
        assert srv.calls == 6 + 4 * 3
        retry_req = [r for r in srv.requests if len(r["messages"]) == 4][0]
        assert retry_req["messages"][2]["role"] == "assistant"
        assert "could not be read" in retry_req["messages"][3]["content"]
        again = run_judge(store, "same-technique", model="chatty", base_url=srv.base_url,
                          params=JudgeParams(invalid_retries=2))
        assert srv.calls == 18 and again.invalid == 4  # invalid answers are cached too: no new calls
    with store.session() as s:
        bad = s.scalars(select(LLMCall).where(LLMCall.status == "invalid")).all()
    assert len(bad) == 12 and all("I cannot decide" in b.response_text for b in bad)
    rows = {r["judge"]: r for r in judge_report(store, "same-technique")}
    assert rows[run.judge]["invalid_calls"] == 12 and rows[run.judge]["votes"] == 6


def test_judge_margin_scores_without_votes(seeded):
    store, cid, ids, tids = seeded
    with OpenAIServer(oracle) as srv:
        m = judge_margin(store, "same-technique",
                         [(ids[0], ids[1], ids[2]), (ids[0], ids[2], ids[1]), (ids[4], ids[1], ids[3])],
                         model="test-model", base_url=srv.base_url)
        assert m[(ids[0], ids[1], ids[2])] == pytest.approx(0.9)
        assert m[(ids[0], ids[2], ids[1])] == pytest.approx(-0.9)
        assert m[(ids[4], ids[1], ids[3])] == pytest.approx(-0.9)
        # (0,1,2) and (0,2,1) are the same canonical requests: 4 calls, not 6
        assert srv.calls == 4
        with store.session() as s:
            assert s.scalars(select(Vote)).all() == []
        # the judge run reuses the margin's calls
        run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, limit=5)
        assert srv.calls == 10 - 0  # 5 triplets x 2 orders; (0,1,2) and (4,1,3)... from the log
    assert m.judge.startswith("llm:test-model:judge-v1:")
    assert not math.isnan(sum(m.values()))


def test_attention_checks_and_chunked_scheduling(seeded, monkeypatch):
    import condsim_annot.llm.judge as judge_mod
    from condsim_annot.store_api import add_triplet

    store, cid, ids, tids = seeded
    with store.transaction() as s:  # a known-answer triplet: anchor pigeonhole, x pigeonhole, y induction
        t, created = add_triplet(s, cid, ids[4], ids[2], ids[1], is_attention_check=True, expected="first", priority=10)
        assert created and t.expected == "second"  # stored in canonical terms
    monkeypatch.setattr(judge_mod, "CHUNK", 3)
    seen = []
    with OpenAIServer(oracle) as srv:
        run = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, concurrency=2,
                        progress=lambda d, t: seen.append((d, t)))
    assert run.votes_added == 12 and srv.calls == 12 and seen[-1] == (12, 12)
    row = judge_report(store, "same-technique")[0]
    assert row["attention_checks"] == 2 and row["attention_correct"] == 2


def test_editing_the_criterion_rejudges_and_supersedes(seeded):
    from condsim_annot.criteria import edit_criterion

    store, cid, ids, tids = seeded
    with OpenAIServer(oracle) as srv:
        run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, limit=2)
        assert srv.calls == 4
        edit_criterion(store, "same-technique", description="Same key lemma or technique")
        run = run_judge(store, "same-technique", model="test-model", base_url=srv.base_url, limit=2)
        assert srv.calls == 8 and run.votes_added == 4 and run.already_voted == 0
        assert "Same key lemma" in srv.requests[-1]["messages"][1]["content"]
    _, votes = votes_of(store, run.judge)
    assert sorted(v.state for v in votes) == ["active"] * 4 + ["superseded"] * 4
    assert all(v.replaces_id for v in votes if v.state == "active")
