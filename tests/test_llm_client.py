"""LLMClient: retries, Retry-After, timeouts, malformed replies, feature fallback, concurrency, key hygiene.

Real HTTP: the official openai AsyncOpenAI talks to tests/openai_server.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from openai_server import OpenAIServer, Reply
from sqlalchemy import select

from condsim_annot.errors import CondsimError
from condsim_annot.llm.client import Endpoint, LLMClient, resolve_endpoint
from condsim_annot.llm.tables import LLMCall


def parse_any(text):
    return (text is not None and text.strip() != "", {"text": text})


def req(i=0, **kw):
    return {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}], "temperature": 0,
            "max_tokens": 5, **kw}


def ask(store, base_url, requests, **ep):
    async def go():
        async with LLMClient(store, Endpoint(model="m", base_url=base_url, **{"backoff_base": 0.01, **ep})) as c:
            res = await asyncio.gather(*(c.complete(r, task="test", parse=parse_any) for r in requests))
            return res, c
    return asyncio.run(go())


def rows(store):
    with store.session() as s:
        return s.scalars(select(LLMCall).order_by(LLMCall.id)).all()


def test_429_honours_retry_after_and_5xx_backs_off(store):
    def rule(r, n):
        if n == 1:
            return Reply(status=429, headers={"Retry-After": "1"})
        if n in (2, 3):
            return Reply(status=500 + n)
        return "fine"

    with OpenAIServer(rule) as srv:
        (res,), c = ask(store, srv.base_url, [req()])
        assert res.ok and res.text == "fine" and srv.calls == 4
        assert srv.times[1] - srv.times[0] >= 1.0  # waited as told
        assert c.stats.retries == 3 and c.stats.calls == 1
    (row,) = rows(store)
    assert row.status == "ok" and row.tries == 4 and row.tokens_in == 50


def test_errors_are_logged_not_cached_and_never_stop_the_batch(store):
    with OpenAIServer(lambda r, n: Reply(status=503) if "question 1" in json.dumps(r) else "ok") as srv:
        res, c = ask(store, srv.base_url, [req(0), req(1), req(2)], max_retries=2)
        assert [x.status for x in res] == ["ok", "error", "ok"]
        assert "gave up after 3 tries" in res[1].error and c.stats.errors == 1
        assert srv.calls == 2 + 3
        srv.rule = lambda r, n: "now ok"
        res, c = ask(store, srv.base_url, [req(0), req(1), req(2)])
        assert [x.status for x in res] == ["ok", "ok", "ok"] and [x.cached for x in res] == [True, False, True]
        assert res[1].text == "now ok" and c.stats.calls == 1
    assert [r.status for r in rows(store)] == ["ok", "error",
                                               "ok"][:0] or sorted(r.status for r in rows(store)) == ["ok"] * 3


def test_timeout_and_malformed_bodies_are_retried(store):
    def rule(r, n):
        if n == 1:
            return Reply(content="slow", delay=2.0)
        if n == 2:
            return Reply(body=b'{"id": "x", "choices": [ {"message": ')  # truncated JSON body
        if n == 3:
            return Reply(body=b"<html>proxy error</html>", headers={"Content-Type": "text/html"})
        return "fast"

    with OpenAIServer(rule) as srv:
        t = time.monotonic()
        (res,), c = ask(store, srv.base_url, [req()], timeout=0.5)
        assert res.ok and res.text == "fast", res
        assert time.monotonic() - t < 5
        assert srv.calls == 4 and c.stats.retries == 3


def test_structured_output_and_logprobs_fall_back_when_rejected(store):
    def rule(r, n):
        if "response_format" in r:
            return Reply(status=400, json_body={"error": {"message": "response_format json_schema is not supported"}})
        if "logprobs" in r:
            return Reply(status=400, json_body={"error": {"message": "Unrecognized request argument: logprobs"}})
        return '{"answer": "B"}'

    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with OpenAIServer(rule) as srv:
        res, c = ask(store, srv.base_url,
                     [req(i, response_format=rf, logprobs=True, top_logprobs=3) for i in range(3)], concurrency=1)
        assert all(x.ok for x in res)
        # json_schema -> json_object (+schema) -> no response_format; then logprobs
        assert c.stats.dropped_features == ["json_schema", "response_format", "logprobs"]
        assert srv.calls == 3 + 3  # three rejections, then plain requests
    logged = rows(store)
    assert all("response_format" not in r.request for r in logged)


def test_reasoning_model_parameters_are_adapted(store):
    def rule(r, n):  # what OpenAI says to o-series / gpt-5 models
        if "max_tokens" in r:
            return Reply(status=400,
                         json_body={"error": {"message": "Unsupported parameter: 'max_tokens' is not supported "
                                                          "with this model. Use 'max_completion_tokens' instead."}})
        if r.get("temperature") not in (None, 1):
            return Reply(status=400,
                         json_body={"error": {"message": "Unsupported value: 'temperature' does not support 0 "
                                                          "with this model. Only the default (1) value is supported."}})
        return "ok"

    with OpenAIServer(rule) as srv:
        res, c = ask(store, srv.base_url, [req(i) for i in range(3)], concurrency=1)
        assert all(x.ok for x in res) and srv.calls == 5
        assert srv.requests[-1]["max_completion_tokens"] == 5 and "temperature" not in srv.requests[-1]


def test_other_400s_are_errors_without_dropping_features(store):
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with OpenAIServer(lambda r,
                      n: Reply(status=400, json_body={"error": {"message": "context length exceeded"}})) as srv:
        (res,), c = ask(store, srv.base_url, [req(response_format=rf)])
        assert res.status == "error" and "400" in res.error and srv.calls == 1
        assert c.stats.dropped_features == [] and c.features["response_format"]


def test_semaphore_bounds_concurrency(sqlite_store):
    with OpenAIServer(lambda r, n: "x", latency=0.2) as srv:
        t = time.monotonic()
        res, _ = ask(sqlite_store, srv.base_url, [req(i) for i in range(12)], concurrency=4)
        dt = time.monotonic() - t
        assert all(x.ok for x in res)
        assert srv.max_in_flight == 4
        assert 0.55 < dt < 2.0  # 3 waves of 0.2 s, not 12


def test_api_key_is_sent_but_never_stored(store, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_KEY", secret)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def rule(r, n):
        if n == 1:  # a server that echoes the key in its error
            return Reply(status=500, json_body={"error": {"message": f"bad things with key {secret}"}})
        return "ok"

    with OpenAIServer(rule) as srv:
        ep = resolve_endpoint("m", srv.base_url, "MY_KEY", max_retries=0)
        assert secret not in repr(ep)

        async def go(ep, n):
            async with LLMClient(store, ep) as c:
                return [await c.complete(req(i), task="t", parse=parse_any) for i in range(n)]

        res = asyncio.run(go(ep, 2))
        assert srv.headers[0]["authorization"] == f"Bearer {secret}"
        assert res[0].status == "error" and secret not in res[0].error and "***" in res[0].error
        # credentials inside the base URL are not logged either
        ep = resolve_endpoint("m", srv.base_url.replace("http://", f"http://user:{secret}@"), "MY_KEY", max_retries=0)
        assert secret not in repr(ep)
        res = asyncio.run(go(ep, 3))
        assert res[2].ok
    with store.session() as s:
        dump = json.dumps([r.model_dump(mode="json") for r in s.scalars(select(LLMCall)).all()])
    assert secret not in dump and "user:" not in dump


def test_endpoint_configuration_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("CONDSIM_LLM_MODEL", raising=False)
    with pytest.raises(CondsimError, match="no model given"):
        resolve_endpoint(None, "http://127.0.0.1:1/v1")
    with pytest.raises(CondsimError, match=r"\$NOPE_KEY .*not set"):
        resolve_endpoint("m", None, "NOPE_KEY")
    with pytest.raises(CondsimError, match="OPENAI_API_KEY"):
        resolve_endpoint("m")
    assert resolve_endpoint("m", require_key=False).api_key is None
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("CONDSIM_LLM_MODEL", "gpt-4.1-mini")
    assert resolve_endpoint().model == "gpt-4.1-mini"


def test_wrong_key_and_wrong_model_stop_with_a_clear_message(sqlite_store):
    for status, match in ((401, "refused the key"), (404, "model name 'm'")):
        with OpenAIServer(lambda r, n, s=status: Reply(status=s)) as srv:
            with pytest.raises(CondsimError, match=match):
                ask(sqlite_store, srv.base_url, [req(i) for i in range(5)])
            assert srv.calls <= 8


def test_infinite_logprobs_are_stored_on_every_backend(store):
    lp = [{"token": "A", "logprob": -0.1,
           "top_logprobs": [{"token": "A", "logprob": -0.1}, {"token": "B", "logprob": float("-inf")}]}]
    with OpenAIServer(lambda r, n: Reply(content="A", logprobs=lp)) as srv:
        (res,), _ = ask(store, srv.base_url, [req()])
    assert res.ok
    (row,) = rows(store)
    assert row.response["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["logprob"] is None


def test_json_schema_steps_down_to_llama_cpp_python_json_object(store):
    """llama-cpp-python's server rejects response_format json_schema with HTTP 500 but takes json_object + schema."""
    def rule(r, n):
        rf = r.get("response_format") or {}
        if rf.get("type") == "json_schema":
            return Reply(status=500,
                         json_body={"error": {"message": "1 validation error: ('body', 'response_format', 'type') "
                                                          "Input should be 'text' or 'json_object'"}})
        assert rf == {"type": "json_object", "schema": {"type": "object"}}
        return '{"answer": "A"}'

    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with OpenAIServer(rule) as srv:
        res, c = ask(store, srv.base_url, [req(i, response_format=rf) for i in range(3)], concurrency=1)
        assert all(x.ok for x in res), [x.error for x in res]
        assert c.stats.dropped_features == ["json_schema"] and srv.calls == 4
    # a plain 500 without a named feature is retried, not treated as a rejection
    with OpenAIServer(lambda r, n: Reply(status=500) if n == 1 else "ok") as srv:
        (res,), c = ask(store, srv.base_url, [req(9, response_format=rf)])
        assert res.ok and c.stats.dropped_features == [] and c.stats.retries == 1


def test_one_tls_context_per_ca_setting_reaches_the_http_client(store, monkeypatch, tmp_path):
    """Every client of a process shares one TLS context (each new one loaded the CA bundle, ~0.1 s of CPU); a
    different SSL_CERT_FILE gets its own, so the user's CA setting still counts."""
    import certifi

    from condsim_annot.llm import endpoint

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = endpoint.default_tls()
    assert endpoint.default_tls() is ctx

    async def transport_ctx() -> object:
        async with LLMClient(store, Endpoint(model="m", base_url="http://127.0.0.1:9/v1")) as c:
            pool = c._client._client._transport._pool  # openai -> httpx.AsyncClient -> transport -> httpcore pool
            return pool._ssl_context

    assert asyncio.run(transport_ctx()) is ctx
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(open(certifi.where(), "rb").read())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert endpoint.default_tls() is not ctx
