"""The judge when the server misbehaves: exit codes, capped replies, echoed keys, --retry-invalid, Retry-After."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from helpers import JUDGE_TEXTS
from openai_server import OpenAIServer, Reply, seed_corpus, seed_triplets
from sqlalchemy import select

from condsim_annot.llm import client as llm_client
from condsim_annot.llm.judge import JudgeParams, run_judge
from condsim_annot.llm.tables import LLMCall
from condsim_annot.models import Vote

pytestmark = pytest.mark.backends("sqlite")  # client behaviour; the store is incidental


def flat(res) -> str:
    return " ".join(res.output.split())


def seed(store, n: int = 2) -> None:
    cid, ids = seed_corpus(store, JUDGE_TEXTS)
    seed_triplets(store, cid, [(ids[0], ids[1], ids[2]), (ids[4], ids[1], ids[3])][:n])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["500", "429", "unreachable", "timeout-0"])
def test_judge_exits_non_zero_when_every_presentation_fails(cli, store, monkeypatch, case):
    """Defect 6: these runs used to exit 0 after adding no vote at all."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seed(store)
    status = {"500": 500, "429": 429}.get(case, 200)
    with OpenAIServer(lambda r, n: Reply(status=status)) as srv:
        url = f"http://127.0.0.1:{free_port()}/v1" if case == "unreachable" else srv.base_url
        extra = ["--timeout", "0"] if case == "timeout-0" else []
        res = cli("judge", "same-technique", "-m", "m", "--base-url", url, "--max-retries", "0", *extra,
                  expect_ok=False)
    assert res.exit_code == 1, res.output
    if case == "timeout-0":
        assert "--timeout must be a positive number of seconds" in flat(res)
    else:
        assert "no votes: all 4 presentations failed (4 server errors, 0 unreadable)" in flat(res)
        assert {"500": "InternalServerError", "429": "RateLimitError",
                "unreachable": "APIConnectionError"}[case] in flat(res)


def test_oversized_replies_are_stored_truncated_and_never_vote(sqlite_store, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seed(sqlite_store, 1)
    huge = "x" * 3 * llm_client.MAX_REPLY_CHARS + '\n{"answer": "A"}'
    with OpenAIServer(lambda r, n: huge) as srv:
        run = run_judge(sqlite_store, "same-technique", model="m", base_url=srv.base_url,
                        params=JudgeParams(invalid_retries=0))
        assert run.votes_added == 0 and run.invalid == 2
        again = run_judge(sqlite_store, "same-technique", model="m", base_url=srv.base_url,
                          params=JudgeParams(invalid_retries=0))
        assert again.votes_added == 0 and again.stats.cached == 2  # a cached truncated reply stays unreadable
    with sqlite_store.session() as s:
        calls = s.scalars(select(LLMCall)).all()
    for c in calls:
        assert c.status == "invalid" and len(c.response_text) == llm_client.MAX_REPLY_CHARS
        assert c.meta["truncated_from"] == len(huge) and "over the cap" in c.error
        assert len(json.dumps(c.response)) < 1.1 * llm_client.MAX_REPLY_CHARS


def test_key_echoed_in_a_200_reply_is_never_stored(sqlite_store, tmp_path, monkeypatch):
    """Defect 6: a server echoing the key in its reply got it stored in llmcall and vote.rationale."""
    secret = "sk-echo-SECRET-24680"
    monkeypatch.setenv("ECHO_KEY", secret)

    def echo(req, n):
        return json.dumps({"rationale": f"you sent {secret}, thanks", "answer": "A"})

    seed(sqlite_store, 1)
    with OpenAIServer(echo) as srv:
        run = run_judge(sqlite_store, "same-technique", model="m", base_url=srv.base_url, api_key_env="ECHO_KEY",
                        params=JudgeParams(rationale=True))
        assert srv.headers[0]["authorization"] == f"Bearer {secret}"
    assert run.votes_added == 2
    with sqlite_store.session() as s:
        votes = s.scalars(select(Vote)).all()
        assert [v.rationale for v in votes] == ["you sent ***, thanks"] * 2
    sqlite_store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("condsim.db*"))
    assert b"you sent ***" in raw and secret.encode() not in raw


def test_retry_invalid_asks_again_after_the_server_is_fixed(sqlite_store, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seed(sqlite_store, 2)
    reply = {"text": "I am not sure."}
    with OpenAIServer(lambda r, n: reply["text"]) as srv:
        ask = dict(model="m", base_url=srv.base_url, params=JudgeParams(invalid_retries=0))
        first = run_judge(sqlite_store, "same-technique", **ask)
        assert first.invalid == 4 and first.votes_added == 0
        reply["text"] = '{"answer": "B"}'  # the server is fixed
        cached = run_judge(sqlite_store, "same-technique", **ask)
        assert cached.invalid == 4 and srv.calls == 4  # unreadable replies are served from the log...
        fixed = run_judge(sqlite_store, "same-technique", retry_invalid=True, **ask)
        assert fixed.votes_added == 4 and fixed.invalid == 0 and srv.calls == 8  # ...until asked again
        assert run_judge(sqlite_store, "same-technique", retry_invalid=True, **ask).requests == 0


def test_long_retry_after_stops_at_once_and_says_so(sqlite_store, monkeypatch):
    """Defect 6: Retry-After: 100000 used to stall silently for 10 minutes."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seed(sqlite_store, 2)
    slept: list[float] = []
    real_sleep = llm_client.asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        slept.append(delay)  # the waits the client asks for, not wall time (which a loaded machine inflates)
        await real_sleep(0)

    monkeypatch.setattr(llm_client.asyncio, "sleep", recorded_sleep)
    with OpenAIServer(lambda r, n: Reply(status=429, headers={"Retry-After": "100000"})) as srv:
        run = run_judge(sqlite_store, "same-technique", model="m", base_url=srv.base_url, concurrency=1)
        assert sum(slept) < 1, slept  # no stall: it gives up instead of waiting
        assert srv.calls == 1  # the others are not sent at all
    assert run.errors == 4 and run.votes_added == 0
    assert "asked to wait 100000 s" in run.last_error and "(Retry-After); run the command again later" in run.last_error


def test_long_waits_are_announced_and_bounded(sqlite_store, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(llm_client, "LONG_WAIT", 0.3)
    monkeypatch.setattr(llm_client, "MAX_TOTAL_WAIT", 2.0)
    seed(sqlite_store, 1)
    with OpenAIServer(lambda r, n: Reply(status=429, headers={"Retry-After": "1"})) as srv, \
            caplog.at_level(logging.WARNING, "condsim_annot.llm"):
        run = run_judge(sqlite_store, "same-technique", model="m", base_url=srv.base_url, concurrency=2,
                        max_retries=10, params=JudgeParams(invalid_retries=0))
    assert run.errors == 2 and "one request waits at most 2 s" in run.last_error
    assert srv.calls <= 6  # bounded by the total wait, not by the 10 retries
    assert any("asked to wait 1 s (Retry-After)" in r.getMessage() for r in caplog.records)
