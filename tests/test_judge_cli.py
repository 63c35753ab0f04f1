"""`condsim-annot judge` and `condsim-annot llm ...` through the real CLI, against the test server."""

from __future__ import annotations

import json

import pytest
from helpers import JUDGE_TEXTS as TEXTS
from helpers import judge_oracle as oracle
from openai_server import OpenAIServer, seed_corpus, seed_triplets


def flat(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def _seed(store):
    cid, ids = seed_corpus(store, TEXTS)
    seed_triplets(store, cid, [(ids[0], ids[1], ids[2]), (ids[0], ids[3], ids[1]), (ids[4], ids[1], ids[3]),
                               (ids[4], ids[5], ids[2]), (ids[0], ids[5], ids[1])])
    return ids


def test_judge_cli_dry_run_run_rerun_and_reports(cli, store, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _seed(store)
    # dry run: no key, no server, no calls; a cost estimate from the price table
    res = cli("judge", "same-technique", "--model", "gpt-4.1-mini", "--dry-run", "--limit", "4")
    assert "4 triplets, 8 presentations" in flat(res) and "8 calls to make" in flat(res)
    assert "estimated cost $0.0011" in flat(res) and "per 1M tokens" in flat(res)
    res = cli("judge", "same-technique", "--model", "mystery", "--dry-run")
    assert "no price for 'mystery'" in flat(res)
    # no endpoint: one clear error line
    res = cli("judge", "same-technique", "--model", "gpt-4.1-mini", expect_ok=False)
    assert res.exit_code == 1 and "error: no LLM endpoint configured" in flat(res)
    res = cli("judge", "nope", "--model", "m", "--dry-run", expect_ok=False)
    assert res.exit_code == 1 and "no criterion named 'nope'" in flat(res)

    secret = "sk-cli-SECRET-987654321"
    monkeypatch.setenv("JUDGE_KEY", secret)
    with OpenAIServer(oracle) as srv:
        res = cli("judge", "same-technique", "-m", "test-model", "--base-url", srv.base_url, "--api-key-env",
                  "JUDGE_KEY",
                  "--concurrency", "3")
        assert srv.calls == 10 and srv.headers[0]["authorization"] == f"Bearer {secret}"
        assert "votes added 10" in flat(res) and "calls 10 new" in flat(res)
        assert "same answer in 100.0%" in flat(res) and "A chosen 50.0%" in flat(res)
        assert secret not in flat(res)
        res = cli("judge", "same-technique", "-m", "test-model", "--base-url", srv.base_url, "--json")
        d = json.loads(res.output)
        assert srv.calls == 10 and d["votes_added"] == 0 and d["already_voted"] == 10 and d["stats"]["calls"] == 0
    res = cli("llm", "judges", "same-technique", "--json")
    (row,) = json.loads(res.output)
    assert row["votes"] == 10 and row["pairs"] == 5 and row["consistency"] == 1.0 and row["tokens_in"] == 1000
    res = cli("llm", "judges", "same-technique")
    assert "llm:test-model:judge-v1" in flat(res)
    res = cli("llm", "log", "--limit", "3", "--json")
    calls = json.loads(res.output)
    assert len(calls) == 3 and all(c["status"] == "ok" for c in calls)
    res = cli("llm", "log", "--show", calls[0]["id"])
    assert "<document role=\"anchor\">" in flat(res) and '{"answer"' in flat(res)
    res = cli("status", "--json")
    assert json.loads(res.output)["criteria"]["same-technique"]["votes"]["llm"] == 10
    res = cli("llm", "log", "--show", "999999", expect_ok=False)
    assert "no LLM call with id 999999" in flat(res)
    # nothing in the store holds the key
    with store.session() as s:
        from sqlalchemy import text

        dump = json.dumps([list(map(str, r)) for r in s.execute(text("SELECT * FROM llmcall")).all()])
        dump += json.dumps([list(map(str, r)) for r in s.execute(text("SELECT * FROM annotator")).all()])
    assert secret not in dump


def test_llm_transform_cli(cli, store, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ids = _seed(store)
    with OpenAIServer(lambda r, n: '{"text": "induction"}') as srv:
        res = cli("llm", "transform", "same-technique", "-m", "m", "--base-url", srv.base_url, "--ids",
                  f"{ids[0]},{ids[1]}", "--json")
        assert json.loads(res.output) == {str(ids[0]): "induction", str(ids[1]): "induction"}
        res = cli("llm", "transform", "same-technique", "-m", "m", "--base-url", srv.base_url, "--task", "rewrite",
                  "--limit", "3")
        assert res.output.count("induction") == 3 and srv.calls == 5


def test_judge_cli_without_triplets_says_what_to_do(cli, store):
    seed_corpus(store, ["a", "b", "c"])
    res = cli("judge", "same-technique", "-m", "m", "--dry-run")
    assert "no triplets for criterion 'same-technique' yet" in flat(res)
    res = cli("llm", "judges", "same-technique")
    assert "no LM judge has voted" in flat(res)
    res = cli("judge", "same-technique", "-m", "m", "--limit", "0", "--dry-run", expect_ok=False)
    assert res.exit_code == 2 and "--limit" in res.output


@pytest.mark.backends("sqlite")
def test_llm_log_shows_rich_markup_in_replies_literally(cli, store, monkeypatch):
    """Defect 9: `[` `]` in a reply or an error crashed `llm log` (Rich markup)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _seed(store)
    nasty = "[/INST] [bold]B[/bold] [/] [link=x]"
    with OpenAIServer(lambda r, n: nasty) as srv:
        cli("judge", "same-technique", "-m", "[m]", "--base-url", srv.base_url, "--limit", "1", "--invalid-retries",
            "0",
            expect_ok=False)
    res = cli("llm", "log")
    assert "[/INST] [bold]B[/bold]" in flat(res) and "[m]" in flat(res)
    call_id = json.loads(cli("llm", "log", "--json").output)[0]["id"]
    res = cli("llm", "log", "--show", call_id)
    assert nasty in res.output and "[m]" in res.output
    assert "error: unparseable reply: no final answer found" in flat(res)
